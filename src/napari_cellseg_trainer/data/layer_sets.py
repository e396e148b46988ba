"""Training data from arrays a viewer holds (napari layers), and their export as a folder.

A microscopist's ground truth often lives in napari: an Image layer, a Labels layer painted or
corrected by hand, and optionally a second Labels layer marking regions to leave out of the
loss. :func:`prepare` turns one such set into the folder triple's arrays (normalised raw,
0/1 labels, cost map with 0 where excluded); training from layers and training from the folder
:func:`export_training_folder` writes go through the same :func:`prepare` and the same checks,
so they draw the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..normalization import normalize
from .folder import TrainingImage, images_from_arrays, write_training_image

# Min-max to [0, 1] per channel: a float image the network sees like the established trainer's
# normalised training files. Prediction should use the same recipe (Normalization: 0).
DEFAULT_RECIPE = 0


@dataclass(frozen=True)
class LayerSet:
    """One training image as a viewer holds it.

    Attributes
    ----------
    name : the image's name (the Image layer's name); the folder's ``NAME``.
    raw : ZYX or CZYX, any numeric type (not yet normalised).
    label : ZYX. Dense (the default): every value > 0 is the structure (class 1; instance
        labels too), 0 is background. Sparse: 0 is not painted (left out of the loss),
        ``BACKGROUND`` (1) is painted background, any value >= 2 is painted structure.
    exclude : ZYX or None; voxels > 0 are left out of the loss (cost 0).
    sparse : the labels are painted on a few slices or regions only.
    voxel_size : (z, y, x) micrometres (the layer's scale), if known.
    """

    name: str
    raw: np.ndarray
    label: np.ndarray
    exclude: np.ndarray | None = None
    sparse: bool = False
    voxel_size: tuple[float, float, float] | None = None


BACKGROUND = 1  # the painted background of sparse labels (0 is "not painted")


def prepare(
    item: LayerSet, recipe: int | dict = DEFAULT_RECIPE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw CZYX float32 normalised, label uint8 0/1, cost map float32) for one set."""
    raw = np.asarray(item.raw)
    czyx = raw[np.newaxis] if raw.ndim == 3 else raw
    if czyx.ndim == 4:
        czyx = normalize(czyx.astype(np.float32, copy=False), recipe)
    painted = np.asarray(item.label)
    if item.sparse:  # unpainted voxels count for nothing: only what was painted teaches
        label = (painted > BACKGROUND).astype(np.uint8)
        costmap = (painted > 0).astype(np.float32)
    else:
        label = (painted > 0).astype(np.uint8)
        costmap = np.ones(label.shape, np.float32)
    if item.exclude is not None:
        exclude = np.asarray(item.exclude)
        if exclude.shape == label.shape:
            costmap[exclude > 0] = 0.0
        else:  # reported by the shape checks below, naming the layer
            costmap = np.ones(exclude.shape, np.float32)
    return czyx, label, costmap


def images_from_layers(
    items: Sequence[LayerSet],
    nchannel: int,
    nclass: int,
    size_out: Sequence[int],
    recipe: int | dict = DEFAULT_RECIPE,
) -> list[TrainingImage]:
    """Training images from layer sets, checked like a folder (DataError lists every problem)."""
    arrays = [(*prepare(item, recipe), item.name) for item in items]
    images = images_from_arrays(arrays, nchannel, nclass, size_out)
    recipe_id = recipe if isinstance(recipe, int) else None
    return [
        replace(image, normalized_by=recipe_id, voxel_size=item.voxel_size)
        for image, item in zip(images, items, strict=True)
    ]


def export_training_folder(
    items: Sequence[LayerSet], folder: str | Path, recipe: int | dict = DEFAULT_RECIPE
) -> list[Path]:
    """Write each set as ``NAME.ome.tif``, ``NAME_GT.ome.tif``, ``NAME_CM.ome.tif``."""
    paths: list[Path] = []
    for item in items:
        raw, label, costmap = prepare(item, recipe)
        name = safe_name(item.name)
        paths += write_training_image(folder, name, raw, label, costmap, item.voxel_size)
    return paths


def safe_name(name: str) -> str:
    """A file-name-safe version of a layer name."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return cleaned or "image"
