"""Record a run's figures beside its checkpoints: ``metrics.csv`` and ``loss_curve.png``."""

from __future__ import annotations

import csv
from pathlib import Path

from .events import EpochEnd, Event, IterationEnd, TrainingFinished, ValidationDone
from .plot import LossHistory

CSV_NAME = "metrics.csv"
PNG_NAME = "loss_curve.png"
COLUMNS = ["epoch", "iteration", "mean_loss", "seconds", "validation"]


class MetricsRecorder:
    """Consumes events; appends one CSV row per epoch and redraws the PNG as epochs end.

    A resumed run appends to the existing file, so the curve covers the whole training.
    """

    def __init__(self, folder: str | Path, png_every_n_epoch: int = 1) -> None:
        self.folder = Path(folder).expanduser()
        self.csv_path = self.folder / CSV_NAME
        self.png_path = self.folder / PNG_NAME
        self.png_every = png_every_n_epoch
        self.history = LossHistory()  # iteration losses of this process (epochs come from the CSV)
        self._validation: dict[int, str] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, IterationEnd):
            self.history.add(event)
        elif isinstance(event, ValidationDone):
            self._validation[event.epoch] = " ".join(
                f"iou_{o}_{c}={v:.4f}" for (o, c), v in zip(event.pairs, event.iou, strict=True)
            )
            self._rewrite_validation(event.epoch)
        elif isinstance(event, EpochEnd):
            self._append(event)
            if event.epoch % self.png_every == 0:
                self.write_png()
        elif isinstance(event, TrainingFinished):
            self.write_png()

    def _append(self, event: EpochEnd) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(COLUMNS)
            writer.writerow(
                [
                    event.epoch,
                    event.iterations,
                    f"{event.mean_loss:.6g}",
                    f"{event.seconds:.3f}",
                    "",
                ]
            )

    def _rewrite_validation(self, epoch: int) -> None:
        """Validation runs after its epoch's row is written; fill that row's last column."""
        rows = read_metrics(self.csv_path)
        for row in rows:
            if int(row["epoch"]) == epoch:
                row["validation"] = self._validation[epoch]
        with self.csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write_png(self) -> Path | None:
        """Draw iteration loss and epoch means (all epochs in the CSV) to ``loss_curve.png``."""
        rows = read_metrics(self.csv_path)
        if not rows and not self.history.iteration_loss:
            return None
        from .plot import LossCurve

        history = LossHistory(
            self.history.iterations,
            self.history.iteration_loss,
            [int(r["iteration"]) for r in rows],
            [float(r["mean_loss"]) for r in rows],
        )
        curve = LossCurve()
        curve.update(history)
        curve.figure.savefig(self.png_path, dpi=100)
        return self.png_path


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
