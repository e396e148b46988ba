"""How patches are drawn beyond the established uniform corners, and intensity augmentation.

Both are off by default (the established sampling). ``foreground_share`` centres that share of
each image's patches on a random structure voxel (label > 0 where the cost map counts), so a
sparse structure is seen in most batches instead of a few. ``intensity`` varies each raw patch
in float: contrast, brightness, gamma and noise, so the model learns shapes rather than one
image's exposure. Label and cost map are never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Ranges of the intensity augmentation, for raw normalised to about [0, 1].
CONTRAST = (0.75, 1.33)
BRIGHTNESS = 0.1
GAMMA = (0.7, 1.4)
NOISE = 0.04

# Ranges of the acquisition change (a whole raw image, before normalisation): what a next
# stack of the same sample may look like on another day or with another laser power.
GAIN = (0.5, 2.0)
OFFSET = 0.2  # of the image's range, at most
STRUCTURE_CONTRAST = (0.6, 1.5)  # the structure's brightness over its background, relative
SPECKS = (0.001, 0.01)  # share of voxels set to the saturation level, when there are specks
SPECK_CHANCE, STRIPE_CHANCE, BLOB_CHANCE = 0.25, 0.15, 0.15


@dataclass(frozen=True)
class Sampling:
    foreground_share: float = 0.0
    intensity: bool = False


ESTABLISHED = Sampling()  # uniform corners, no intensity change: the established trainer's


def patch_corners(
    label: np.ndarray,
    costmap: np.ndarray,
    size_out: Sequence[int],
    count: int,
    share: float,
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    """``count`` output-patch corners inside the (augmented) image.

    The first ``round(share * count)`` are centred on random structure voxels (when there are
    any), the others uniform, drawn exactly as the established sampling draws them.
    """
    centred = round(share * count)
    structure = np.flatnonzero((label > 0) & (costmap > 0)) if centred else np.empty(0)
    if structure.size == 0:
        centred = 0
    high = [s - o for s, o in zip(label.shape, size_out, strict=True)]
    corners = []
    for k in range(count):
        if k < centred:
            centre = np.unravel_index(structure[rng.integers(structure.size)], label.shape)
            corner = tuple(
                int(min(max(c - o // 2, 0), h))
                for c, o, h in zip(centre, size_out, high, strict=True)
            )
        else:
            corner = tuple(int(rng.integers(h + 1)) for h in high)
        corners.append(corner)
    return corners


def vary_intensity(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random contrast, brightness and gamma change, plus Gaussian noise (float32, in place)."""
    low, high = float(raw.min()), float(raw.max())
    span = high - low if high > low else 1.0
    scaled = (raw - low) / span  # [0, 1] for the gamma
    np.power(scaled, rng.uniform(*GAMMA), out=scaled)
    raw[...] = scaled * span + low
    raw *= rng.uniform(*CONTRAST)
    raw += rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    raw += rng.normal(0.0, rng.uniform(0, NOISE), raw.shape).astype(np.float32)
    return raw


def acquisition_change(
    raw: np.ndarray, rng: np.random.Generator, label: np.ndarray | None = None
) -> np.ndarray:
    """A raw image (Z, Y, X) as a next acquisition might record it: float32, not normalised.

    Gain, offset, gamma and, with a label, the structure's contrast over its background; some
    images get saturated specks, a bright stripe along x or a saturated blob. The label is not
    changed: these are changes of the light, not of the sample.
    """
    out = raw.astype(np.float32)
    low, high = float(out.min()), float(out.max())
    span = high - low if high > low else 1.0
    out -= np.float32(low)
    out /= np.float32(span)
    np.power(out, rng.uniform(*GAMMA), out=out)
    if label is not None and label.shape == out.shape and (label > 0).any():
        structure = label > 0
        background = float(np.median(out[~structure])) if (~structure).any() else 0.0
        out[structure] = background + (out[structure] - background) * rng.uniform(
            *STRUCTURE_CONTRAST
        )
    out *= np.float32(span * rng.uniform(*GAIN))
    out += np.float32(low + rng.uniform(0, OFFSET) * span)
    top = float(out.max())
    if rng.random() < SPECK_CHANCE:
        out[rng.random(out.shape) < rng.uniform(*SPECKS)] = top
    if rng.random() < STRIPE_CHANCE:
        y, width = int(rng.integers(out.shape[1])), int(rng.integers(1, 4))
        out[:, y : y + width] += np.float32(rng.uniform(0.2, 1.0) * span)
    if rng.random() < BLOB_CHANCE:
        centre = [int(rng.integers(n)) for n in out.shape]
        radius = rng.uniform(3, 10)
        box = tuple(slice(max(c - int(radius), 0), c + int(radius) + 1) for c in centre)
        grid = np.ogrid[box]
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
        out[box][inside] = top
    return out
