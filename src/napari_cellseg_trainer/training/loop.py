"""The training loop: a generator of small events, readable top to bottom.

``train(cfg)`` yields :mod:`.events` as it goes. It never prints and never touches a GUI; it
checks ``stop`` (and the time budget) between batches and, when it stops, saves a checkpoint
before returning. The state it works on, and every event, come from a :class:`.run.TrainingRun`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..config import TrainConfig
from ..data import TrainingImage
from .events import EpochEnd, Event, IterationEnd
from .run import TrainingRun


def train(
    cfg: TrainConfig,
    stop: threading.Event | None = None,
    images: Sequence[TrainingImage] | None = None,
) -> Iterator[Event]:
    """Train as ``cfg`` says, yielding events; ``images`` replaces the data folder if given.

    Under torchrun (a joined process group, see :mod:`..distributed`) every rank runs this with
    its own share of each patch buffer; rank 0 alone saves checkpoints and yields previews; the
    held-out images are split across ranks for validation.
    """
    stop = stop or threading.Event()
    run = TrainingRun(cfg, images)
    try:
        yield from run.started()
        yield from run.score_start()
        while run.epoch < cfg.epochs:
            yield from run.draw_patches()
            losses: list[float] = []
            epoch_start = time.perf_counter()
            for batch in run.batches():
                reason = run.stop_reason(stop.is_set())
                if reason:
                    yield from run.save_stopped()
                    yield run.finished(reason)
                    return
                step_start = time.perf_counter()
                result = run.train_step(batch)
                losses.append(result.loss)
                seconds = time.perf_counter() - step_start
                yield IterationEnd(run.epoch, run.iteration, result.loss, seconds)
                yield from run.preview(batch, result)
            run.epoch += 1
            seconds = time.perf_counter() - epoch_start
            yield EpochEnd(run.epoch, float(np.mean(losses)), run.iteration, seconds)
            yield from run.validate()
            yield from run.score_holdout()
            yield from run.save_due()
            if run.plateau.should_stop:
                yield from run.save_stopped()
                yield run.finished("early stop", run.plateau.reason())
                return
    finally:
        run.close()
    yield run.finished("completed")
