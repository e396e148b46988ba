"""From a probability map to instance labels: a threshold, then components or a seeded watershed.

The networks predict a probability per voxel; counting or measuring cells needs one integer label
per object. Two recipes cover the two models:

- ``components``: every connected piece of ``probability > threshold`` is one object. Right for
  thin structures (filaments, membranes), which a distance-transform watershed would cut into
  beads, and which rarely touch each other.
- ``watershed``: seeds at the maxima of the (smoothed) distance to the background, or of the
  (smoothed) probability, flooded within the mask. Right for round objects such as nuclei, which
  touch and merge into one component at any threshold.

Both end by removing objects smaller than ``min_size`` and relabelling 1..N (uint32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

from ..errors import UserInputError

METHODS = ("watershed", "components")
SEED_SOURCES = ("distance", "probability")

__all__ = [
    "InstanceError",
    "InstanceParams",
    "connected_components",
    "default_params",
    "label_instances",
]


class InstanceError(UserInputError, ValueError):
    """Instance parameters or a probability map that cannot be turned into labels."""


@dataclass(frozen=True)
class InstanceParams:
    """How to turn a probability map into instance labels.

    Parameters
    ----------
    threshold
        Voxels with ``probability > threshold`` are foreground.
    method
        ``"watershed"`` (seeded, separates touching round objects) or ``"components"``
        (connected pieces of the mask, corners included).
    seeds
        For the watershed: ``"distance"`` puts seeds at maxima of the distance to the
        background (one per round object whatever its brightness), ``"probability"`` at maxima
        of the probability (for objects the network predicts with a dip between them).
    min_distance
        The smallest distance between two seeds, in voxels of the finest axis; along coarser
        axes it is scaled by ``spacing`` so the separation is the same physical distance.
    min_size
        Objects with fewer voxels are removed (specks of noise).
    spacing
        Voxel size (z, y, x) in any unit: the distance transform and the seed separation use it,
        so anisotropic stacks (z steps larger than pixels) give round distances.
    smoothing
        Gaussian sigma (voxels of the finest axis, scaled like ``min_distance``) applied to the
        seed map before looking for maxima: it removes the ridges and plateaus of the distance
        transform that would otherwise give several seeds per object. 0 turns it off.
    """

    threshold: float = 0.5
    method: Literal["watershed", "components"] = "watershed"
    seeds: Literal["distance", "probability"] = "distance"
    min_distance: int = 5
    min_size: int = 50
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    smoothing: float = 1.0

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise InstanceError("; ".join(problems))


def _problems(params: InstanceParams) -> list[str]:
    problems = []
    if not 0.0 <= params.threshold < 1.0:
        problems.append(f"threshold must be in [0, 1), got {params.threshold}")
    if params.method not in METHODS:
        problems.append(f"method must be one of {', '.join(METHODS)}, got {params.method!r}")
    if params.seeds not in SEED_SOURCES:
        problems.append(f"seeds must be one of {', '.join(SEED_SOURCES)}, got {params.seeds!r}")
    if params.min_distance < 1:
        problems.append(f"min_distance must be >= 1 voxel, got {params.min_distance}")
    if params.min_size < 0:
        problems.append(f"min_size must be >= 0 voxels, got {params.min_size}")
    if not params.spacing or any(not (s > 0 and math.isfinite(s)) for s in params.spacing):
        problems.append(f"spacing must be positive voxel sizes, got {params.spacing}")
    if params.smoothing < 0:
        problems.append(f"smoothing must be >= 0, got {params.smoothing}")
    return problems


# Why these defaults: unet_xy segments thin structures (filaments, membranes) whose distance
# transform is a flat ridge one or two voxels high; a watershed on it would cut each filament
# into beads, while such structures seldom touch, so connected components are the objects.
# unet_xy_zoom is used for larger, round objects (nuclei) that touch one another and merge into
# one component at any threshold; one seed per distance-transform maximum separates them. Its
# min_distance (5) and min_size (50) fit nuclei some 8-15 voxels across, as in the GoNuclear
# crop in bench/bench_instances.py.
_DEFAULTS = {
    "unet_xy": InstanceParams(method="components", min_size=10),
    "unet_xy_zoom": InstanceParams(method="watershed", seeds="distance", min_distance=5),
}


def default_params(model_name: str) -> InstanceParams:
    """The instance recipe that suits what ``model_name`` is used for (see ``_DEFAULTS``).

    Parameters
    ----------
    model_name
        ``"unet_xy"`` (thin structures: connected components, small ``min_size``) or
        ``"unet_xy_zoom"`` (nuclei: a watershed seeded from the distance transform).

    Raises
    ------
    InstanceError
        For a model name with no default.
    """
    try:
        return _DEFAULTS[model_name]
    except KeyError:
        known = ", ".join(_DEFAULTS)
        raise InstanceError(
            f"no instance defaults for model {model_name!r} (known: {known})"
        ) from None


def connected_components(mask: np.ndarray) -> np.ndarray:
    """Labels (int32, 1..N) of the connected pieces of a boolean ``mask``, corners included.

    Full connectivity (26 neighbours in 3-D) keeps a thin diagonal structure in one piece;
    evaluation uses the same rule for predictions that carry no labels of their own.
    """
    structure = ndi.generate_binary_structure(mask.ndim, mask.ndim)
    labels, _ = ndi.label(mask, structure=structure, output=np.int32)
    return labels


def label_instances(probability: np.ndarray, params: InstanceParams | None = None) -> np.ndarray:
    """Instance labels (uint32, 0 = background, 1..N) of a probability map.

    Parameters
    ----------
    probability
        (Z, Y, X) probabilities in [0, 1] (float32 preferred; any real dtype works).
    params
        The recipe; ``InstanceParams()`` (a distance-seeded watershed) when omitted.

    Returns
    -------
    numpy.ndarray
        uint32 labels of the same shape, numbered 1..N without gaps.
    """
    params = params or InstanceParams()
    probability = np.asarray(probability)
    _check_probability(probability, params.spacing)
    mask = probability > params.threshold
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.uint32)
    if params.method == "components":
        labels = connected_components(mask)
    else:
        labels = _watershed(probability, mask, params)
    return _finish(labels, params.min_size)


def _check_probability(probability: np.ndarray, spacing: Sequence[float]) -> None:
    if probability.dtype.kind not in "biuf":
        raise InstanceError(f"a probability map must be numeric, got dtype {probability.dtype}")
    if probability.ndim != len(spacing):
        raise InstanceError(
            f"a probability map of shape {probability.shape} needs {probability.ndim} spacing "
            f"values, got {tuple(spacing)}"
        )


def _axis_scale(spacing: Sequence[float]) -> np.ndarray:
    """Per-axis factor from "voxels of the finest axis" to voxels of each axis."""
    spacing = np.asarray(spacing, dtype=float)
    return spacing.min() / spacing


def _watershed(probability: np.ndarray, mask: np.ndarray, params: InstanceParams) -> np.ndarray:
    surface = _seed_map(probability, mask, params)
    markers = _markers(surface, params)
    # Flooding the negated seed map fills each object from its seed down to the background; the
    # mask stops it there, so no label leaks outside the foreground.
    labels = watershed(np.negative(surface, out=surface), markers, mask=mask)
    return _label_unseeded(labels, mask)


def _seed_map(probability: np.ndarray, mask: np.ndarray, params: InstanceParams) -> np.ndarray:
    """float32 map whose maxima are the seeds: distance to the background, or probability."""
    if params.seeds == "distance":
        # The EDT is float64 by necessity; keep it only long enough to halve it to float32.
        surface = ndi.distance_transform_edt(mask, sampling=params.spacing).astype(np.float32)
    else:
        surface = np.where(mask, probability, 0).astype(np.float32, copy=False)
    if params.smoothing > 0:
        sigma = params.smoothing * _axis_scale(params.spacing)
        surface = ndi.gaussian_filter(surface, sigma=sigma, output=np.float32)
        surface[~mask] = 0  # smoothing must not lift the background into seeds
    return surface


def _markers(surface: np.ndarray, params: InstanceParams) -> np.ndarray:
    """int32 markers, one per cluster of local maxima of ``surface`` inside the foreground."""
    half = np.maximum(1, np.rint(params.min_distance * _axis_scale(params.spacing)).astype(int))
    footprint = np.ones(tuple(2 * half + 1), dtype=bool)
    # min_distance=1 leaves the separation to the anisotropic footprint alone (a larger value
    # would also impose an isotropic spacing in voxels); exclude_border=False keeps the seeds of
    # objects cut by the image edge.
    peaks = peak_local_max(
        surface, min_distance=1, footprint=footprint, threshold_abs=0.0, exclude_border=False
    )
    is_peak = np.zeros(surface.shape, dtype=bool)
    is_peak[tuple(peaks.T)] = True
    # Equal maxima side by side (a plateau) are one seed, not several.
    markers, _ = ndi.label(is_peak, structure=np.ones((3,) * surface.ndim), output=np.int32)
    return markers


def _label_unseeded(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give a label to foreground pieces the watershed left at 0 because no seed fell in them."""
    unseeded = mask & (labels == 0)
    if not unseeded.any():
        return labels
    extra = connected_components(unseeded)
    offset = int(labels.max())
    labels[unseeded] = extra[unseeded] + offset
    return labels


def _finish(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects under ``min_size`` voxels, then number the rest 1..N as uint32."""
    if min_size > 1 and labels.max() > 0:
        too_small = np.bincount(labels.ravel()) < min_size
        too_small[0] = False
        labels[too_small[labels]] = 0
    relabelled, _, _ = relabel_sequential(labels)
    return relabelled.astype(np.uint32, copy=False)
