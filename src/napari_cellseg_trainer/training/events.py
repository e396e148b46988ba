"""The small, immutable events a training run yields; the CLI and the panel decide how to show them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrainingStarted:
    device: str
    n_train_images: int
    n_validation_images: int
    iterations_per_epoch: int
    start_epoch: int
    epochs: int
    start_iteration: int
    precision: str = "fp32"  # the step's arithmetic: fp32, bf16 or fp16 (mixed)
    folder: Path | None = None  # where the run writes its checkpoints and metrics
    minutes: float | None = None  # the time budget, if any
    normalization: str = "as given"  # how the training raw was normalised
    n_holdout_slabs: int = 0  # images with a held-out slab (holdout > 0)


@dataclass(frozen=True)
class BufferDrawn:
    """A new patch buffer is in use (drawn every ``epoch_shuffle`` epochs)."""

    epoch: int
    n_patches: int
    seconds: float


@dataclass(frozen=True)
class IterationEnd:
    epoch: int  # 0-based index of the epoch in progress
    iteration: int  # iterations done in the whole run, resumed ones included
    loss: float
    seconds: float  # wall time of this iteration


@dataclass(frozen=True)
class PreviewPatch:
    """One training patch with its prediction, all of shape ``size_out`` (z, y, x)."""

    epoch: int
    iteration: int
    raw: np.ndarray  # float32, first input channel, cropped to the output region
    label: np.ndarray  # uint8 ground truth
    probability: np.ndarray  # float32, probability of class 1 of the main output


@dataclass(frozen=True)
class EpochEnd:
    epoch: int  # epochs completed, 1-based
    mean_loss: float
    iterations: int  # iterations done in the whole run
    seconds: float


@dataclass(frozen=True)
class ValidationDone:
    epoch: int
    pairs: tuple[tuple[int, int], ...]  # (output index, class channel)
    iou: tuple[float, ...]  # one figure per pair


@dataclass(frozen=True)
class HoldoutScore:
    """The IoU (at 0.5, within the cost map) of the held-out slabs after an epoch."""

    epoch: int
    iteration: int
    iou: float  # at threshold 0.5
    best: float  # the best IoU at 0.5 so far
    best_epoch: int
    threshold: float = 0.5  # the threshold with the highest IoU now
    iou_at_threshold: float = 0.0


@dataclass(frozen=True)
class Notice:
    """Something the user should know: a warning about the data, a save that failed, a plateau."""

    text: str
    level: str = "warning"  # "warning" or "info"


@dataclass(frozen=True)
class CheckpointSaved:
    epoch: int
    iteration: int
    path: Path
    best: bool = False  # checkpoint_best.pytorch: the best held-out IoU so far (keep_best)


@dataclass(frozen=True)
class TrainingFinished:
    reason: str  # "completed", "stopped", "time budget" or "early stop"
    epoch: int
    iteration: int
    checkpoint: Path | None
    weights_digest: str = ""  # SHA-1 prefix of the final weights (equal on every rank)
    detail: str = ""  # why, in words (e.g. the early stop's figures)
    best_checkpoint: Path | None = None  # keep_best: the weights of the best held-out IoU
    best_iou: float | None = None  # their held-out IoU at 0.5
    best_epoch: int = 0

    @property
    def to_predict(self) -> Path | None:
        """The checkpoint to predict with: the best held-out one when kept, else the last."""
        return self.best_checkpoint or self.checkpoint


Event = (
    TrainingStarted
    | BufferDrawn
    | IterationEnd
    | PreviewPatch
    | EpochEnd
    | ValidationDone
    | HoldoutScore
    | Notice
    | CheckpointSaved
    | TrainingFinished
)
