"""Reading microscopy images as (T, C, Z, Y, X) with their voxel size; writing results as OME-TIFF."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..files import write_atomically
from .lazy import ImageReadError, LazyCZYX, VoxelSize, normalise_axes, require_zarr

TIFF_SUFFIXES = (".tif", ".tiff")
BIOIO_SUFFIXES = (".czi", ".nd2", ".lif", ".zarr")  # .zarr (OME-Zarr) also reads without bioio


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


def read_microscopy(path: str | Path, header_only: bool = False, level: int = 0) -> MicroscopyImage:
    """The image at ``path`` with its voxel size (OME PhysicalSize, ImageJ spacing, OME-Zarr
    scale).

    TIFF and OME-TIFF are read with tifffile, using the axes the file declares; OME-Zarr (its
    resolution ``level``) and plain zarr arrays with zarr (:mod:`.zarr_images`); CZI, ND2 and
    LIF go through bioio when its extra is installed (``pip install napari-cellseg-trainer[bioio]``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES) and path.is_file():
        return _read_tiff(path, header_only)
    from .zarr_images import is_zarr

    if is_zarr(path):
        return _read_zarr(path, header_only, level)
    if name.endswith(BIOIO_SUFFIXES):
        return _read_bioio(path, header_only)
    raise ImageReadError(
        f"{path}: unsupported file type; use TIFF/OME-TIFF, OME-Zarr or zarr, or CZI/ND2/LIF with "
        "the bioio extra"
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
    axes = normalise_axes(axes, shape, source)
    sizes = dict(zip(axes, shape, strict=True))
    return tuple(int(sizes.get(a, 1)) for a in "TCZYX")


def to_tczyx(data: np.ndarray, axes: str, source: str | Path = "") -> np.ndarray:
    """Rearrange ``data`` with named ``axes`` (e.g. ``ZCYX``, ``QYX``) to (T, C, Z, Y, X)."""
    axes = normalise_axes(axes, data.shape, source)
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


def _read_zarr(path: Path, header_only: bool, level: int = 0) -> MicroscopyImage:
    """An OME-Zarr (one level) or a zarr array through zarr itself, all time points."""
    lazy, voxel = open_lazy(path, level)
    axes = lazy.axes
    times = int(dict(zip(axes, lazy.array.shape, strict=True)).get("T", 1))
    shape = (times, *lazy.shape)
    if header_only:
        return MicroscopyImage(path, shape, None, voxel)  # type: ignore[arg-type]
    data = np.stack([LazyCZYX(lazy.array, axes, t)[:] for t in range(times)])
    return MicroscopyImage(path, shape, data, voxel)  # type: ignore[arg-type]


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
        raise ImageReadError(_bioio_failure(path, err)) from None
    return MicroscopyImage(path, shape, data, voxel)  # type: ignore[arg-type]


BIOIO_PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif"}


def _bioio_failure(path: Path, err: Exception) -> str:
    """One line for what bioio could not do: the plugin to install, or its first line."""
    if type(err).__name__ == "UnsupportedFileFormatError":
        plugin = BIOIO_PLUGINS.get(path.suffix.lower(), "the bioio reader for this format")
        return (
            f"{path}: no installed bioio reader opens it (not a {path.suffix} file, or {plugin} "
            f"is missing: pip install {plugin})"
        )
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{path}: bioio could not read it ({first[:200]})"


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


# --------------------------------------------------------------------------- lazy volumes


def open_lazy(path: str | Path, level: int = 0) -> tuple[LazyCZYX, VoxelSize | None]:
    """A zarr (OME-Zarr at ``level``, or a plain array) or TIFF image opened without reading
    its pixels, and its voxel size. A TIFF is read through tifffile's zarr store."""
    zarr = require_zarr()

    path = Path(path).expanduser()
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    from .zarr_images import is_zarr, open_zarr

    if is_zarr(path):
        return open_zarr(path, level)
    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes
            voxel = _tiff_voxel_size(tif)
        store = tifffile.imread(path, aszarr=True)
        return LazyCZYX(zarr.open(store, mode="r"), axes, closer=store.close), voxel
    except ImageReadError:
        raise
    except Exception as err:  # tifffile raises many kinds for what it cannot open
        raise ImageReadError(f"{path}: cannot be opened lazily ({err})") from None


def channel_names(path: str | Path) -> list[str]:
    """The channel names a file records (OME metadata, bioio), [] when it records none."""
    path = Path(path).expanduser()
    try:
        if path.name.lower().endswith(TIFF_SUFFIXES):
            with tifffile.TiffFile(path) as tif:
                if not tif.ome_metadata:
                    return []
                image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
                image = image[0] if isinstance(image, list) else image
                channels = image["Pixels"].get("Channel", [])
                channels = channels if isinstance(channels, list) else [channels]
                return [str(c.get("Name", "")) for c in channels]
        if path.name.lower().endswith(".zarr"):
            from .zarr_images import zarr_channel_names

            return zarr_channel_names(path)
        if importlib.util.find_spec("bioio") is not None:
            from bioio import BioImage

            return [str(n) for n in BioImage(path).channel_names]
    except Exception:  # no names to offer: the caller says so
        return []
    return []
