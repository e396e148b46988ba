"""``cellseg-trainer train`` and ``cellseg-trainer sample-data``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tqdm import tqdm

from .. import config
from ..data import SAMPLE_KINDS, write_sample_folder
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
    p.set_defaults(run=run_train)
    s = sub.add_parser("sample-data", help="write the embedded sample training folder")
    s.add_argument("folder")
    s.add_argument("--kind", choices=SAMPLE_KINDS, default=SAMPLE_KINDS[0])
    s.add_argument("--n-images", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=run_sample_data)


def run_sample_data(args: argparse.Namespace) -> int:
    paths = write_sample_folder(args.folder, kind=args.kind, n_images=args.n_images, seed=args.seed)
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


def run_train(args: argparse.Namespace) -> int:
    cfg = config.load_config(args.config, args.overrides)
    problems = config.check_paths(cfg)
    if problems:
        raise config.ConfigError(problems, args.config)
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
    """Shows training events as a tqdm bar (epochs, iterations, loss, ETA) and log lines."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.epochs = 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, event: object) -> None:
        if isinstance(event, TrainingStarted):
            self._start(event)
        elif self.bar is None:
            return
        elif isinstance(event, IterationEnd):
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
        elif isinstance(event, EpochEnd):
            self.bar.set_description(f"epoch {min(event.epoch + 1, self.epochs)}/{self.epochs}")
            self.bar.set_postfix(loss=f"{event.mean_loss:.4g}")
        elif isinstance(event, BufferDrawn) and event.seconds > 1:
            tqdm.write(
                f"patch buffer of {event.n_patches} drawn in {event.seconds:.1f} s", file=sys.stderr
            )
        elif isinstance(event, ValidationDone):
            figures = ", ".join(
                f"output {o} class {c}: {v:.3f}"
                for (o, c), v in zip(event.pairs, event.iou, strict=True)
            )
            tqdm.write(f"epoch {event.epoch} validation IoU: {figures}", file=sys.stderr)
        elif isinstance(event, CheckpointSaved):
            tqdm.write(f"saved {event.path}", file=sys.stderr)
        elif isinstance(event, TrainingFinished):
            self.close()
            where = f"; last checkpoint {event.checkpoint}" if event.checkpoint else ""
            tqdm.write(
                f"training {event.reason} after {event.epoch} epoch(s), "
                f"{event.iteration} iterations{where}",
                file=sys.stderr,
            )

    def _start(self, event: TrainingStarted) -> None:
        tqdm.write(
            f"training on {event.device}, {event.precision}: {event.n_train_images} image(s), "
            f"{event.n_validation_images} held out, {event.iterations_per_epoch} iterations/epoch",
            file=sys.stderr,
        )
        self.epochs = event.epochs
        remaining = (event.epochs - event.start_epoch) * event.iterations_per_epoch
        self.bar = tqdm(total=remaining, unit="it", file=sys.stderr, dynamic_ncols=True)
        self.bar.set_description(f"epoch {event.start_epoch + 1}/{event.epochs}")
