"""The pieces of image reading that lazily read stores share: the (z, y, x) voxel size type, the
error of an unreadable image, axis names, a lazy (C, Z, Y, X) view and the zarr import."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserInputError

VoxelSize = tuple[float, float, float]  # (z, y, x) in micrometres


class ImageReadError(UserInputError, ValueError):
    """An input image that cannot be read; the message names the file."""


def normalise_axes(axes: str, shape: tuple[int, ...], source: Path | str) -> str:
    axes = axes.replace("Q", "Z").replace("I", "Z").replace("S", "C")
    if len(set(axes)) != len(axes) or not set(axes) <= set("TCZYX") or len(axes) != len(shape):
        raise ImageReadError(f"{source}: cannot interpret image axes {axes!r} (shape {shape})")
    if not {"Y", "X"} <= set(axes):
        raise ImageReadError(f"{source}: an image needs Y and X axes, got {axes!r}")
    return axes


class LazyCZYX:
    """A lazily read (C, Z, Y, X) view of one time point of a zarr-like array with named axes.

    Only the windows asked for are read, so a volume far larger than memory can be predicted
    block by block (``inference.chunked``). Axes missing from the source are added (length 1).
    """

    def __init__(self, array, axes: str, time_point: int = 0, closer=None) -> None:
        self.array, self.axes = array, normalise_axes(axes.upper(), tuple(array.shape), "array")
        self.time_point = time_point
        self._closer = closer
        sizes = dict(zip(self.axes, array.shape, strict=True))
        self.shape = tuple(int(sizes.get(a, 1)) for a in "CZYX")
        self.dtype = array.dtype
        self.ndim = 4

    def at_time(self, time_point: int) -> LazyCZYX:
        """The same array seen at another time point (the file stays open with this view)."""
        if time_point == self.time_point:
            return self
        return LazyCZYX(self.array, self.axes, time_point)

    def close(self) -> None:
        """Close the file behind the view (a TIFF read through its zarr store)."""
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> LazyCZYX:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(key) + (slice(None),) * (4 - len(key))
        wanted = dict(zip("CZYX", key, strict=True))
        index = tuple(self.time_point if a == "T" else wanted[a] for a in self.axes)
        block = np.asarray(self.array[index])
        kept = [a for a in self.axes if a != "T" and not isinstance(wanted[a], int)]
        for axis in "CZYX":  # add the axes the source lacks, where an index did not drop them
            if axis not in self.axes and not isinstance(wanted[axis], int):
                block = block[np.newaxis]
                kept.insert(0, axis)
        order = [kept.index(a) for a in "CZYX" if a in kept]
        return np.transpose(block, order)


def require_zarr():
    """The zarr module, or one line saying how to install it."""
    try:
        import zarr
    except ImportError:
        raise ImageReadError(
            "OME-Zarr and block-by-block prediction need the zarr extra: pip install "
            "'napari-cellseg-trainer[zarr]'"
        ) from None
    return zarr
