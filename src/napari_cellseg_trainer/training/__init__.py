"""Training: the event-generating loop, the Aux loss, validation and run metrics."""

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
from .loop import TrainingError, checkpoint_path, resolve_resume, train
from .loss import AuxLoss, weighted_nll
from .metrics import MetricsRecorder

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
    "ValidationDone",
    "checkpoint_path",
    "resolve_resume",
    "train",
    "weighted_nll",
]
