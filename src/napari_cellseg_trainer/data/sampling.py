"""How patches are drawn beyond the established uniform corners, and intensity augmentation.

All are off by default (the established sampling). ``foreground_share`` centres that share of
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


@dataclass(frozen=True)
class Sampling:
    """How a buffer's patches are drawn and varied.

    ``acquisition``: a normalisation recipe id: each image is changed as a next acquisition
    might record it (:func:`.intensity.acquisition_change`) and normalised again by that recipe,
    once per buffer, or once per patch with ``per_patch``. None: images as they are.
    """

    foreground_share: float = 0.0
    intensity: bool = False
    acquisition: int | None = None
    per_patch: bool = False


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
