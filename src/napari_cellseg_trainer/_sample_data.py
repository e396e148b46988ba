"""npe2 sample-data entries: the engine's embedded training images as image + labels layers.

The layers show image 0 of the sample training folder, the very data the panel's sample preset
trains on (``data.ensure_sample_folder``), so what a user sees is what the model learns from.
"""

from __future__ import annotations

from typing import Any

from .data.sample import sample_training_image


def _layers(kind: str) -> list[tuple[Any, dict, str]]:
    raw, label, costmap = sample_training_image(kind, 0)
    return [
        (raw, {"name": f"sample {kind}", "colormap": "gray"}, "image"),
        (label, {"name": f"sample {kind} ground truth", "opacity": 0.5}, "labels"),
    ]


def filaments() -> list[tuple[Any, dict, str]]:
    """Thin fibres and nuclear shells (for unet_xy)."""
    return _layers("filaments")


def blobs() -> list[tuple[Any, dict, str]]:
    """Large nucleus-like blobs (for unet_xy_zoom)."""
    return _layers("blobs")
