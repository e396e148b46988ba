"""Training data: the folder format, the patch buffer with its augmentation, and sample data.

The patch buffer (which needs torch) loads when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_members

if TYPE_CHECKING:
    from .buffer import (
        PatchBuffer,
        PatchSet,
        augment_image,
        draw_buffer,
        iter_batches,
        patch_counts,
        rotate_image,
    )
from .folder import (
    DataError,
    TrainingImage,
    check_folder,
    images_from_arrays,
    load_folder,
    write_training_image,
)
from .layer_sets import LayerSet, export_training_folder, images_from_layers
from .measure import ZoomAdvice, suggest_zoom
from .sample import (
    SAMPLE_KINDS,
    ensure_sample_folder,
    make_sample,
    sample_cache_folder,
    sample_image,
    sample_training_image,
    write_sample_folder,
)

__all__ = [
    "SAMPLE_KINDS",
    "DataError",
    "LayerSet",
    "PatchBuffer",
    "PatchSet",
    "TrainingImage",
    "ZoomAdvice",
    "augment_image",
    "check_folder",
    "draw_buffer",
    "ensure_sample_folder",
    "export_training_folder",
    "images_from_arrays",
    "images_from_layers",
    "iter_batches",
    "load_folder",
    "make_sample",
    "patch_counts",
    "rotate_image",
    "sample_cache_folder",
    "sample_image",
    "sample_training_image",
    "suggest_zoom",
    "write_sample_folder",
    "write_training_image",
]

__getattr__ = lazy_members(
    __name__,
    dict.fromkeys(
        (
            "PatchBuffer",
            "PatchSet",
            "augment_image",
            "draw_buffer",
            "iter_batches",
            "patch_counts",
            "rotate_image",
        ),
        "buffer",
    ),
)
