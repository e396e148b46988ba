"""The training folder: ``NAME.ome.tif``, ``NAME_GT.ome.tif`` and ``NAME_CM.ome.tif`` per image
(or ``NAME.ome.zarr`` beside ``NAME_GT.ome.zarr``, read patch by patch: :mod:`.zarr_folder`).

Every problem with a folder is found in one pass and reported together, one line per problem,
each naming the file, so a user fixes the whole folder at once instead of one error per run.
Arrays handed over from napari layers go through the same checks and conversions
(:func:`images_from_arrays`), so training from layers sees exactly what training from a folder
written from those layers would see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import numpy as np
import tifffile

from ..files import write_atomically
from .array_checks import check_costmap_array, check_label_array, check_shapes
from .images import physical_size, voxel_size_of
from .training_image import DataError, TrainingImage, label_dtype

GT_SUFFIX = "_GT.ome.tif"
CM_SUFFIX = "_CM.ome.tif"
RAW_SUFFIX = ".ome.tif"


def check_folder(
    folder: str | Path,
    nchannel: int,
    nclass: int,
    size_out: Sequence[int],
    ignore_index: int | None = None,
) -> list[str]:
    """Every problem with a training folder, one line each naming the file; [] if it is usable.

    Parameters
    ----------
    folder : the training folder.
    nchannel : channels the raw images must have.
    nclass : labels must lie in [0, nclass - 1] (or equal ``ignore_index``).
    size_out : (z, y, x) output patch; every image must be at least this large.
    ignore_index : a label value the loss skips, allowed besides the classes.
    """
    problems, _ = _read_folder(folder, nchannel, nclass, size_out, ignore_index, keep=False)
    return problems


def load_folder(
    folder: str | Path,
    nchannel: int,
    nclass: int,
    size_out: Sequence[int],
    ignore_index: int | None = None,
) -> list[TrainingImage]:
    """Load every image of a training folder, sorted by name.

    Raises
    ------
    DataError : listing every problem :func:`check_folder` finds.
    """
    problems, images = _read_folder(folder, nchannel, nclass, size_out, ignore_index, keep=True)
    if problems:
        raise DataError(problems, str(folder))
    return images


def image_shapes(folder: str | Path) -> list[tuple[int, int, int]]:
    """The (Z, Y, X) shapes of a training folder's images, from the files' headers (fast)."""
    from .zarr_folder import stored_shapes

    shapes = stored_shapes(Path(folder).expanduser())
    for gt_path in sorted(Path(folder).expanduser().glob(f"*{GT_SUFFIX}")):
        try:
            with tifffile.TiffFile(gt_path) as tif:
                shape = tif.series[0].shape
        except Exception:  # an unreadable file is reported when the folder is loaded
            continue
        if len(shape) == 3:
            shapes.append(tuple(int(v) for v in shape))
    return shapes


def images_from_arrays(
    items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, str]],
    nchannel: int,
    nclass: int,
    size_out: Sequence[int],
    ignore_index: int | None = None,
) -> list[TrainingImage]:
    """Training images from in-memory arrays, e.g. napari layers, checked like a folder.

    Parameters
    ----------
    items : ``(raw, label, costmap or None, name)`` per image; raw is ZYX, CZYX or ZCYX
        (the folder's rule), a missing cost map means weight 1 everywhere.
    nchannel, nclass, size_out, ignore_index : as for :func:`check_folder`.

    Raises
    ------
    DataError : listing every problem, each naming the image.
    """
    problems: list[str] = []
    images: list[TrainingImage] = []
    for raw, label, costmap, name in items:
        source = f"layer {name!r}"
        found: list[str] = []
        raw_czyx = _raw_as_czyx(np.asarray(raw), source, nchannel, found)
        label = np.asarray(label)
        costmap = np.ones(label.shape, np.float32) if costmap is None else np.asarray(costmap)
        check_label_array(label, source, nclass, ignore_index, found)
        check_costmap_array(costmap, source, found)
        check_shapes(raw_czyx, label, costmap, source, source, size_out, found)
        problems += found
        if not found:
            images.append(_training_image(name, raw_czyx, label, costmap, source, ignore_index))
    if problems:
        raise DataError(problems)
    return images


def write_training_image(
    folder: str | Path,
    name: str,
    raw: np.ndarray,
    label: np.ndarray,
    costmap: np.ndarray,
    voxel_size: tuple[float, float, float] | None = None,
) -> tuple[Path, Path, Path]:
    """Write ``NAME.ome.tif`` (float32), ``NAME_GT.ome.tif`` (uint8), ``NAME_CM.ome.tif`` (float32).

    ``raw`` is ZYX or CZYX; label and cost map are ZYX. Returns the three paths. The raw image
    is written as given: a CZYX array with more channels than slices would read back as ZCYX.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    raw = np.asarray(raw, dtype=np.float32)
    label = np.asarray(label)
    # uint8 unless an ignore_index outside 0..255 (e.g. -100) is in the labels.
    fits_uint8 = label.size == 0 or (label.min() >= 0 and label.max() <= 255)
    label = label.astype(np.uint8 if fits_uint8 else np.int32, copy=False)
    raw_axes = {3: "ZYX", 4: "CZYX"}.get(raw.ndim)
    if raw_axes is None:
        raise ValueError(f"{name}: raw must be ZYX or CZYX, got {raw.ndim}-D shape {raw.shape}")
    paths = (
        folder / f"{name}{RAW_SUFFIX}",
        folder / f"{name}{GT_SUFFIX}",
        folder / f"{name}{CM_SUFFIX}",
    )
    _write_ome(paths[0], raw, raw_axes, False, voxel_size)
    # Labels and cost maps are mostly constant: zlib shrinks them many times over.
    _write_ome(paths[1], label, "ZYX", True, voxel_size)
    _write_ome(paths[2], np.asarray(costmap, dtype=np.float32), "ZYX", True, voxel_size)
    return paths


def _write_ome(path: Path, array: np.ndarray, axes: str, compress: bool, voxel_size=None) -> None:
    """Write one OME-TIFF atomically; its UUID comes from name and content, so equal data gives
    equal bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha1(path.name.encode())
    digest.update(memoryview(array).cast("B"))
    metadata = {"axes": axes, "UUID": f"urn:uuid:{UUID(bytes=digest.digest()[:16], version=5)}"}
    metadata.update(physical_size(voxel_size))
    compression = "zlib" if compress else None
    write_atomically(
        path,
        lambda fh: tifffile.imwrite(
            fh, array, ome=True, metadata=metadata, compression=compression
        ),
    )


# --------------------------------------------------------------------------- folder reading


def _read_folder(
    folder: str | Path,
    nchannel: int,
    nclass: int,
    size_out: Sequence[int],
    ignore_index: int | None,
    keep: bool,
) -> tuple[list[str], list[TrainingImage]]:
    """(problems, images); images are kept only when ``keep`` so checking holds one at a time."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        return [f"{folder}: the training folder does not exist"], []
    if not folder.is_dir():
        return [f"{folder}: is a file, not a folder"], []
    from .zarr_folder import GT_ZARR, read_stored_image, stored_gt_paths

    gt_paths = sorted([*folder.glob(f"*{GT_SUFFIX}"), *stored_gt_paths(folder)])
    if not gt_paths:
        return [
            f"{folder}: no training images: the folder holds no *{GT_SUFFIX} file "
            f"(nor *{GT_ZARR} store)"
        ], []
    problems: list[str] = []
    images: list[TrainingImage] = []
    for gt_path in gt_paths:
        # an OME-Zarr image stays in its store, read patch by patch
        read = read_stored_image if gt_path.name.endswith(GT_ZARR) else _read_image
        image, found = read(gt_path, nchannel, nclass, size_out, ignore_index)
        problems += found
        if keep and image is not None:
            images.append(image)
    return problems, images


def _read_image(
    gt_path: Path, nchannel: int, nclass: int, size_out: Sequence[int], ignore_index: int | None
) -> tuple[TrainingImage | None, list[str]]:
    """Read and check one triple named by its ground-truth file."""
    name = gt_path.name[: -len(GT_SUFFIX)]
    raw_path = gt_path.with_name(f"{name}{RAW_SUFFIX}")
    cm_path = gt_path.with_name(f"{name}{CM_SUFFIX}")
    problems: list[str] = []
    for path, role in ((raw_path, "raw image"), (cm_path, "cost map")):
        if not path.is_file():
            problems.append(f"{path}: missing: the {role} that goes with {gt_path.name}")
    if problems:
        return None, problems
    raw = _read_tiff(raw_path, problems)
    label = _read_tiff(gt_path, problems)
    costmap = _read_tiff(cm_path, problems)
    if raw is None or label is None or costmap is None:
        return None, problems
    raw = _raw_as_czyx(raw, str(raw_path), nchannel, problems)
    if label.ndim != 3:
        problems.append(f"{gt_path}: ground truth is {label.ndim}-D {label.shape}; expected ZYX")
    if costmap.ndim != 3:
        problems.append(f"{cm_path}: cost map is {costmap.ndim}-D {costmap.shape}; expected ZYX")
    check_label_array(label, str(gt_path), nclass, ignore_index, problems)
    check_costmap_array(costmap, str(cm_path), problems)
    check_shapes(raw, label, costmap, str(gt_path), str(cm_path), size_out, problems)
    if problems:
        return None, problems
    image = _training_image(name, raw, label, costmap, str(raw_path), ignore_index)
    return replace(image, voxel_size=voxel_size_of(raw_path)), []


def _read_tiff(path: Path, problems: list[str]) -> np.ndarray | None:
    """The first series of a TIFF file, or None with a problem noted."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.series[0].asarray()
    except Exception as exc:  # tifffile raises many kinds for damaged files; all mean "unreadable"
        problems.append(f"{path}: cannot be read as a TIFF file ({type(exc).__name__}: {exc})")
        return None


# --------------------------------------------------------------------------- checks


def _raw_as_czyx(
    raw: np.ndarray, source: str, nchannel: int, problems: list[str]
) -> np.ndarray | None:
    """ZYX -> CZYX; 4-D is CZYX unless its first axis is longer than its second (then ZCYX)."""
    if raw.ndim == 3:
        raw = raw[np.newaxis]
    elif raw.ndim == 4:
        if raw.shape[0] > raw.shape[1]:
            raw = raw.transpose(1, 0, 2, 3)
    else:
        problems.append(
            f"{source}: raw image is {raw.ndim}-D {raw.shape}; expected ZYX or CZYX (3-D or 4-D)"
        )
        return None
    if raw.shape[0] != nchannel:
        problems.append(
            f"{source}: raw image has {raw.shape[0]} channel(s) (CZYX shape {raw.shape}) "
            f"but nchannel is {nchannel}"
        )
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        count = raw.size - np.count_nonzero(np.isfinite(raw))
        problems.append(f"{source}: raw image has {count} NaN or infinite value(s)")
    elif raw.dtype.kind not in "fiub":
        problems.append(f"{source}: raw image has data type {raw.dtype}; expected numbers")
    return raw


def _training_image(
    name: str,
    raw: np.ndarray,
    label: np.ndarray,
    costmap: np.ndarray,
    source: str,
    ignore_index: int | None,
) -> TrainingImage:
    """Convert checked arrays to the dtypes training uses."""
    return TrainingImage(
        name=name,
        raw=np.ascontiguousarray(raw, dtype=np.float32),
        label=np.ascontiguousarray(label, dtype=label_dtype(ignore_index)),
        costmap=np.ascontiguousarray(costmap, dtype=np.float32),
        source=source,
    )
