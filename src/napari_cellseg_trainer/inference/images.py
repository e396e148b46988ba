"""Reading microscopy images as (T, C, Z, Y, X) float32 and writing results as OME-TIFF."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import tifffile

from ..errors import UserInputError

TIFF_SUFFIXES = (".tif", ".tiff")
BIOIO_SUFFIXES = (".czi", ".nd2", ".lif", ".zarr")


class ImageReadError(UserInputError, ValueError):
    """An input image that cannot be read; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as a (T, C, Z, Y, X) array (its own dtype).

    TIFF and OME-TIFF are read with tifffile, using the axes the file declares; CZI, ND2 and
    LIF go through bioio when its extra is installed (``pip install napari-cellseg-trainer[bioio]``).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES):
        return _read_tiff(path)
    if name.endswith(BIOIO_SUFFIXES):
        return _read_bioio(path)
    raise ImageReadError(
        f"{path}: unsupported file type; use TIFF/OME-TIFF, or CZI/ND2/LIF with the bioio extra"
    )


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes.upper()
    except Exception as err:  # tifffile raises many types for damaged files
        raise ImageReadError(f"{path}: not a readable TIFF ({err})") from None
    return to_tczyx(data, axes, path)


def to_tczyx(data: np.ndarray, axes: str, source: str | Path = "") -> np.ndarray:
    """Rearrange ``data`` with named ``axes`` (e.g. ``ZCYX``, ``QYX``) to (T, C, Z, Y, X)."""
    axes = axes.replace("Q", "Z").replace("I", "Z").replace("S", "C")
    if len(set(axes)) != len(axes) or not set(axes) <= set("TCZYX"):
        raise ImageReadError(f"{source}: cannot interpret image axes {axes!r} (shape {data.shape})")
    if not {"Y", "X"} <= set(axes):
        raise ImageReadError(f"{source}: an image needs Y and X axes, got {axes!r}")
    for axis in "TCZYX":
        if axis not in axes:
            data = data[np.newaxis]
            axes = axis + axes
    return np.transpose(data, [axes.index(a) for a in "TCZYX"])


def _read_bioio(path: Path) -> np.ndarray:
    if importlib.util.find_spec("bioio") is None:
        raise ImageReadError(
            f"{path}: reading {path.suffix} files needs bioio: pip install 'napari-cellseg-trainer[bioio]' "
            "plus the bioio reader for the format (e.g. bioio-czi, bioio-nd2, bioio-lif)"
        )
    from bioio import BioImage

    try:
        return np.asarray(BioImage(path).get_image_data("TCZYX"))
    except Exception as err:  # the reader plugin's own errors
        raise ImageReadError(f"{path}: bioio could not read it ({err})") from None


def write_ome_tiff(path: str | Path, data: np.ndarray, axes: str = "ZYX") -> Path:
    """Write ``data`` as OME-TIFF (compressed), through a temp file so no half file remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, data, ome=True, metadata={"axes": axes}, compression="zlib")
    tmp.replace(path)
    return path
