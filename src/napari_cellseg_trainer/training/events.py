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
class CheckpointSaved:
    epoch: int
    iteration: int
    path: Path


@dataclass(frozen=True)
class TrainingFinished:
    reason: str  # "completed" or "stopped"
    epoch: int
    iteration: int
    checkpoint: Path | None
    weights_digest: str = ""  # SHA-1 prefix of the final weights (equal on every rank)


Event = (
    TrainingStarted
    | BufferDrawn
    | IterationEnd
    | PreviewPatch
    | EpochEnd
    | ValidationDone
    | CheckpointSaved
    | TrainingFinished
)
