"""The two networks and their size rules.

The size rules (``geometry``) need no torch; the networks import it when first used, so the
config and the napari panels load quickly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._lazy import lazy_members
from . import geometry
from .geometry import (
    MODEL_NAMES,
    InvalidSizeError,
    is_valid_size_in,
    margin,
    nearest_valid_size_in,
    size_out,
)

if TYPE_CHECKING:
    from torch import nn

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
    from .unet_xy import UNetXY, UNetXYZoom

    if name == "unet_xy":
        return UNetXY(nchannel, nclass)
    if name == "unet_xy_zoom":
        return UNetXYZoom(nchannel, nclass, zoom_ratio)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")


__getattr__ = lazy_members(__name__, {"UNetXY": "unet_xy", "UNetXYZoom": "unet_xy"})
