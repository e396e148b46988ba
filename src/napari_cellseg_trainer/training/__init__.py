"""Training: the event-generating loop, the Aux loss, validation and run metrics.

The events load at once (the panels draw them); the loop, the loss and the metrics, which
need torch or matplotlib, load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_members
from .events import (
    BufferDrawn,
    CheckpointSaved,
    EpochEnd,
    Event,
    IterationEnd,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)

if TYPE_CHECKING:
    from .loop import train
    from .loss import AuxLoss, weighted_nll
    from .metrics import MetricsRecorder
    from .session import recorded_training
    from .step import TrainingError, TrainingStep

_LAZY = {
    "TrainingError": "step",
    "TrainingStep": "step",
    "train": "loop",
    "recorded_training": "session",
    "AuxLoss": "loss",
    "weighted_nll": "loss",
    "MetricsRecorder": "metrics",
}

__all__ = [
    "AuxLoss",
    "BufferDrawn",
    "CheckpointSaved",
    "EpochEnd",
    "Event",
    "IterationEnd",
    "MetricsRecorder",
    "PreviewPatch",
    "TrainingError",
    "TrainingFinished",
    "TrainingStarted",
    "TrainingStep",
    "ValidationDone",
    "recorded_training",
    "train",
    "weighted_nll",
]


__getattr__ = lazy_members(__name__, _LAZY)
