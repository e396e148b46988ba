"""Instance labels of an OME-Zarr prediction, block by block, as OME-Zarr label images.

The labels go into the prediction's own store, after the OME-NGFF ``labels/`` convention:
``<store>/labels/instances`` (``instances_<i>`` for each of several output pairs), each an
image with ``image-label`` metadata and the prediction's voxel size, so napari opens it as a
Labels layer over the probabilities. A label image is built under a temporary name and renamed
when finished: an interrupted run leaves no half-labelled image behind, and a later run labels
again from the start.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.images import require_zarr
from ..evaluation.block_labels import components_by_block
from ..evaluation.instances import InstanceParams
from .zarr_store import ChunkedError

LABELS = "labels"
PARTIAL = "partial_"  # prefix of a label image still being built


def refuse_whole_volume_method(params: InstanceParams) -> None:
    """The seeded watershed sees every object whole: it cannot run block by block."""
    if params.method != "components":
        raise ChunkedError(
            f"instances: the {params.method} needs the whole volume in memory (its distance "
            "transform and seeds see each object whole); with --format ome-zarr use --instances "
            "components (block by block), or --format tiff for a volume that fits in memory"
        )


def label_names(n_pairs: int) -> list[str]:
    """``instances`` for one output pair, ``instances_<i>`` for several."""
    return ["instances"] if n_pairs == 1 else [f"instances_{i}" for i in range(n_pairs)]


def label_store(
    store: str | Path,
    params: InstanceParams,
    progress: Callable[[float, int], None] | None = None,
) -> list[Path]:
    """Connected-component labels of a finished prediction store; the label images written.

    The store's array ``0`` (n_pairs, Z, Y, X) holds probabilities, or 0/255 labels; voxels
    above ``params.threshold`` (of 1, or of 255) are foreground; objects under
    ``params.min_size`` voxels are dropped.
    """
    refuse_whole_volume_method(params)
    zarr = require_zarr()
    from ome_zarr.format import format_from_version
    from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    store = Path(store)
    image_group = zarr.open_group(str(store), mode="a")
    image = image_group["0"]
    attrs = dict(image_group.attrs)
    ome = attrs.get("ome", attrs)
    fmt = format_from_version(ome.get("version") or ome["multiscales"][0].get("version", "0.4"))
    block = tuple(image.chunks[1:])
    scale = _level_scale(ome)[1:]
    labels_group = image_group.require_group(LABELS)
    cut = params.threshold * (255 if image.dtype == np.uint8 else 1)
    written = []
    for pair, name in enumerate(label_names(image.shape[0])):
        partial = f"{PARTIAL}{name}"
        for stale in (partial, name):
            _remove(store / LABELS / stale)
        label_image = labels_group.create_group(partial)
        target = label_image.create_array(
            "0", shape=image.shape[1:], chunks=block, dtype=np.uint32, fill_value=0
        )
        components_by_block(_Channel(image, pair), target, block, cut, params.min_size, progress)
        (store / LABELS / partial).rename(store / LABELS / name)
        label_image = zarr.open_group(str(store / LABELS / name), mode="a")
        write_multiscales_metadata(
            label_image,
            [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            fmt=fmt,
            axes=[{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
        )
        _forget(labels_group, name)
        write_label_metadata(labels_group, name, fmt=fmt, source={"image": "../../"})
        written.append(store / LABELS / name)
    return written


class _Channel:
    """One output pair of a (n_pairs, Z, Y, X) array, read window by window."""

    def __init__(self, array, index: int) -> None:
        self.array, self.index = array, index
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, key):
        return self.array[(self.index, *key)]


def _level_scale(ome: dict) -> list[float]:
    """The scale of level 0 (the store's voxel size with 1 for the channel axis)."""
    level = ome["multiscales"][0]["datasets"][0]
    for t in level.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return [float(v) for v in t["scale"]]
    return [1.0] * 4


def _remove(path: Path) -> None:
    """An earlier label image of this tool (in our own store) goes before it is made again."""
    if path.exists():
        shutil.rmtree(path)


def _forget(labels_group, name: str) -> None:
    """Drop ``name`` from the labels list, so writing its metadata again lists it once."""
    attrs = dict(labels_group.attrs)
    ome = attrs.get("ome", attrs)
    names = [n for n in ome.get("labels", []) if n != name]
    if "ome" in attrs:
        labels_group.attrs["ome"] = {**attrs["ome"], "labels": names}
    elif "labels" in attrs:
        labels_group.attrs["labels"] = names
