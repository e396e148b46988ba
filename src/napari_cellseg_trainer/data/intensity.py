"""Intensities of the next acquisition: how they change, and when a volume is out of range.

A model is trained on one stack and used on the next, recorded on another day, with another
laser power, or with a bright speck, a stripe or a saturated cell in the field. Two tools:

- :func:`acquisition_change` changes a whole raw image as such a next acquisition might (gain,
  offset, gamma, the structure's contrast, specks, a stripe, a saturated blob). Training with
  ``acquisition_augmentation`` applies it to each image before normalising it, once per buffer.
- :func:`saturation_warnings` tells, before a prediction, when the detector saturated over a
  good part of the volume (a quarter of it or more), recording structure and background as one.
- :class:`IntensityBand` is what the training raw looked like after normalisation (a few
  percentiles, over the images and the changes the augmentation made to them). A checkpoint
  records it; :meth:`IntensityBand.shift` tells, before a prediction, whether a volume lies
  outside it, in one line with the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..normalization import same_values, saturation

# Ranges of the acquisition change (a whole raw image, before normalisation).
GAIN = (0.5, 2.0)
OFFSET = 0.2  # of the image's range, at most
GAMMA = (0.7, 1.4)
STRUCTURE_CONTRAST = (0.6, 1.5)  # the structure's brightness over its background, relative
SPECKS = (0.001, 0.01)  # share of voxels set to the saturation level, when there are specks
SPECK_CHANCE, STRIPE_CHANCE, BLOB_CHANCE = 0.25, 0.15, 0.15

# The band's percentiles, and how far outside it a volume may lie before a warning (in units of
# the normalised range: recipes 20 and 21 map their two percentiles to 0 and 1).
BAND_PERCENTILES = (1.0, 50.0, 99.0)
TOLERANCE = 0.1
_SAMPLE = 1_000_000  # voxels a band's percentiles are taken from (strided)

# A prediction warns when at least this share of a channel's voxels lie at its maximum, piled up
# there (the detector saturated). On the ovule's training half, a 10-minute fine-tune lost 0.002
# IoU with 10% of the voxels saturated, 0.024-0.029 with 20%, 0.060 with 29%, 0.089 with 34%
# and 0.257 with 51%, whether a gain or an offset saturated them: the loss passes 0.05 at
# about a quarter. A gain of 2 saturates 0.4% of nuclei_1135, and the augmentation's specks 1%
# at most (docs/training.md).
SATURATION_WARNING = 0.25


def acquisition_change(
    raw: np.ndarray, rng: np.random.Generator, label: np.ndarray | None = None
) -> np.ndarray:
    """A raw image (Z, Y, X) as a next acquisition might record it: float32, not normalised.

    Gain, offset, gamma and, with a label, the structure's contrast over its background; some
    images get saturated specks (up to 1% of voxels), a bright stripe along x or a saturated
    blob. Nothing exceeds the image's brightest voxel (taken as the detector's ceiling): a gain
    above 1 saturates the brightest structure. The label is not changed: these are changes of
    the light, not of the sample.
    """
    out = raw.astype(np.float32)
    low, high = float(out.min()), float(out.max())
    span = high - low if high > low else 1.0
    out -= np.float32(low)
    out /= np.float32(span)
    np.power(out, rng.uniform(*GAMMA), out=out)
    if label is not None and label.shape == out.shape:
        structure = label > 0
        if structure.any() and not structure.all():
            background = float(np.median(out[~structure]))
            factor = np.float32(rng.uniform(*STRUCTURE_CONTRAST))
            out[structure] = background + (out[structure] - background) * factor
    out *= np.float32(span * rng.uniform(*GAIN))
    out += np.float32(low + rng.uniform(0, OFFSET) * span)
    # the detector saturates: its ceiling taken as the image's brightest voxel (a well-exposed
    # acquisition), a brighter one records the brightest structure flat at that ceiling
    top = high if high > low else float(out.max())
    np.minimum(out, np.float32(top), out=out)
    if rng.random() < SPECK_CHANCE:
        out[rng.random(out.shape) < rng.uniform(*SPECKS)] = top
    if rng.random() < STRIPE_CHANCE:
        y, width = int(rng.integers(out.shape[1])), int(rng.integers(1, 4))
        stripe = out[:, y : y + width]
        stripe += np.float32(rng.uniform(0.2, 1.0) * span)
        np.minimum(stripe, np.float32(top), out=stripe)
    if rng.random() < BLOB_CHANCE:
        centre = [int(rng.integers(n)) for n in out.shape]
        radius = rng.uniform(3, 10)
        box = tuple(
            slice(max(c - int(radius), 0), min(c + int(radius) + 1, n))
            for c, n in zip(centre, out.shape, strict=True)
        )
        grid = np.ogrid[box]
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
        out[box][inside] = top
    return out


def saturation_warnings(raws: Sequence[np.ndarray]) -> list[str]:
    """A line for each raw channel (Z, Y, X, or its strided sample) with at least
    :data:`SATURATION_WARNING` of its voxels at its maximum, where they pile up: the detector
    saturated there and recorded structure and background as one value."""
    lines = []
    for c, raw in enumerate(raws):
        found = saturation(raw)
        if found is None or found[0] < SATURATION_WARNING:
            continue
        share, top = found
        where = f"channel {c}: " if len(raws) > 1 else ""
        lines.append(
            f"{where}{share:.0%} of this volume's voxels lie at its maximum ({top:g}): the "
            "detector saturated and recorded structure and background there as one value. The "
            "prediction may be poor: record the next volume with a lower gain or laser power"
        )
    return lines


def percentiles_of(normalized: np.ndarray) -> np.ndarray:
    """:data:`BAND_PERCENTILES` of a normalised image's first channel (a strided sample)."""
    flat = np.asarray(normalized[0] if normalized.ndim == 4 else normalized).reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    return np.percentile(sample, BAND_PERCENTILES)


