"""What to tell a user about their training data before a run spends minutes on it.

Errors stop the run (nothing to learn from); warnings are shown and the run goes on: too little
structure, labels that do not go with the image, raw values that were never normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .folder import DataError, TrainingImage
from .zarr_folder import sampled, slabs

LITTLE_STRUCTURE = 0.001  # share of the counted voxels
MOSTLY_STRUCTURE = 0.9
UNRELATED = 0.05  # |AUC - 0.5| below this: the labels hardly follow the intensity
NOISE_LIKE = 0.05  # neighbour correlation below this: the raw is noise
SAMPLE = 20_000


def check_trainable(images: Sequence[TrainingImage]) -> None:
    """DataError when no voxel counts in the loss (every cost map is 0 everywhere); a stored
    image's cost map is read slab by slab."""
    counted = [sum(int(np.count_nonzero(s > 0)) for s in slabs(im.costmap)) for im in images]
    if images and not any(counted):
        names = ", ".join(im.source for im in images[:3])
        raise DataError(
            [
                f"{names}: the cost map is 0 everywhere: no voxel counts in the loss, nothing to learn"
            ]
        )


def data_warnings(images: Sequence[TrainingImage], as_given: bool) -> list[str]:
    """One line per thing worth a warning; ``as_given``: the raw was not normalised by us.

    A stored (OME-Zarr) image is judged by a sample of its planes (:func:`.zarr_folder.sampled`).
    """
    images = [sampled(im) for im in images]
    warnings = []
    for image in images:
        if not np.count_nonzero(image.costmap > 0):
            warnings.append(f"{image.source}: its cost map is 0 everywhere; it teaches nothing")
    counted = sum(int(np.count_nonzero(im.costmap > 0)) for im in images)
    structure = sum(int(np.count_nonzero((im.label > 0) & (im.costmap > 0))) for im in images)
    share = structure / counted if counted else 0.0
    if counted and share < LITTLE_STRUCTURE:
        warnings.append(
            f"only {share:.3%} of the counted voxels are structure: the model will mostly learn "
            "background; paint more structure, or set foreground_share (e.g. 0.5)"
        )
    elif share > MOSTLY_STRUCTURE:
        warnings.append(
            f"{share:.0%} of the counted voxels are structure: are background (0) and structure "
            "swapped in the labels?"
        )
    separation = intensity_separation(images)
    if separation is not None and abs(separation - 0.5) < UNRELATED:
        warnings.append(
            f"the labels hardly follow the image's intensity (AUC {separation:.2f}, 0.5 = none): "
            "are they the labels of this image, and aligned with it?"
        )
    for image in images:
        correlation = neighbour_correlation(image.raw[0])
        if correlation is not None and correlation < NOISE_LIKE:
            warnings.append(
                f"{image.source}: neighbouring voxels are uncorrelated ({correlation:.3f}): the "
                "raw looks like noise, not a microscope image; was it converted from 16 to 8 "
                "bits with the values wrapped around (a cast instead of a rescale)?"
            )
    if as_given:
        low = min(float(im.raw.min()) for im in images)
        high = max(float(im.raw.max()) for im in images)
        if high > 10 or low < -10:
            warnings.append(
                f"the raw images span {low:g} to {high:g}, far from [0, 1]: they look "
                "unnormalised; set normalization (e.g. 20: percentiles) or normalise the files"
            )
    return warnings


def neighbour_correlation(raw: np.ndarray, crop: int = 64) -> float | None:
    """The largest correlation between neighbouring voxels along z, y or x (of a central crop).

    Any microscope image is blurred by its optics, so neighbours correlate strongly (0.5-0.99);
    near 0 means the values are noise. None for an image too small or flat to tell.
    """
    box = tuple(slice(max(0, n // 2 - crop // 2), n // 2 + crop // 2) for n in raw.shape)
    part = np.asarray(raw[box], dtype=np.float64)
    part = part - part.mean()
    var = float((part * part).mean())
    if var == 0 or part.size < 1000:
        return None
    found = []
    for axis in range(part.ndim):
        if part.shape[axis] < 2:
            continue
        a = np.take(part, range(part.shape[axis] - 1), axis=axis)
        b = np.take(part, range(1, part.shape[axis]), axis=axis)
        found.append(float((a * b).mean()) / var)
    return max(found) if found else None


def intensity_separation(images: Sequence[TrainingImage], seed: int = 0) -> float | None:
    """AUC of the first channel's intensity between structure and background voxels.

    1 or 0: intensity alone tells them apart; 0.5: it tells nothing. None without both kinds.
    """
    rng = np.random.default_rng(seed)
    structure, background = [], []
    for image in images:
        counted = image.costmap > 0
        raw = image.raw[0]
        structure.append(_sample(raw[counted & (image.label > 0)], rng))
        background.append(_sample(raw[counted & (image.label == 0)], rng))
    s, b = np.concatenate(structure), np.sort(np.concatenate(background))
    if not s.size or not b.size:
        return None
    below = np.searchsorted(b, s, side="left")
    ties = np.searchsorted(b, s, side="right") - below
    return float((below + 0.5 * ties).sum() / (s.size * b.size))


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= SAMPLE else rng.choice(values, SAMPLE, replace=False)
