"""Training images stored as OME-Zarr, read patch by patch: ``NAME.ome.zarr`` beside
``NAME_GT.ome.zarr``, and ``NAME_CM.ome.zarr`` where voxels weigh differently (without one,
every voxel weighs 1, as for layers).

Such an image never has to fit in memory. Its checks read it slab by slab, the normalisation
takes its statistics slab by slab (:func:`..normalization.streamed_normalizer`) and applies
them to each window read, and each training patch reads only the window it is cut from
(:mod:`.stored_patches`). The arrays of such a :class:`.folder.TrainingImage` are
:class:`StoredVolume` objects: shape, dtype and ``[...]`` as an array's, reading on demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..normalization import (
    STREAMED,
    NormalizationError,
    normalised_channels,
    streamed_normalizer,
)
from .array_checks import check_costmap_array, check_label_array, check_shapes
from .images import ImageReadError, open_lazy
from .training_image import DataError, TrainingImage, label_dtype

RAW_ZARR, GT_ZARR, CM_ZARR = ".ome.zarr", "_GT.ome.zarr", "_CM.ome.zarr"
SLAB_VOXELS = 2**24  # read at once by the checks and the sample (64 MiB of float32)
CELL = 32  # y-x side of the cells whose structure is noted for patches centred on it


class StoredVolume:
    """A read-only array-like over a store: ``[...]`` reads the window asked for (numpy).

    ``read`` takes a full-rank tuple of slices in the store's coordinates; ``origin`` places
    this view (:meth:`crop`) in them. ``np.asarray`` reads it whole: for held-out slabs and
    validation images, which are predicted whole.
    """

    def __init__(self, read: Callable, shape, dtype, origin=None, structure=None) -> None:
        self._read = read
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.origin = tuple(origin) if origin is not None else (0,) * self.ndim
        # a label volume's (Z, Y / CELL, X / CELL) flags: some structure counts in that cell
        self.structure = structure
        self._cells: np.ndarray | None = None

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = (*key, *(slice(None),) * (self.ndim - len(key)))
        spans, drop = [], []
        for k, n, o in zip(key, self.shape, self.origin, strict=True):
            if isinstance(k, int | np.integer):
                k = int(k) % n
                spans.append(slice(o + k, o + k + 1))
                drop.append(0)
                continue
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError("a stored volume reads contiguous windows only")
            spans.append(slice(o + start, o + max(start, stop)))
            drop.append(slice(None))
        block = np.asarray(self._read(tuple(spans)), dtype=self.dtype)
        return block[tuple(drop)]

    def crop(self, box: Sequence[slice]) -> StoredVolume:
        """The part ``box`` (slices of this view) as a view, nothing read."""
        bounds = [s.indices(n)[:2] for s, n in zip(box, self.shape, strict=True)]
        origin = [o + a for o, (a, _) in zip(self.origin, bounds, strict=True)]
        shape = [max(0, b - a) for a, b in bounds]
        return StoredVolume(self._read, shape, self.dtype, origin, self.structure)

    def structure_cells(self) -> np.ndarray:
        """(N, 3) corners, in this view, of the cells (one plane, CELL x CELL) holding counted
        structure: where patches centred on structure look."""
        if self._cells is None:
            found = np.argwhere(self.structure) if self.structure is not None else np.empty((0, 3))
            corners = found * np.array([1, CELL, CELL]) - np.array(self.origin)
            inside = np.all((corners > -np.array([1, CELL, CELL])) & (corners < self.shape), axis=1)
            self._cells = corners[inside].astype(int)
        return self._cells

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[(slice(None),) * self.ndim]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def is_stored(image: TrainingImage) -> bool:
    return isinstance(image.label, StoredVolume)


def slabs(volume, voxels: int = SLAB_VOXELS) -> Iterator[np.ndarray]:
    """A (Z, Y, X) array-like as numpy z slabs of about ``voxels`` voxels."""
    depth = volume.shape[0]
    step = max(1, voxels // max(1, math.prod(volume.shape[1:])))
    for z in range(0, depth, step):
        yield np.asarray(volume[z : z + step])


def stored_gt_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{GT_ZARR}") if p.is_dir())


def stored_shapes(folder: Path) -> list[tuple[int, int, int]]:
    """The (Z, Y, X) shapes of a folder's OME-Zarr ground truths, from their metadata."""
    shapes = []
    for path in stored_gt_paths(folder):
        try:
            shapes.append(tuple(int(n) for n in open_lazy(path)[0].shape[1:]))
        except ImageReadError:  # reported when the folder is loaded
            continue
    return shapes


