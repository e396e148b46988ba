"""``cellseg-trainer train`` and ``cellseg-trainer sample-data``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from .. import config
from ..data import SAMPLE_KINDS, write_sample_folder
from ..data.sample import sample_paths
from ..distributed import process_group
from ..training import (
    BufferDrawn,
    CheckpointSaved,
    EpochEnd,
    IterationEnd,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
    recorded_training,
)
from ..training.events import HoldoutScore, Notice


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument("--config", required=True, help="training config (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set loader.batch_size=4 (repeatable)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="train for at most this many minutes, then stop with a checkpoint (the config's "
        "minutes)",
    )
    p.set_defaults(run=run_train)
    s = sub.add_parser("sample-data", help="write the embedded sample training folder")
    s.add_argument("folder")
    s.add_argument("--kind", choices=SAMPLE_KINDS, default=SAMPLE_KINDS[0])
    s.add_argument("--n-images", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=run_sample_data)


def run_sample_data(args: argparse.Namespace) -> int:
    folder = Path(args.folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise config.ConfigError([config.Problem("", f"{folder} is a file, not a folder")])
    taken = [p.name for p in sample_paths(folder, args.n_images) if p.exists()]
    if taken:
        raise config.ConfigError(
            [
                config.Problem(
                    "", f"{folder} already holds {', '.join(taken[:3])}: choose an empty folder"
                )
            ]
        )
    paths = write_sample_folder(folder, kind=args.kind, n_images=args.n_images, seed=args.seed)
    size = sum(p.stat().st_size for p in paths) / 2**20
    print(f"wrote {len(paths)} files ({size:.1f} MB) of {args.kind!r} sample data to {args.folder}")
    return 0


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM, as a batch system sends before its time limit): finish the
    batch, save a checkpoint, exit with 128 + the signal's number (130, 143), so a script or a
    batch system reads "stopped", not "done". A second one: exit now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict = {}
        self.received: signal.Signals | None = None

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)
        self.stop.set()
        tqdm.write(
            "stopping after this batch and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )


def run_checks(cfg: config.TrainConfig) -> list[config.Problem]:
    """What must hold before a run starts: its folders, files, free space and starter."""
    from ..starters import config_problems
    from ..training.folders import run_folder_problems

    return config.check_paths(cfg) + run_folder_problems(cfg) + config_problems(cfg)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.minutes is not None:
        overrides.append(f"minutes={args.minutes!r}")  # checked with the rest of the config
    cfg = config.load_config(args.config, overrides, checks=run_checks)
    stop = threading.Event()
    with process_group(cfg.device) as world:
        # Under torchrun, rank 0 alone shows progress (and writes metrics and the loss curve).
        progress = ProgressBar() if world.main else None
        signals = _StopOnSignal(stop)
        try:
            with signals:
                for event in recorded_training(cfg, stop=stop):
                    if progress is not None:
                        progress(event)
                    if world.distributed and isinstance(event, TrainingFinished):
                        print(
                            f"rank {world.rank}/{world.size}: {event.reason} at epoch "
                            f"{event.epoch}, iteration {event.iteration}, "
                            f"weights {event.weights_digest}",
                            file=sys.stderr,
                        )
        finally:
            if progress is not None:
                progress.close()
    if signals.received is not None:
        print(f"stopped by {signals.received.name}; the checkpoint is saved", file=sys.stderr)
        return 128 + int(signals.received)
    return 0


class ProgressBar:
    """Shows training events as a tqdm bar (epochs, iterations, loss, ETA) and log lines.

    With a time budget the bar counts the budget's seconds, so its ETA is the budget's end.
    """

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.epochs = 0
        self.budget_s: float | None = None
        self.started = time.monotonic()
        self._show = {
            TrainingStarted: self._start,
            IterationEnd: self._iteration,
            EpochEnd: self._epoch,
            BufferDrawn: self._buffer,
            ValidationDone: self._validation,
            HoldoutScore: self._holdout,
            Notice: self._notice,
            CheckpointSaved: self._saved,
            TrainingFinished: self._finished,
        }

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, event: object) -> None:
        show = self._show.get(type(event))
        if show is not None and (self.bar is not None or isinstance(event, TrainingStarted)):
            show(event)

    def _write(self, line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    def _start(self, event: TrainingStarted) -> None:
        held = f", {event.n_validation_images} held out" if event.n_validation_images else ""
        slabs = f", a held-out slab in {event.n_holdout_slabs}" if event.n_holdout_slabs else ""
        self._write(
            f"training on {event.device}, {event.precision}: {event.n_train_images} image(s)"
            f"{held}{slabs}, {event.iterations_per_epoch} iterations/epoch, raw "
            f"{event.normalization}; writing to {event.folder}"
        )
        self.epochs = event.epochs
        self.started = time.monotonic()
        if event.minutes:
            self.budget_s = event.minutes * 60
            self.bar = tqdm(
                total=round(self.budget_s), unit="s", file=sys.stderr, dynamic_ncols=True
            )
        else:
            remaining = (event.epochs - event.start_epoch) * event.iterations_per_epoch
            self.bar = tqdm(total=remaining, unit="it", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_description(f"epoch {event.start_epoch + 1}/{event.epochs}")

    def _iteration(self, event: IterationEnd) -> None:
        assert self.bar is not None
        if self.budget_s is None:
            self.bar.update(1)
        else:
            self.bar.update(
                min(round(time.monotonic() - self.started), self.bar.total) - self.bar.n
            )
        self.bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)

    def _epoch(self, event: EpochEnd) -> None:
        assert self.bar is not None
        self.bar.set_description(f"epoch {min(event.epoch + 1, self.epochs)}/{self.epochs}")
        self.bar.set_postfix(loss=f"{event.mean_loss:.4g}")

    def _buffer(self, event: BufferDrawn) -> None:
        if event.seconds > 1:
            self._write(f"patch buffer of {event.n_patches} drawn in {event.seconds:.1f} s")

    def _validation(self, event: ValidationDone) -> None:
        figures = ", ".join(
            f"output {o} class {c}: {v:.3f}"
            for (o, c), v in zip(event.pairs, event.iou, strict=True)
        )
        self._write(f"epoch {event.epoch} validation IoU: {figures}")

    def _holdout(self, event: HoldoutScore) -> None:
        self._write(
            f"epoch {event.epoch} held-out IoU {event.iou:.3f} at 0.5 (best {event.best:.3f} at "
            f"epoch {event.best_epoch}); {event.iou_at_threshold:.3f} at threshold "
            f"{event.threshold:.2f}"
        )

    def _saved(self, event: CheckpointSaved) -> None:
        self._write(
            f"saved {event.path}" + (" (the best held-out IoU so far)" if event.best else "")
        )

    def _notice(self, event: Notice) -> None:
        self._write(f"{event.level}: {event.text}")

    def _finished(self, event: TrainingFinished) -> None:
        self.close()
        where = f"; last checkpoint {event.checkpoint}" if event.checkpoint else ""
        why = f" ({event.detail})" if event.detail else ""
        self._write(
            f"training {event.reason}{why} after {event.epoch} epoch(s), "
            f"{event.iteration} iterations{where}"
        )
        if event.best_checkpoint:
            self._write(
                f"predict with {event.best_checkpoint}: the best held-out IoU, "
                f"{event.best_iou:.3f} at epoch {event.best_epoch}"
            )
