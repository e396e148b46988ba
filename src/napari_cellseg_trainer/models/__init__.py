"""The two networks and their size rules."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from . import geometry
from .geometry import (
    MODEL_NAMES,
    InvalidSizeError,
    is_valid_size_in,
    margin,
    nearest_valid_size_in,
    size_out,
)
from .unet_xy import UNetXY, UNetXYZoom

__all__ = [
    "MODEL_NAMES",
    "InvalidSizeError",
    "UNetXY",
    "UNetXYZoom",
    "build_model",
    "geometry",
    "is_valid_size_in",
    "margin",
    "nearest_valid_size_in",
    "size_out",
]


def build_model(
    name: str, nchannel: int = 1, nclass: Sequence[int] = (2, 2, 2), zoom_ratio: int = 3
) -> nn.Module:
    """``unet_xy`` or ``unet_xy_zoom`` with freshly initialised weights."""
    if name == "unet_xy":
        return UNetXY(nchannel, nclass)
    if name == "unet_xy_zoom":
        return UNetXYZoom(nchannel, nclass, zoom_ratio)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
