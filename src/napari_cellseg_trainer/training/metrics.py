"""Record a run's figures beside its checkpoints: ``metrics.csv`` and ``loss_curve.png``.

One CSV row per epoch (with the epoch's validation and held-out scores when there are any),
written once the epoch's figures are all in. A resumed run continues the file; rows of epochs
after the resumed one (a resume from an older checkpoint) move to a file of their own, so the
curve stays one run and no row is lost. A file that cannot be written (a full disk, a foreign
``metrics.csv``) never stops the training: :class:`MetricsError` says so once, and recording
stops.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from ..errors import UserInputError
from ..files import write_atomically
from .events import (
    BufferDrawn,
    CheckpointSaved,
    EpochEnd,
    Event,
    HoldoutScore,
    IterationEnd,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .plot import LossHistory

CSV_NAME = "metrics.csv"
PNG_NAME = "loss_curve.png"
COLUMNS = ["epoch", "iteration", "mean_loss", "seconds", "validation", "holdout_iou"]
# Events after an epoch's figures: its row is complete when one of them arrives.
_FLUSHING = (IterationEnd, BufferDrawn, CheckpointSaved, TrainingFinished)


class MetricsError(UserInputError, OSError):
    """metrics.csv or loss_curve.png could not be written; training goes on without them."""


class MetricsRecorder:
    """Consumes events; appends one CSV row per epoch and redraws the PNG as epochs end.

    The folder is the run's (from TrainingStarted), or ``folder`` until that event arrives.
    """

    def __init__(self, folder: str | Path, png_every_n_epoch: int = 1) -> None:
        self.folder = Path(folder).expanduser()
        self.png_every = png_every_n_epoch
        self.history = LossHistory()  # iteration losses of this process (epochs come from the CSV)
        self._row: dict[str, str] | None = None  # the epoch whose row waits for its scores

    @property
    def csv_path(self) -> Path:
        return self.folder / CSV_NAME

    @property
    def png_path(self) -> Path:
        return self.folder / PNG_NAME

    def __call__(self, event: Event) -> None:
        """Take in one event; MetricsError if a file cannot be written."""
        try:
            self._take(event)
        except (OSError, csv.Error, ValueError, KeyError) as err:
            raise MetricsError(
                f"could not record the run's figures in {self.folder} ({err}); training goes on "
                "without metrics.csv and loss_curve.png"
            ) from err

    def _take(self, event: Event) -> None:
        if isinstance(event, TrainingStarted):
            self.folder = event.folder or self.folder
            self._continue_from(event.start_epoch)
        if isinstance(event, _FLUSHING) and self._row is not None:
            self._append(self._row)
            self._row = None
        if isinstance(event, IterationEnd):
            self.history.add(event)
        elif isinstance(event, EpochEnd):
            self._row = {
                "epoch": str(event.epoch),
                "iteration": str(event.iterations),
                "mean_loss": f"{event.mean_loss:.6g}",
                "seconds": f"{event.seconds:.3f}",
                "validation": "",
                "holdout_iou": "",
            }
            if event.epoch % self.png_every == 0:
                self.write_png()
        elif isinstance(event, ValidationDone) and self._row is not None:
            self._row["validation"] = " ".join(
                f"iou_{o}_{c}={v:.4f}" for (o, c), v in zip(event.pairs, event.iou, strict=True)
            )
        elif isinstance(event, HoldoutScore) and self._row is not None:
            self._row["holdout_iou"] = f"{event.iou:.4f}"
        elif isinstance(event, TrainingFinished):
            self.write_png()

    def _continue_from(self, start_epoch: int) -> None:
        """Keep the rows up to the resumed epoch; move later ones aside (nothing is lost)."""
        rows = read_metrics(self.csv_path)
        later = [r for r in rows if int(r.get("epoch") or 0) > start_epoch]
        if not later and (not rows or list(rows[0]) == COLUMNS):
            return
        if later:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            _write_rows(self.folder / f"metrics_superseded_{stamp}.csv", later)
        _write_rows(self.csv_path, [r for r in rows if r not in later])

    def _append(self, row: dict[str, str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def write_png(self) -> Path | None:
        """Draw iteration loss, epoch means and held-out IoU (the CSV's epochs) to the PNG."""
        rows = read_metrics(self.csv_path) + ([self._row] if self._row else [])
        if not rows and not self.history.iteration_loss:
            return None
        from .plot import LossCurve

        scored = [r for r in rows if r.get("holdout_iou")]
        history = LossHistory(
            self.history.iterations,
            self.history.iteration_loss,
            [int(r["iteration"]) for r in rows],
            [float(r["mean_loss"]) for r in rows],
            holdout_iterations=[int(r["iteration"]) for r in scored],
            holdout_iou=[float(r["holdout_iou"]) for r in scored],
        )
        curve = LossCurve()
        curve.update(history)
        buffer = io.BytesIO()
        curve.figure.savefig(buffer, format="png", dpi=100)
        return write_atomically(self.png_path, buffer.getvalue())


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv ([] when there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: r.get(k) or "" for k in COLUMNS} for r in rows)
    write_atomically(path, text.getvalue().encode())