def read_stored_image(
    gt_path: Path, nchannel: int, nclass: int, size_out: Sequence[int], ignore_index: int | None
) -> tuple[TrainingImage | None, list[str]]:
    """One OME-Zarr image named by its ground truth, checked slab by slab; or its problems."""
    name = gt_path.name[: -len(GT_ZARR)]
    raw_path, cm_path = (
        gt_path.with_name(f"{name}{RAW_ZARR}"),
        gt_path.with_name(f"{name}{CM_ZARR}"),
    )
    if not raw_path.exists():
        return None, [f"{raw_path}: missing: the raw image that goes with {gt_path.name}"]
    problems: list[str] = []
    try:
        raw, voxel = open_lazy(raw_path)
        label = _single(gt_path, "ground truth", problems)
        costmap = _single(cm_path, "cost map", problems) if cm_path.exists() else None
    except ImageReadError as err:
        return None, [str(err)]
    if raw.shape[0] != nchannel:
        problems.append(
            f"{raw_path}: raw image has {raw.shape[0]} channel(s) but nchannel is {nchannel}"
        )
    if problems or label is None:
        return None, problems
    if costmap is None:  # every voxel weighs 1
        costmap = StoredVolume(_ones, label.shape, np.float32)
    check_shapes(raw, label, costmap, str(gt_path), str(cm_path), size_out, problems)
    structure = None
    if not problems:
        structure = _check_slabs(
            label, costmap, str(gt_path), str(cm_path), nclass, ignore_index, problems
        )
    if problems:
        return None, problems
    image = TrainingImage(
        name=name,
        raw=StoredVolume(_channel_reader(raw, None), raw.shape, np.float32),
        label=StoredVolume(label._read, label.shape, label_dtype(ignore_index), None, structure),
        costmap=StoredVolume(costmap._read, costmap.shape, np.float32),
        source=str(raw_path),
        voxel_size=voxel,
    )
    return image, []


def _single(path: Path, role: str, problems: list[str]) -> StoredVolume | None:
    """A one-channel, one-time-point store as a (Z, Y, X) volume."""
    lazy, _ = open_lazy(path)
    times = dict(zip(lazy.axes, lazy.array.shape, strict=True)).get("T", 1)
    if lazy.shape[0] != 1 or times != 1:
        problems.append(
            f"{path}: the {role} has {lazy.shape[0]} channel(s) and {times} time "
            "point(s); expected one of each (ZYX)"
        )
        return None
    return StoredVolume(lambda spans: lazy[(0, *spans)], lazy.shape[1:], lazy.dtype)


def _ones(spans) -> np.ndarray:
    return np.ones(tuple(s.stop - s.start for s in spans), np.float32)


def _channel_reader(raw, transforms) -> Callable:
    """Windows of a (C, Z, Y, X) image, each channel through its normalisation (or as given)."""

    def read(spans) -> np.ndarray:
        block = np.asarray(raw[(slice(None), *spans[1:])], dtype=np.float32)
        if transforms is not None:
            block = np.stack([t(b) for t, b in zip(transforms, block, strict=True)])
        return block[spans[0]]

    return read


