"""Reading microscopy images as (T, C, Z, Y, X) with their voxel size; writing results as OME-TIFF."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..errors import UserInputError
from ..files import write_atomically

TIFF_SUFFIXES = (".tif", ".tiff")
BIOIO_SUFFIXES = (".czi", ".nd2", ".lif", ".zarr")
VoxelSize = tuple[float, float, float]  # (z, y, x) in micrometres


class ImageReadError(UserInputError, ValueError):
    """An input image that cannot be read; the message names the file."""


@dataclass(frozen=True)
class MicroscopyImage:
    """An image file's pixels (T, C, Z, Y, X; None when only the header was read) and metadata."""

    path: Path
    shape: tuple[int, int, int, int, int]
    data: np.ndarray | None = None
    voxel_size: VoxelSize | None = None


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as a (T, C, Z, Y, X) array (its own dtype)."""
    return read_microscopy(path).data


def read_microscopy(path: str | Path, header_only: bool = False) -> MicroscopyImage:
    """The image at ``path`` with its voxel size (OME PhysicalSize, or ImageJ spacing).

    TIFF and OME-TIFF are read with tifffile, using the axes the file declares; CZI, ND2, LIF
    and OME-Zarr go through bioio when its extra is installed
    (``pip install napari-cellseg-trainer[bioio]``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES) and path.is_file():
        return _read_tiff(path, header_only)
    if name.endswith(BIOIO_SUFFIXES):
        return _read_bioio(path, header_only)
    raise ImageReadError(
        f"{path}: unsupported file type; use TIFF/OME-TIFF, or CZI/ND2/LIF with the bioio extra"
    )


def _read_tiff(path: Path, header_only: bool) -> MicroscopyImage:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            shape = tczyx_shape(series.shape, axes, path)
            voxel = _tiff_voxel_size(tif)
            if header_only:
                return MicroscopyImage(path, shape, None, voxel)
            data = series.asarray()
    except ImageReadError:
        raise
    except Exception as err:  # tifffile raises many types for damaged files
        raise ImageReadError(f"{path}: not a readable TIFF ({err})") from None
    return MicroscopyImage(path, shape, to_tczyx(data, axes, path), voxel)


def tczyx_shape(shape: tuple[int, ...], axes: str, source: Path | str) -> tuple:
    """The (T, C, Z, Y, X) shape an array of ``shape`` with ``axes`` becomes."""
    axes = _normalise_axes(axes, shape, source)
    sizes = dict(zip(axes, shape, strict=True))
    return tuple(int(sizes.get(a, 1)) for a in "TCZYX")


def _normalise_axes(axes: str, shape: tuple[int, ...], source: Path | str) -> str:
    axes = axes.replace("Q", "Z").replace("I", "Z").replace("S", "C")
    if len(set(axes)) != len(axes) or not set(axes) <= set("TCZYX") or len(axes) != len(shape):
        raise ImageReadError(f"{source}: cannot interpret image axes {axes!r} (shape {shape})")
    if not {"Y", "X"} <= set(axes):
        raise ImageReadError(f"{source}: an image needs Y and X axes, got {axes!r}")
    return axes


def to_tczyx(data: np.ndarray, axes: str, source: str | Path = "") -> np.ndarray:
    """Rearrange ``data`` with named ``axes`` (e.g. ``ZCYX``, ``QYX``) to (T, C, Z, Y, X)."""
    axes = _normalise_axes(axes, data.shape, source)
    for axis in "TCZYX":
        if axis not in axes:
            data = data[np.newaxis]
            axes = axis + axes
    return np.transpose(data, [axes.index(a) for a in "TCZYX"])


def voxel_size_of(path: str | Path) -> VoxelSize | None:
    """The voxel size a TIFF file declares, or None (also for unreadable files)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return _tiff_voxel_size(tif)
    except Exception:  # unreadable files are reported by the reader that needs their pixels
        return None


def _tiff_voxel_size(tif: tifffile.TiffFile) -> VoxelSize | None:
    """(z, y, x) micrometres from OME-XML, else ImageJ's spacing and the resolution tags."""
    if tif.ome_metadata:
        try:
            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
            sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
        except (KeyError, TypeError, IndexError, ValueError):
            sizes = [None, None, None]
        if sizes[1] is not None and sizes[2] is not None:
            return _voxel(sizes[0] if sizes[0] is not None else 1.0, sizes[1], sizes[2])
    if tif.imagej_metadata and "spacing" in tif.imagej_metadata:
        page = tif.pages.first
        try:
            x_res = page.tags["XResolution"].value
            y_res = page.tags["YResolution"].value
            x, y = x_res[1] / x_res[0], y_res[1] / y_res[0]
        except (KeyError, ZeroDivisionError, TypeError, IndexError):
            return None
        return _voxel(tif.imagej_metadata["spacing"], y, x)
    return None


def _voxel(z, y, x) -> VoxelSize | None:
    try:
        size = (float(z), float(y), float(x))
    except (TypeError, ValueError):
        return None
    return size if all(math.isfinite(v) and v > 0 for v in size) else None


def _read_bioio(path: Path, header_only: bool) -> MicroscopyImage:
    if importlib.util.find_spec("bioio") is None:
        raise ImageReadError(
            f"{path}: reading {path.suffix} files needs bioio: pip install "
            "'napari-cellseg-trainer[bioio]' plus the bioio reader for the format "
            "(e.g. bioio-czi, bioio-nd2, bioio-lif, bioio-ome-zarr)"
        )
    from bioio import BioImage

    try:
        image = BioImage(path)
        shape = tuple(int(v) for v in image.dims.shape)
        sizes = image.physical_pixel_sizes
        voxel = _voxel(sizes.Z or 1.0, sizes.Y, sizes.X) if sizes.Y and sizes.X else None
        data = None if header_only else np.asarray(image.get_image_data("TCZYX"))
    except Exception as err:  # the reader plugin's own errors
        raise ImageReadError(f"{path}: bioio could not read it ({err})") from None
    return MicroscopyImage(path, shape, data, voxel)  # type: ignore[arg-type]


def physical_size(voxel_size: VoxelSize | None) -> dict:
    """OME metadata for a voxel size (tifffile's keys), empty when it is unknown."""
    if voxel_size is None:
        return {}
    meta: dict = {}
    for axis, size in zip("ZYX", voxel_size, strict=True):
        meta[f"PhysicalSize{axis}"] = float(size)
        meta[f"PhysicalSize{axis}Unit"] = "µm"
    return meta


def write_ome_tiff(
    path: str | Path, data: np.ndarray, axes: str = "ZYX", voxel_size: VoxelSize | None = None
) -> Path:
    """Write ``data`` as OME-TIFF (compressed) with its voxel size, atomically."""
    metadata = {"axes": axes, **physical_size(voxel_size)}
    return write_atomically(
        path,
        lambda fh: tifffile.imwrite(fh, data, ome=True, metadata=metadata, compression="zlib"),
    )
