"""Training data: the folder format, the patch buffer with its augmentation, and sample data."""

from .buffer import (
    PatchBuffer,
    PatchSet,
    augment_image,
    draw_buffer,
    iter_batches,
    margin_of,
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
    "PatchBuffer",
    "PatchSet",
    "TrainingImage",
    "augment_image",
    "check_folder",
    "draw_buffer",
    "ensure_sample_folder",
    "images_from_arrays",
    "iter_batches",
    "load_folder",
    "make_sample",
    "margin_of",
    "patch_counts",
    "rotate_image",
    "sample_cache_folder",
    "sample_image",
    "sample_training_image",
    "write_sample_folder",
    "write_training_image",
]
