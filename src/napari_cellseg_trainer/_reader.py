"""The napari reader: label images open as Labels, microscope files through bioio, voxel size kept.

A labels TIFF opened by napari's own reader becomes an Image layer, which cannot be painted on
or picked as ground truth; files named ``*_labels.*``, ``*_GT.*`` or ``*_mask.*`` open here as
Labels. CZI, ND2 and LIF open through bioio (an optional extra), one layer per channel with the
channel's name. OME-Zarr images and zarr arrays open lazily (dask over zarr), with the label
images of the store's ``labels/`` group (OME-NGFF's convention) as Labels layers; a label image
opened alone is Labels too. Every layer gets the file's voxel size as its scale.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data.images import (
    BIOIO_SUFFIXES,
    TIFF_SUFFIXES,
    MicroscopyImage,
    channel_names,
    open_lazy,
    read_microscopy,
    to_tczyx,
)
from .data.zarr_images import is_label_image, is_zarr, label_images
from .errors import UserInputError

LABEL_NAME = re.compile(r"(_labels?|_gt|_mask|_masks)(\.ome)?\.(tiff?|zarr)$", re.IGNORECASE)
LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari's hook: a reader for the paths this plugin knows, or None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_known(Path(p)) for p in paths):
        return None
    return read_layers


def _known(path: Path) -> bool:
    name = path.name.lower()
    return bool(LABEL_NAME.search(name)) or name.endswith(BIOIO_SUFFIXES) or is_zarr(path)


def read_layers(path: str | list[str]) -> list[LayerData]:
    """The layers of one or more files (napari shows a reader's error as a notification)."""
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers += _layers_of(Path(p))
    return layers


def _layers_of(path: Path) -> list[LayerData]:
    try:
        image = _lazy_zarr(path) or read_microscopy(path)
        label_paths = label_images(path) if is_zarr(path) else []
    except UserInputError as err:
        raise ValueError(str(err)) from None
    data = image.data  # (T, C, Z, Y, X)
    scale = image.voxel_size or (1.0, 1.0, 1.0)
    name = path.name
    for suffix in (*TIFF_SUFFIXES, *BIOIO_SUFFIXES, ".ome"):
        name = name.removesuffix(suffix)
    if LABEL_NAME.search(path.name.lower()) or is_label_image(path):
        # a lazy (dask) label image stays lazy: napari reads the planes it shows
        labels = data[0, 0] if data.shape[:2] == (1, 1) else data[:, 0]
        if not np.issubdtype(labels.dtype, np.integer):
            labels = labels.astype(np.int32)
        return [(labels, {"name": name, "scale": _scale(labels, scale)}, "labels")]
    layers = []
    names = channel_names(path) if data.shape[1] > 1 else []
    for c in range(data.shape[1]):
        channel = data[:, c] if data.shape[0] > 1 else data[0, c]
        known = names[c] if len(names) == data.shape[1] and names[c] else str(c)
        title = name if data.shape[1] == 1 else f"{name} [{known}]"
        layers.append((channel, {"name": title, "scale": _scale(channel, scale)}, "image"))
    return layers + [layer for label in label_paths for layer in _layers_of(label)]


def _lazy_zarr(path: Path) -> MicroscopyImage | None:
    """An OME-Zarr as a dask array over its zarr level 0: napari reads only what it shows."""
    if not is_zarr(path):
        return None
    try:
        import dask.array
    except ImportError:  # no dask: read into memory
        return None
    lazy, voxel = open_lazy(path)
    data = to_tczyx(dask.array.from_zarr(lazy.array), lazy.axes, path)
    return MicroscopyImage(path, tuple(int(v) for v in data.shape), data, voxel)


def _scale(array: np.ndarray, voxel: tuple[float, float, float]) -> tuple[float, ...]:
    return (
        (1.0,) * (array.ndim - 3) + tuple(voxel) if array.ndim >= 3 else tuple(voxel[-array.ndim :])
    )
