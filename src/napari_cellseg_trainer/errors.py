"""The exceptions that mean "the user's input is wrong": one message, exit code 2."""

from __future__ import annotations

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DataError
from .devices import DeviceError
from .inference.images import ImageReadError
from .models.geometry import InvalidSizeError
from .models.memory import MemoryBudgetError
from .normalization import NormalizationError
from .training import TrainingError
from .training.precision import PrecisionError

USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    ImageReadError,
    InvalidSizeError,
    MemoryBudgetError,
    NormalizationError,
    PrecisionError,
    TrainingError,
)
