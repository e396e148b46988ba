"""Which of the viewer's layers are the user's images (not layers this plugin made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.layers import Image

from .preview import NAMES as PREVIEW_NAMES

if TYPE_CHECKING:
    import napari

PROBABILITY_SUFFIX = " probability"


def user_images(viewer: napari.viewer.Viewer) -> list[Image]:
    """The Image layers to train on or segment: not training previews, not probability maps."""
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image)
        and layer.name not in PREVIEW_NAMES
        and not layer.name.endswith(PROBABILITY_SUFFIX)
    ]
