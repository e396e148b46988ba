"""Zarr inputs: OME-Zarr images (v0.4 and v0.5, zarr v2 and v3 stores) and plain zarr arrays.

An OME-Zarr image is a group whose ``multiscales`` metadata (``attrs`` in v0.4, ``attrs["ome"]``
in v0.5) names its resolution levels, its axes and each level's scale; the voxel size is that
scale (times the image-wide one) in micrometres. A folder written by bioformats2raw holds its
first image in ``0/``. A plain array has no metadata: its axes are its ``dimension_names`` (zarr
v3) or ``_ARRAY_DIMENSIONS`` (xarray's, zarr v2), else ZYX, CZYX or TCZYX by its rank. Nothing
is read beyond the metadata: the pixels come window by window through :class:`.images.LazyCZYX`.
"""

from __future__ import annotations

import math
from pathlib import Path

from .lazy import ImageReadError, LazyCZYX, VoxelSize, require_zarr

# Kept here, below the prediction that writes them, so an input can tell a store still being
# written by a block-by-block prediction (its done flags) from a finished one.
DONE = "done"  # one flag per block, each its own chunk: 0, or 1 + the writer's rank
MADE_BY = "cellseg_trainer_fingerprint"  # the group attribute that says what made the blocks
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
AXIS_TYPES = {"time": "T", "channel": "C"}
MICROMETRES = {
    "angstrom": 1e-4,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}
RANK_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}


def is_zarr(path: str | Path) -> bool:
    """A zarr store: a ``.zarr`` name, or a folder with zarr's own metadata file."""
    path = Path(path)
    if path.name.lower().endswith(".zarr"):
        return True
    return path.is_dir() and any((path / m).is_file() for m in ZARR_MARKERS)


def open_zarr(path: str | Path, level: int = 0) -> tuple[LazyCZYX, VoxelSize | None]:
    """The image of a zarr store at resolution ``level``, read lazily, and its voxel size.

    Raises
    ------
    ImageReadError
        One line for a store that is not an array or an OME-Zarr image, a level it lacks, axes
        the models cannot take, or a prediction of this tool that is not finished.
    """
    zarr = require_zarr()
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    try:
        node = zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError) as err:  # zarr's NodeNotFoundError is both
        raise ImageReadError(
            f"{path}: not a zarr array or OME-Zarr image ({_first_line(err)})"
        ) from None
    if not hasattr(node, "attrs") or not hasattr(node, "group_keys"):
        return _plain_array(node, path, level), None
    return _ome_image(node, path, level)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _plain_array(array, path: Path, level: int) -> LazyCZYX:
    """A bare zarr array: its dimension names when it has them, else its rank's axes."""
    if level != 0:
        raise ImageReadError(f"{path}: a plain zarr array has one level (0), not {level}")
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    axes = _axes_letters(names, path) if names else RANK_AXES.get(array.ndim)
    if axes is None:
        raise ImageReadError(
            f"{path}: a {array.ndim}-D zarr array without dimension names; the models take "
            "ZYX, CZYX or TCZYX"
        )
    return _lazy(array, axes, path)


def _ome_image(group, path: Path, level: int) -> tuple[LazyCZYX, VoxelSize | None]:
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)  # v0.5 nests its metadata under "ome"
    if "multiscales" not in ome and "bioformats2raw.layout" in ome and "0" in group:
        return _ome_image(group["0"], path / "0", level)  # the first image of the layout
    found = ome.get("multiscales")
    if not found:
        arrays = sorted(group.array_keys())[:5]
        hint = f"; it holds arrays {', '.join(arrays)}: give one as {path}/NAME" if arrays else ""
        kind = "an HCS plate or well" if "plate" in ome or "well" in ome else "a zarr group"
        raise ImageReadError(f"{path}: {kind} without OME-NGFF multiscales, not an image{hint}")
    _refuse_unfinished(group, path)
    meta = found[0]
    datasets = meta.get("datasets") or []
    if not 0 <= level < len(datasets):
        shapes = ", ".join(
            f"{i}: {tuple(group[d['path']].shape)}"
            for i, d in enumerate(datasets)
            if d["path"] in group
        )
        raise ImageReadError(
            f"{path}: level {level} does not exist; it has levels 0-{len(datasets) - 1} ({shapes})"
        )
    if datasets[level]["path"] not in group:
        raise ImageReadError(
            f"{path}: level {level}'s array {datasets[level]['path']!r} is missing"
        )
    array = group[datasets[level]["path"]]
    axes_meta = meta.get("axes") or list(RANK_AXES.get(array.ndim, ""))
    axes = _axes_letters(axes_meta, path)
    voxel = _voxel_size(axes_meta, axes, datasets[level], meta)
    return _lazy(array, axes, path), voxel


