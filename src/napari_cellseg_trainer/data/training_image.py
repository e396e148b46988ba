"""A training image as the rest of the code sees it, the error of unusable training data, and
the type its labels are held in: shared by folders of TIFFs (:mod:`.folder`) and of OME-Zarr
stores (:mod:`.zarr_folder`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProblemsError


@dataclass(frozen=True, eq=False)
class TrainingImage:
    """One training image, checked and converted.

    Attributes
    ----------
    name : the image's name (``NAME`` of ``NAME.ome.tif``, or a layer name).
    raw : (C, Z, Y, X) float32, normalised to about [0, 1].
    label : (Z, Y, X) class labels, uint8 (int32 only for an ignore_index outside 0..255).
    costmap : (Z, Y, X) float32 per-voxel loss weight, >= 0.
    source : where it came from (a file path or a layer name), for messages.
    normalized_by : the normalisation recipe applied to ``raw`` here, or None: as given.
    voxel_size : (z, y, x) micrometres, when the file or layer says.
    """

    name: str
    raw: np.ndarray
    label: np.ndarray
    costmap: np.ndarray
    source: str
    normalized_by: int | None = None
    voxel_size: tuple[float, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (Z, Y, X) shape shared by raw, label and cost map."""
        return tuple(self.label.shape)  # type: ignore[return-value]


class DataError(ProblemsError, ValueError):
    """Training data that cannot be used; carries every problem found, one line each."""

    what = "problem(s) in the training data"


# --------------------------------------------------------------------------- public API


def label_dtype(ignore_index: int | None) -> type[np.integer]:
    """uint8 holds any class label; only an ignore_index outside 0..255 needs more."""
    if ignore_index is None or 0 <= ignore_index <= 255:
        return np.uint8
    return np.int32