@dataclass(frozen=True)
class IntensityBand:
    """The range of each of :data:`BAND_PERCENTILES` over the normalised training raw.

    ``low[i]`` and ``high[i]`` bound percentile ``BAND_PERCENTILES[i]`` over the training images
    as the augmentation varied them; ``recipe`` is the normalisation they went through.
    """

    recipe: int | None
    low: tuple[float, ...]
    high: tuple[float, ...]
    augmented: bool = False

    @classmethod
    def of(
        cls, normalized: Iterable[np.ndarray], recipe: int | None, augmented: bool = False
    ) -> IntensityBand:
        """The band of normalised images (C, Z, Y, X), e.g. the training images and their
        augmented versions."""
        found = np.array([percentiles_of(image) for image in normalized])
        return cls(
            recipe,
            tuple(float(v) for v in found.min(0)),
            tuple(float(v) for v in found.max(0)),
            augmented,
        )

    def to_extra(self) -> dict:
        """The checkpoint's ``extra["intensity"]`` (plain types)."""
        return {
            "recipe": self.recipe,
            "percentiles": list(BAND_PERCENTILES),
            "low": list(self.low),
            "high": list(self.high),
            "augmented": self.augmented,
        }

    @classmethod
    def from_extra(cls, extra: Mapping | None) -> IntensityBand | None:
        """The band a checkpoint recorded, or None (older checkpoints, another layout)."""
        info = extra.get("intensity") if isinstance(extra, Mapping) else None
        if not isinstance(info, Mapping) or list(info.get("percentiles", [])) != list(
            BAND_PERCENTILES
        ):
            return None
        try:
            low = tuple(float(v) for v in info["low"])
            high = tuple(float(v) for v in info["high"])
        except (KeyError, TypeError, ValueError):
            return None
        if len(low) != len(BAND_PERCENTILES) or len(high) != len(low):
            return None
        recipe = info.get("recipe")
        return cls(
            recipe if isinstance(recipe, int) else None, low, high, bool(info.get("augmented"))
        )

    def shift(self, normalized: np.ndarray, recipe: int | dict | None) -> str | None:
        """One line when ``normalized`` (normalised by ``recipe``) lies outside the band.

        None when it lies inside (within :data:`TOLERANCE`), or when the volume was normalised
        by another recipe than the training raw (the figures would not compare). Raw used as
        given in training (recipe None, about [0, 1]) compares with min-max (0), which
        prediction then applies; recipes 22, 24, 25 and 26 compare (24 is 22 after the stripes,
        25 24 with a saturated maximum kept bright, 26 25 where it lies well above the window).
        """
        if isinstance(recipe, dict):
            return None
        if not (same_values(recipe, self.recipe) or (self.recipe is None and recipe == 0)):
            return None
        found = percentiles_of(normalized)
        outside = []
        for p, value, low, high in zip(BAND_PERCENTILES, found, self.low, self.high, strict=True):
            if value < low - TOLERANCE or value > high + TOLERANCE:
                outside.append(
                    f"its {_ordinal(p)} percentile is {value:.2f} (training {low:.2f}-{high:.2f})"
                )
        if not outside:
            return None
        covered = "even with the augmentation the model was trained with" if self.augmented else ""
        return (
            f"this volume's intensities differ from the training data's {covered}".rstrip()
            + ": "
            + "; ".join(outside)
            + ". The prediction may be poor: add a labelled crop of this volume to the training "
            "data, or fine-tune on it"
        )


def _ordinal(p: float) -> str:
    whole = int(p)
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(
        whole % 10 if whole % 100 not in (11, 12, 13) else 0, "th"
    )
    return f"{whole}{suffix}"


def augmented_versions(
    raws: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    recipe: int,
    rng: np.random.Generator,
    count: int = 4,
) -> Iterator[np.ndarray]:
    """``count`` acquisition changes of each raw (C, Z, Y, X), normalised by ``recipe``, one
    at a time (a band needs only their percentiles)."""
    from ..normalization import normalize

    for raw, label in zip(raws, labels, strict=True):
        for _ in range(count):
            yield normalize(np.stack([acquisition_change(ch, rng, label) for ch in raw]), recipe)