def _refuse_unfinished(group, path: Path) -> None:
    """A block-by-block prediction of this tool that has blocks left: still being written, or
    interrupted; its missing blocks read as 0, so it is no input yet."""
    if MADE_BY not in group.attrs or DONE not in group:
        return
    flags = group[DONE][...]
    left = int(flags.size - (flags > 0).sum())
    if left:
        raise ImageReadError(
            f"{path}: a prediction still being written (or interrupted): {left} of {flags.size} "
            "blocks are missing; let it finish (or run it again to resume) before reading it"
        )


def _axes_letters(axes, path: Path) -> str:
    """``tczyx``-style letters of OME axes (dicts or names), or of dimension names."""
    letters = []
    for axis in axes:
        name = str(axis.get("name", "") if isinstance(axis, dict) else axis).lower()
        kind = axis.get("type") if isinstance(axis, dict) else None
        letter = name.upper() if name in ("t", "c", "z", "y", "x") else AXIS_TYPES.get(kind)
        if letter is None:
            names = [a.get("name") if isinstance(a, dict) else a for a in axes]
            raise ImageReadError(
                f"{path}: axis {name!r} of {names} is not one the models take (t, c, z, y, x)"
            )
        letters.append(letter)
    return "".join(letters)


def _lazy(array, axes: str, path: Path) -> LazyCZYX:
    try:
        return LazyCZYX(array, axes)
    except ImageReadError as err:  # names the array, not the store: say which store
        raise ImageReadError(f"{path}: {str(err).removeprefix('array: ')}") from None


def _voxel_size(axes_meta, axes: str, dataset: dict, meta: dict) -> VoxelSize | None:
    """(z, y, x) micrometres: the level's scale times the image-wide scale, in each axis's unit."""
    scale = [1.0] * len(axes)
    for transforms in (
        dataset.get("coordinateTransformations"),
        meta.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
                scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    sizes = {}
    for letter, value, axis in zip(axes, scale, axes_meta, strict=True):
        unit = axis.get("unit") if isinstance(axis, dict) else None
        factor = MICROMETRES.get(unit, None) if unit else 1.0
        if factor is None:  # a unit that is no length (or unknown): no voxel size to give
            return None
        sizes[letter] = value * factor
    if "Y" not in sizes or "X" not in sizes:
        return None
    size = (sizes.get("Z", 1.0), sizes["Y"], sizes["X"])
    return size if all(math.isfinite(v) and v > 0 for v in size) else None


def zarr_channel_names(path: str | Path) -> list[str]:
    """The channel labels an OME-Zarr records (its ``omero`` block), [] when none."""
    zarr = require_zarr()
    try:
        node = zarr.open(str(Path(path).expanduser()), mode="r")
        attrs = dict(node.attrs)
        omero = attrs.get("ome", attrs).get("omero", {})
        return [str(c.get("label", "")) for c in omero.get("channels", [])]
    except (OSError, ValueError, KeyError, AttributeError):  # no names to offer
        return []


def _attributes(path: str | Path) -> dict:
    """The OME attributes of a zarr group (``ome`` of v0.5, the attributes of v0.4), {} else."""
    zarr = require_zarr()
    try:
        node = zarr.open(str(Path(path).expanduser()), mode="r")
    except (OSError, ValueError, KeyError):  # not a zarr node: no attributes
        return {}
    attrs = dict(node.attrs) if hasattr(node, "group_keys") else {}
    return attrs.get("ome", attrs)


def is_label_image(path: str | Path) -> bool:
    """An OME-Zarr label image (``image-label`` metadata): instance or class labels."""
    return is_zarr(path) and "image-label" in _attributes(path)


def label_images(path: str | Path) -> list[Path]:
    """The label images an OME-Zarr image lists in its ``labels/`` group, [] when none."""
    folder = Path(path).expanduser() / "labels"
    if not folder.is_dir():
        return []
    names = _attributes(folder).get("labels", [])
    return [folder / str(n) for n in names if is_label_image(folder / str(n))]
