"""The run's clock: a time budget, and a learning rate that follows the run's progress.

Progress is the share of the run done: of the time budget when ``minutes`` is set (a run that
stops on time should end its schedule on time), else of the iterations of all epochs.
"""

from __future__ import annotations

import math
import time

from ..config import TrainConfig

WARMUP = 0.05  # share of the run spent warming the learning rate up
FLOOR = 0.05  # the cosine decays to this share of learning_rate


class RunClock:
    """Time and iterations of a run; says when the budget is spent and what the lr should be."""

    def __init__(self, cfg: TrainConfig, iterations_per_epoch: int, start_iteration: int) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        self.budget_s = cfg.minutes * 60 if cfg.minutes else None
        self.total = max(1, cfg.epochs * iterations_per_epoch - start_iteration)
        self.start_iteration = start_iteration

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.elapsed >= self.budget_s

    def progress(self, iteration: int) -> float:
        """The share of the run done, 0..1."""
        if self.budget_s is not None:
            return min(1.0, self.elapsed / self.budget_s)
        return min(1.0, (iteration - self.start_iteration) / self.total)

    def learning_rate(self, iteration: int) -> float:
        """``learning_rate`` as the schedule has it at this point of the run."""
        base = self.cfg.learning_rate
        if self.cfg.lr_schedule == "constant":
            return base
        done = self.progress(iteration)
        if done < WARMUP:
            return base * max(done / WARMUP, 0.01)
        cosine = 0.5 * (1 + math.cos(math.pi * (done - WARMUP) / (1 - WARMUP)))
        return base * (FLOOR + (1 - FLOOR) * cosine)