def _check_slabs(label, costmap, gt: str, cm: str, nclass, ignore_index, problems) -> np.ndarray:
    """The label and cost-map checks of a folder image, slab by slab (each problem once); the
    cells holding counted structure, noted on the way."""
    found: list[str] = []
    cells = []
    for lab, cost in zip(slabs(label), slabs(costmap), strict=True):
        check_label_array(lab, gt, nclass, ignore_index, found)
        check_costmap_array(cost, cm, found)
        if found:
            break  # the first slab with a problem names it
        cells.append(_cells_with_structure((lab > 0) & (cost > 0)))
    problems += found
    return np.concatenate(cells) if cells else np.zeros((0, 0, 0), bool)


def _cells_with_structure(mask: np.ndarray) -> np.ndarray:
    """(Z, Y / CELL, X / CELL) flags of a (Z, Y, X) mask: some voxel of the cell is set."""
    depth, height, width = mask.shape
    cy, cx = -(-height // CELL), -(-width // CELL)
    padded = np.zeros((depth, cy * CELL, cx * CELL), bool)
    padded[:, :height, :width] = mask
    return padded.reshape(depth, cy, CELL, cx, CELL).any(axis=(2, 4))


def normalised(image: TrainingImage, recipe: int) -> TrainingImage:
    """A stored image whose raw windows come normalised by ``recipe`` with its statistics
    gathered slab by slab; the recipes that smooth the whole volume are refused."""
    base = image.raw
    try:
        transforms = [streamed_normalizer(recipe, base, c) for c in range(base.shape[0])]
    except NormalizationError:
        usable = ", ".join(map(str, STREAMED))
        raise DataError(
            [
                f"{image.source}: normalization {recipe} smooths the whole volume, and an "
                f"OME-Zarr training image is read patch by patch; use one of {usable}"
            ]
        ) from None
    raw = StoredVolume(_normalising(base, transforms), base.shape, np.float32, base.origin)
    return replace(image, raw=raw, normalized_by=recipe)


def _normalising(base: StoredVolume, transforms) -> Callable:
    def read(spans) -> np.ndarray:  # spans in the store's coordinates, the window in the view's
        window = tuple(
            slice(s.start - o, s.stop - o) for s, o in zip(spans[1:], base.origin[1:], strict=True)
        )
        return normalised_channels(base, range(len(transforms)), window, transforms)[spans[0]]

    return read


def in_memory(image: TrainingImage) -> TrainingImage:
    """The image with its arrays read whole (a held-out slab, a validation image)."""
    if not is_stored(image):
        return image
    return replace(
        image,
        raw=np.asarray(image.raw),
        label=np.asarray(image.label),
        costmap=np.asarray(image.costmap),
    )


def sampled(image: TrainingImage, voxels: int = SLAB_VOXELS) -> TrainingImage:
    """A stored image's stand-in for the data warnings: evenly spaced z planes (a central y-x
    crop when one plane is too large), about ``voxels`` voxels, read into memory."""
    if not is_stored(image):
        return image
    depth, height, width = image.shape
    side = int(math.sqrt(voxels))
    box = [slice(max(0, n // 2 - side // 2), n // 2 + side // 2) for n in (height, width)]
    planes = np.unique(
        np.linspace(0, depth - 1, max(1, min(depth, voxels // (height * width)))).astype(int)
    )
    raw = np.concatenate([image.raw[:, z : z + 1, box[0], box[1]] for z in planes], axis=1)
    label = np.concatenate([image.label[z : z + 1, box[0], box[1]] for z in planes])
    costmap = np.concatenate([image.costmap[z : z + 1, box[0], box[1]] for z in planes])
    return replace(image, raw=raw, label=label, costmap=costmap)


def crop(array, box: Sequence[slice]):
    """``array[box]``: a view of a stored volume (nothing read), or of an array."""
    return array.crop(box) if isinstance(array, StoredVolume) else array[tuple(box)]
