"""Intensity normalisation recipes (the ``Normalization`` of the prediction config)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial

import numpy as np

from .errors import UserInputError


class NormalizationError(UserInputError, ValueError):
    """An unknown recipe id or step, or a recipe that does not fit the image."""


def _stats(img: np.ndarray) -> tuple[float, float]:
    """Mean and population std, accumulated in float64 without a float64 copy of the image."""
    mean = float(img.mean(dtype=np.float64))
    std = float(img.std(dtype=np.float64))
    return mean, std


def _scale(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.clip(img, lo, hi).astype(np.float32, copy=True)
    out -= np.float32(lo)
    out += np.float32(1e-8)
    out /= np.float32(hi - lo + 1e-8)
    return out


def min_max(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    out = img.astype(np.float32, copy=True) - np.float32(lo)
    return out / np.float32(hi - lo) if hi > lo else np.zeros_like(out)


def auto_contrast(
    img: np.ndarray, a: float, b: float, high: float = -1, low: float = -1
) -> np.ndarray:
    """Fit mean m and std s (of voxels < high, > low when given); clip to [m - a s, m + b s]; scale."""
    values = img
    if high > 0 or low > 0:
        keep = np.ones(img.shape, dtype=bool)
        if high > 0:
            keep &= img < high
        if low > 0:
            keep &= img > low
        values = img[keep]
        if values.size == 0:
            raise NormalizationError(
                f"auto_contrast: no voxel lies between low={low} and high={high}"
            )
    m, s = _stats(values)
    lo = max(m - a * s, float(img.min()))
    hi = min(m + b * s, float(img.max()))
    return _scale(img, lo, hi)


def background_sub(img: np.ndarray, r: float) -> np.ndarray:
    """Subtract a Gaussian-smoothed background (sigma ``r``), then min-max to [0, 1]."""
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    img = img.astype(np.float32, copy=False)
    smooth = ndimage.gaussian_filter(img, sigma=r, mode="nearest", truncate=3.0)
    return min_max(img - smooth)


def _mean_std_window(img: np.ndarray, a: float, b: float, lo_is_min: bool = False) -> np.ndarray:
    """Clip to [max(m - a s, min), min(m + b s, max)] (lower end the minimum if asked); scale."""
    m, s = _stats(img)
    lo = float(img.min()) if lo_is_min else max(m - a * s, float(img.min()))
    return _scale(img, lo, min(m + b * s, float(img.max())))


def _bg_then_auto_contrast(img: np.ndarray, a: float, b: float) -> np.ndarray:
    return auto_contrast(background_sub(img, 50), a, b)


_SAMPLE_VOXELS = 4_000_000  # the percentiles' strided sample: about this many voxels


def _sample_step(size: int) -> int:
    return max(1, size // _SAMPLE_VOXELS)


def _strided_sample(img: np.ndarray) -> np.ndarray:
    """Every ``_sample_step``-th voxel of the flattened image (one pass, not a sort)."""
    return np.asarray(img).reshape(-1)[:: _sample_step(img.size)]


def percentile_range(img: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Clip to the ``low`` and ``high`` percentiles and scale to [0, 1] (robust to hot pixels).

    The percentiles come from a strided sample of at most ~4 million voxels, so a whole-organ
    volume costs one pass, not a sort.
    """
    sample = _strided_sample(img)
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.float32)
    return _scale(img, lo, hi)


# Recipe 21's window: values at the 5th percentile -> 0 and at the 95th -> 1, the rest kept on
# that scale (not clipped at 1) and only bounded, so structure brighter than the 95th percentile
# keeps its contrast and a bright tail (specks, a stripe, a saturated cell: a few % of voxels)
# moves neither end. Measured on nuclei_1135 under gain, offset, gamma, 1% saturated specks and
# a bright stripe, the median of nucleus and background moved at most 0.13 of their separation
# (percentiles 1-99.8: up to 0.66). See docs/training.md.
ROBUST_PERCENTILES = (5.0, 95.0)
ROBUST_BOUNDS = (-1.0, 10.0)


def robust_range(img: np.ndarray) -> np.ndarray:
    """Percentiles 5 and 95 to 0 and 1, bounded to [-1, 10] (robust to a bright tail).

    The same as bioimage.io's ``scale_range`` (5, 95) followed by ``clip`` (-1, 10). The
    percentiles come from the strided sample :func:`percentile_range` takes.
    """
    sample = _strided_sample(img)
    return _robust_scale(img, _robust_window(sample))


def _robust_window(sample: np.ndarray) -> tuple[float, float] | None:
    lo, hi = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if hi <= lo:  # a mostly flat image: fall back on its full range above the 5th percentile
        hi = float(sample.max()) if sample.size else lo
    return (lo, hi) if hi > lo else None


def _robust_scale(img: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        return np.zeros(img.shape, dtype=np.float32)
    lo, hi = window
    out = img.astype(np.float32, copy=True)
    out -= np.float32(lo)
    out /= np.float32(hi - lo + 1e-6)  # bioimage.io's scale_range adds 1e-6
    return np.clip(out, *ROBUST_BOUNDS, out=out)


# Recipe 22: recipe 21's window, with two more steps, so that a next volume that is brighter,
# dimmer or spoilt looks to the model like the training volume:
# - specks removed first: a voxel brighter by more than the window (p95 - p5) than all but one
#   of its 26 neighbours is set to its neighbourhood's median. Saturated specks go; lines (two
#   bright neighbours), sheets and blobs stay.
# - then a power of the window-scaled values (above 0) that brings the volume's median to
#   BALANCED_MEDIAN: a gamma, or any brightening of the dim voxels against the bright ones,
#   is undone. The median and percentiles are the raw's, taken from the strided sample.
# On nuclei_1135's held-out slab, with the nuclei starter, no change of the bench_robustness
# set cost more than 0.05 IoU (recipe 21: gamma 0.7 -0.19, 1% specks -0.27). See
# docs/training.md.
BALANCED_MEDIAN = 0.25
GAMMA_BOUNDS = (1 / 3, 3.0)
SPECK_STEP = 1.0  # in units of the window (p95 - p5)


def balanced_range(img: np.ndarray) -> np.ndarray:
    """Specks removed, percentiles 5 and 95 to 0 and 1, the median brought to 0.25 by a power,
    bounded to [-1, 10] (recipe 22)."""
    sample = _strided_sample(img)
    return _balanced_scale(img, _balanced_window(sample))


def _balanced_window(sample: np.ndarray) -> tuple[float, float, float] | None:
    """(p5, p95, the power) from a raw sample; None for a flat image."""
    window = _robust_window(sample)
    if window is None:
        return None
    lo, hi = window
    median = (float(np.median(sample)) - lo) / (hi - lo + 1e-6)
    power = 1.0
    if 0.0 < median < 1.0:
        power = min(
            max(math.log(BALANCED_MEDIAN) / math.log(median), GAMMA_BOUNDS[0]), GAMMA_BOUNDS[1]
        )
    return lo, hi, power


def _balanced_scale(
    img: np.ndarray, params: tuple[float, float, float] | None, ceiling: float | None = None
) -> np.ndarray:
    """Recipe 22's values of ``img`` from its window and power; with ``ceiling`` (the volume's
    maximum), the voxels there kept at least SATURATED_LEVEL bright (recipe 25)."""
    if params is None:
        return np.zeros(img.shape, dtype=np.float32)
    lo, hi, power = params
    clean = without_specks(img, SPECK_STEP * (hi - lo))
    saturated = clean >= np.float32(ceiling) if ceiling is not None else None
    out = _robust_scale(clean, (lo, hi))
    del clean
    if power != 1.0:
        positive = out > 0
        out[positive] **= np.float32(power)
        np.clip(out, *ROBUST_BOUNDS, out=out)
    if saturated is not None:
        out[saturated] = np.maximum(out[saturated], np.float32(SATURATED_LEVEL))
    return out


_NEIGHBOURS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def without_specks(img: np.ndarray, step: float) -> np.ndarray:
    """A float32 copy of a (Z, Y, X) image whose specks are set to their 3x3x3 median.

    A speck is a voxel brighter by more than ``step`` than all but one of its 26 neighbours
    (a single bright voxel or a pair). A line has two bright neighbours on it and a sheet or a
    blob more, so they stay. Only local maxima are looked at; at the edges, the neighbours
    there are.
    """
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    out = np.array(img, dtype=np.float32, copy=True)
    if out.ndim != 3 or out.size == 0:
        return out
    peak = ndimage.maximum_filter(out, size=3, mode="nearest")
    found = np.nonzero((out >= peak) & (out > np.float32(out.min() + step)))
    if not found[0].size:
        return out
    near = np.stack(found, -1)[:, None, :] + _NEIGHBOURS[None]
    outside = np.any((near < 0) | (near >= np.array(out.shape)), axis=-1)
    np.clip(near, 0, np.array(out.shape) - 1, out=near)
    values = out[near[..., 0], near[..., 1], near[..., 2]]
    values[outside] = np.nan  # beyond the edge: no neighbour (sorted last, left out)
    values.sort(axis=1)
    inside = np.count_nonzero(~outside, axis=1)
    rows = np.arange(len(values))
    brightest = values[rows, inside - 1]  # the voxel itself
    specks = brightest - values[rows, inside - 3] > step  # against its 2nd brightest neighbour
    out[tuple(w[specks] for w in found)] = values[rows, inside // 2][specks]
    return out


# Recipe 24: recipe 22 after the stripes are taken out. A stripe (a bright line across the
# field, e.g. a scan glitch or a reflection, in one or a few rows of every plane it crosses)
# moves the window little but the model a lot: the network sees a line brighter than anything it
# was trained on and, from nuclei_1135, predicted almost nothing within 8 rows of it. A row (a
# line of voxels along x, or along y) is a stripe when its 10th percentile lies above the median
# of the 10th percentiles of the STRIPE_ROWS rows around it (same plane) by more than
# STRIPE_STEP windows (p95 - p5): the whole row is lifted, its dimmest voxels too. That excess
# is subtracted from the row. A row across nuclei or walls keeps some background, and its 10th
# percentile with it: on the real volumes at hand (nuclei, membranes) and the synthetic scenes
# the rows lie at most 0.20 windows above their neighbours (their medians up to 0.74, on
# densely packed blobs); the bench's stripe lies 2.4 windows above. Stripes up to 5 rows wide;
# a volume without one is left as 22 leaves it (see docs/training.md).
STRIPE_STEP = 0.5
STRIPE_ROWS = 11  # the row and 5 on each side
STRIPE_PERCENTILE = 10.0
# Recipe 25: recipe 24 with the detector's ceiling kept bright. A brighter acquisition records
# its brightest structure flat at the detector's ceiling (the volume's maximum) while the window
# (p95 - p5) grows with the gain, so the clipped voxels fall in the window: on nuclei_1136 under
# a gain of 2, from up to 4.7 windows to 2.1, nucleus-bright (an unlabelled bright streak and
# bright grains, 0.4% of the volume), and a model grows nuclei around them. The voxels at the
# volume's maximum (once the specks and stripes are out) are raised to at least SATURATED_LEVEL
# windows when they pile up there (at least SATURATED_SHARE of the voxels, and more than at the
# next value down: a noisy volume's brightest voxels are a few, thinning out). Where the maximum
# does not pile up, or lies above that level (as a well-exposed volume's does), 25 gives 24's
# values. The level was chosen on nuclei_1135 with the nuclei starter: the one at which a gain
# of 2 changed its IoU least (see docs/training.md).
SATURATED_LEVEL = 2.5
SATURATED_SHARE = 1e-3
# Recipe 26: recipe 25 where the ceiling lies at least SATURATED_ABOVE windows above the 5th
# percentile, recipe 24 below that. A ceiling within the window is the structure's own: its
# brightest voxels (flat-topped walls) saturated, not a bright tail beyond it, and 25 made them
# brighter than they had ever been. On the ovule's training half the ceiling lies at 1.00-1.07
# windows under every change of bench_robustness (as recorded too); on nuclei_1135 wherever it
# piles up at 1.74-3.35 (a gain of 2: 1.74). 1.5 lies between. Three 10-minute ovule
# fine-tunes trained with 25 (bench_robustness, seeds 0-2) lost up to 0.082 under an offset of
# +20% and 0.085 under specks; predicting with 24 instead, at most 0.006 and 0.008.
SATURATED_ABOVE = 1.5
# recipe -> the recipe whose values it gives where its extra steps find nothing to take out
EXTENDS = {24: 22, 25: 22, 26: 22}
# recipes 24-26 (stripes taken out first) -> how many windows above the 5th percentile a
# saturated maximum must lie to be kept bright (None: it is not)
CEILING_ABOVE: dict[int, float | None] = {24: None, 25: 0.0, 26: SATURATED_ABOVE}


def same_values(a: object, b: object) -> bool:
    """Whether recipes ``a`` and ``b`` give the same values to a volume without stripes."""
    if isinstance(a, dict) or isinstance(b, dict):
        return False
    return EXTENDS.get(a, a) == EXTENDS.get(b, b)


def stripe_free_range(img: np.ndarray, above: float | None = None) -> np.ndarray:
    """Stripes taken out, then recipe 22: specks removed, percentiles 5 and 95 to 0 and 1, the
    median brought to 0.25 by a power, bounded to [-1, 10] (recipe 24). With ``above``: the
    voxels at a saturated maximum then at least SATURATED_LEVEL where the maximum lies at least
    ``above`` windows above the 5th percentile (recipe 25: 0, recipe 26: SATURATED_ABOVE)."""
    sample = _strided_sample(img)
    keep = above is not None and img.size
    ceiling = _saturated_at(sample, float(np.max(img))) if keep else None
    if img.ndim == 3:
        excess = _stripe_excess(*_row_levels(img), sample)
        if excess is not None:
            img = _without_stripes(img, excess, (0, 0, 0))
            sample = _strided_sample(img)
    params = _balanced_window(sample)
    return _balanced_scale(img, params, _kept_ceiling(ceiling, params, above))


def _kept_ceiling(
    ceiling: float | None, params: tuple[float, float, float] | None, above: float | None
) -> float | None:
    """``ceiling`` where it lies at least ``above`` windows (p95 - p5) above the 5th percentile
    of ``params`` (from :func:`_balanced_window`), else None: then nothing is kept bright."""
    if ceiling is None or params is None or above is None:
        return None
    lo, hi, _ = params
    return ceiling if ceiling - lo >= above * (hi - lo) else None


def _saturated_at(sample: np.ndarray, top: float) -> float | None:
    """``top`` (the volume's maximum) when the detector saturated there, else None.

    Saturated: at least SATURATED_SHARE of the raw's strided ``sample`` lies at the maximum,
    more of it than at the next value down (a clipped tail piles up at the ceiling; a noisy
    tail thins out towards its brightest voxels).
    """
    if not sample.size or not np.isfinite(top):
        return None
    at_top = np.count_nonzero(sample >= top)
    if at_top < SATURATED_SHARE * sample.size:
        return None
    below = sample[sample < top]
    return top if not below.size or at_top > np.count_nonzero(below == below.max()) else None


def saturation(raw: np.ndarray) -> tuple[float, float] | None:
    """(the share of voxels at the maximum, the maximum) of a raw channel (Z, Y, X) or of its
    strided sample, when the detector saturated there (:func:`_saturated_at`); else None."""
    sample = _strided_sample(np.asarray(raw))
    if not sample.size:
        return None
    top = float(np.max(sample))
    if top == float(np.min(sample)) or _saturated_at(sample, top) is None:  # flat: no ceiling
        return None
    return np.count_nonzero(sample >= top) / sample.size, top


def _row_levels(img) -> tuple[np.ndarray, np.ndarray]:
    """The STRIPE_PERCENTILE of each row of a (Z, Y, X) image: along x (Z, Y), along y (Z, X).
    Plane by plane: np.percentile copies what it sorts."""
    along_x = np.array([np.percentile(plane, STRIPE_PERCENTILE, axis=1) for plane in img])
    along_y = np.array([np.percentile(plane, STRIPE_PERCENTILE, axis=0) for plane in img])
    return along_x.reshape(img.shape[:2]), along_y.reshape(img.shape[0], img.shape[2])


def _stripe_excess(
    along_x: np.ndarray, along_y: np.ndarray, sample: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's excess over its neighbours where it is a stripe, else 0, from the rows'
    levels (:func:`_row_levels`): (Z, Y) for the rows along x, (Z, X) for those along y; None
    when there is no stripe."""
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    window = _robust_window(sample)
    if window is None:
        return None
    step = STRIPE_STEP * (window[1] - window[0])
    found = []
    for levels in (along_x, along_y):
        levels = np.asarray(levels, dtype=np.float64)
        around = ndimage.median_filter(levels, size=(1, STRIPE_ROWS), mode="nearest")
        excess = levels - around
        excess[~(excess > step)] = 0.0  # NaN too
        found.append(excess.astype(np.float32))
    return tuple(found) if any(e.any() for e in found) else None


def _without_stripes(
    img: np.ndarray, excess: tuple[np.ndarray, np.ndarray], origin: tuple[int, int, int]
) -> np.ndarray:
    """A float32 copy of the (Z, Y, X) block at ``origin`` of the volume with each stripe's
    excess subtracted."""
    along_x, along_y = excess
    z, y, x = (slice(o, o + n) for o, n in zip(origin, img.shape, strict=True))
    out = np.array(img, dtype=np.float32, copy=True)
    out -= along_x[z, y][:, :, None]
    out -= along_y[z, x][:, None, :]
    return out


def _stripe_free_sample(
    sample: np.ndarray, shape: tuple[int, ...], excess: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The strided sample of a volume of ``shape`` with its stripes taken out, from the raw's."""
    z, y, x = np.unravel_index(np.arange(sample.size) * _sample_step(int(np.prod(shape))), shape)
    out = sample.astype(np.float32)
    out -= excess[0][z, y]
    out -= excess[1][z, x]
    return out


def _suppress_bright_then_bg(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32, copy=True)
    img[img > 4000] = img.min()
    return background_sub(img, 50)


RECIPES: dict[int, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    0: ("min-max to [0, 1]", min_max),
    1: ("clip to [mean - 2 std, mean + 11 std], scale", partial(_mean_std_window, a=2, b=11)),
    2: ("auto_contrast(2.5, 10)", partial(auto_contrast, a=2.5, b=10)),
    4: ("auto_contrast(1, 15)", partial(auto_contrast, a=1, b=15)),
    7: ("auto_contrast(1, 6)", partial(auto_contrast, a=1, b=6)),
    10: (
        "clip to [min, mean + 25 std], scale",
        partial(_mean_std_window, a=0, b=25, lo_is_min=True),
    ),
    11: ("background_sub(50)", partial(background_sub, r=50)),
    12: (
        "background_sub(50), auto_contrast(2.5, 10)",
        partial(_bg_then_auto_contrast, a=2.5, b=10),
    ),
    13: ("background_sub(50), auto_contrast(2, 11)", partial(_bg_then_auto_contrast, a=2, b=11)),
    14: ("auto_contrast(1, 10)", partial(auto_contrast, a=1, b=10)),
    15: ("voxels > 4000 set to the minimum, background_sub(50)", _suppress_bright_then_bg),
    16: ("background_sub(50), auto_contrast(1.5, 6)", partial(_bg_then_auto_contrast, a=1.5, b=6)),
    17: ("background_sub(50), auto_contrast(1, 10)", partial(_bg_then_auto_contrast, a=1, b=10)),
    18: (
        "background_sub(50), auto_contrast(1.5, 10)",
        partial(_bg_then_auto_contrast, a=1.5, b=10),
    ),
    # Added by napari-cellseg-trainer (the ids above are the established trainer's).
    20: ("percentiles 1 and 99.8 to [0, 1] (robust min-max)", percentile_range),
    21: (
        "percentiles 5 and 95 to 0 and 1, bounded to [-1, 10] (robust to a bright tail)",
        robust_range,
    ),
    22: (
        "specks removed, percentiles 5 and 95 to 0 and 1, the median brought to 0.25 by a "
        "power, bounded to [-1, 10] (robust to brighter, dimmer and spoilt volumes)",
        balanced_range,
    ),
    24: (
        "stripes taken out, then 22: specks removed, percentiles 5 and 95 to 0 and 1, the median "
        "brought to 0.25 by a power, bounded to [-1, 10] (robust to brighter, dimmer and spoilt "
        "volumes, bright stripes included)",
        stripe_free_range,
    ),
    25: (
        "stripes taken out, specks removed, percentiles 5 and 95 to 0 and 1, the median brought "
        f"to 0.25 by a power, a saturated maximum kept at least {SATURATED_LEVEL:g} bright, "
        "bounded to [-1, 10] (robust to brighter, dimmer and spoilt volumes, bright stripes and "
        "a saturating gain included)",
        partial(stripe_free_range, above=CEILING_ABOVE[25]),
    ),
    26: (
        "stripes taken out, specks removed, percentiles 5 and 95 to 0 and 1, the median brought "
        f"to 0.25 by a power, a saturated maximum kept at least {SATURATED_LEVEL:g} bright where "
        f"it lies {SATURATED_ABOVE:g} windows up or more, bounded to [-1, 10] (robust to "
        "brighter, dimmer and spoilt volumes, bright stripes and a saturating gain included; a "
        "structure that itself saturates keeps 24's values)",
        partial(stripe_free_range, above=CEILING_ABOVE[26]),
    ),
}


def _apply_step(img: np.ndarray, step: dict) -> np.ndarray:
    name = step.get("name") if isinstance(step, dict) else None
    if name == "background_sub":
        return background_sub(img, float(step.get("sigma", 50)))
    if name == "auto_contrast":
        param = step.get("param")
        if not isinstance(param, (list, tuple)) or len(param) not in (2, 4):
            raise NormalizationError(
                f"auto_contrast needs param [a, b] or [a, b, high, low], got {param!r}"
            )
        return auto_contrast(img, *(float(p) for p in param))
    raise NormalizationError(
        f"unknown normalisation step {step!r}; use background_sub or auto_contrast"
    )


def normalize(image: np.ndarray, recipe: int | dict) -> np.ndarray:
    """Normalise each channel of a (C, Z, Y, X) image; returns a new float32 array."""
    if isinstance(recipe, dict):
        ops = recipe.get("ops")
        if not isinstance(ops, list) or len(ops) != image.shape[0]:
            raise NormalizationError(
                f"Normalization ops must list one entry per channel ({image.shape[0]}), got {ops!r}"
            )
        out = np.empty(image.shape, dtype=np.float32)
        for c, entry in enumerate(ops):
            steps = entry.get("ch") if isinstance(entry, dict) else None
            if not isinstance(steps, list):
                raise NormalizationError(
                    f"Normalization ops[{c}] must be {{ch: [steps]}}, got {entry!r}"
                )
            channel = image[c]
            for step in steps:
                channel = _apply_step(channel, step)
            out[c] = channel
        return out
    if isinstance(recipe, bool) or not isinstance(recipe, int) or recipe not in RECIPES:
        raise NormalizationError(
            f"unknown Normalization recipe {recipe!r}; valid ids: {', '.join(map(str, RECIPES))}"
        )
    function = RECIPES[recipe][1]
    return np.stack([function(channel) for channel in image]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- block by block

# The recipes whose result is a clip-and-scale window from whole-volume statistics: they can
# normalise a volume larger than memory block by block, with the same result. (lo, hi) from
# (minimum, maximum, mean, std, percentile sample); None: plain min-max.
_WINDOWS: dict[int, Callable | None] = {
    0: None,
    1: lambda mn, mx, m, s, _: (max(m - 2 * s, mn), min(m + 11 * s, mx)),
    2: lambda mn, mx, m, s, _: (max(m - 2.5 * s, mn), min(m + 10 * s, mx)),
    4: lambda mn, mx, m, s, _: (max(m - 1 * s, mn), min(m + 15 * s, mx)),
    7: lambda mn, mx, m, s, _: (max(m - 1 * s, mn), min(m + 6 * s, mx)),
    10: lambda mn, mx, m, s, _: (mn, min(m + 25 * s, mx)),
    14: lambda mn, mx, m, s, _: (max(m - 1 * s, mn), min(m + 10 * s, mx)),
    20: lambda mn, mx, m, s, sample: tuple(float(v) for v in np.percentile(sample, [1.0, 99.8])),
    21: None,  # its own scale (robust_range), from the same sample
    22: None,  # its own (balanced_range), from the same sample; a halo of 1 for the specks
    24: None,  # 22's, after the stripes its rows' levels (one figure a row) show
    25: None,  # 24's, and the volume's maximum
    26: None,  # 25's
}
STREAMED = tuple(_WINDOWS)  # the recipes a volume read block by block can take


def streamed_normalizer(recipe: int | dict, source, channel: int) -> BlockNormalizer:
    """A function that normalises any block of ``source[channel]`` as :func:`normalize` would
    normalise the whole channel, from statistics gathered slab by slab (bounded memory).

    ``source`` is a (C, Z, Y, X) array-like (numpy, zarr, dask). The background-subtraction
    recipes smooth with a 50-voxel Gaussian, which needs the whole volume: they are refused.
    The function's ``sample`` is the strided sample of the raw its statistics saw.
    """
    if isinstance(recipe, bool) or not isinstance(recipe, int) or recipe not in _WINDOWS:
        usable = ", ".join(map(str, _WINDOWS))
        raise NormalizationError(
            f"Normalization {recipe!r} needs the whole volume in memory; for a volume predicted "
            f"block by block use one of {usable}"
        )
    striped = recipe in CEILING_ABOVE
    mn, mx, mean, std, sample, rows = _channel_statistics(source, channel, rows=striped)
    above = CEILING_ABOVE.get(recipe)
    ceiling = _saturated_at(sample, mx) if above is not None else None
    if striped and rows is not None:
        excess = _stripe_excess(*rows, sample)
        if excess is not None:
            cleaned = _stripe_free_sample(sample, source.shape[1:], excess)
            params = _balanced_window(cleaned)
            ceiling = _kept_ceiling(ceiling, params, above)
            return BlockNormalizer(
                lambda block, origin: _balanced_scale(
                    _without_stripes(block, excess, origin), params, ceiling
                ),
                cleaned,
                halo=1,
                voxelwise=partial(_balanced_scale, params=params, ceiling=ceiling),
            )
    if recipe == 21:
        return BlockNormalizer(partial(_robust_scale, window=_robust_window(sample)), sample)
    if recipe == 22 or striped:
        params = _balanced_window(sample)
        ceiling = _kept_ceiling(ceiling, params, above)
        return BlockNormalizer(
            partial(_balanced_scale, params=params, ceiling=ceiling), sample, halo=1
        )
    window = _WINDOWS[recipe]
    if window is None:
        span = mx - mn
        return BlockNormalizer(
            lambda block: (
                (block.astype(np.float32) - np.float32(mn)) / np.float32(span)
                if span > 0
                else np.zeros(block.shape, np.float32)
            ),
            sample,
        )
    lo, hi = window(mn, mx, mean, std, sample)
    if recipe == 20 and hi <= lo:
        return BlockNormalizer(lambda block: np.zeros(block.shape, np.float32), sample)
    return BlockNormalizer(partial(_scale, lo=lo, hi=hi), sample)


class BlockNormalizer:
    """Normalises a block of a volume with the whole volume's statistics. ``halo``: the voxels
    beyond the block it looks at (read them with :func:`normalised_window`); ``sample``: the
    strided sample of the raw the statistics came from (recipe 24: with the stripes taken out).
    With ``voxelwise`` (what it does to a voxel wherever it lies), the function also takes the
    block's (z, y, x) origin in the volume: recipe 24's stripes lie in given rows."""

    def __init__(
        self,
        function: Callable,
        sample: np.ndarray,
        halo: int = 0,
        voxelwise: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.function, self.sample, self.halo = function, sample, halo
        self.voxelwise = voxelwise

    def __call__(self, block: np.ndarray, origin: tuple[int, ...] = (0, 0, 0)) -> np.ndarray:
        return self.function(block) if self.voxelwise is None else self.function(block, origin)

    def normalized_sample(self) -> np.ndarray:
        """The sample, normalised (voxel by voxel: a step that looks at neighbours or at the
        voxel's place is left out)."""
        return (self.voxelwise or self.function)(self.sample.astype(np.float32))


def normalised_window(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    spans: tuple[slice, ...],
    shape: tuple[int, ...],
    transform: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``transform`` of the (Z, Y, X) window ``spans`` of a volume of ``shape`` read by ``read``:
    with the voxels around it that the transform looks at (its ``halo``), so that a window comes
    out as it does in the whole volume."""
    halo = getattr(transform, "halo", 0)
    positional = getattr(transform, "voxelwise", None) is not None  # it takes the block's origin
    plain = all(isinstance(s, slice) and s.step in (None, 1) for s in spans)
    if positional and not plain:
        raise NormalizationError(f"a window of whole slices is needed here, got {spans!r}")
    if not halo or not plain:
        return transform(read(spans))
    grown, inner = [], []
    for span, size in zip(spans, shape, strict=True):
        start, stop, _ = span.indices(size)
        lo, hi = max(start - halo, 0), min(stop + halo, size)
        grown.append(slice(lo, hi))
        inner.append(slice(start - lo, start - lo + (stop - start)))
    block = read(tuple(grown))
    if positional:
        return transform(block, tuple(g.start for g in grown))[tuple(inner)]
    return transform(block)[tuple(inner)]


def normalised_channels(source, channels: Iterable[int], spans, transforms) -> np.ndarray:
    """The (Z, Y, X) window ``spans`` of ``channels`` of a (C, Z, Y, X) array-like ``source``,
    each channel normalised by its ``transforms[c]`` (:func:`normalised_window`), stacked."""
    shape = tuple(int(n) for n in source.shape[1:])
    return np.stack(
        [
            normalised_window(
                lambda window, c=c: np.asarray(source[(c, *window)], dtype=np.float32),
                tuple(spans),
                shape,
                transforms[c],
            )
            for c in channels
        ]
    )


def _channel_statistics(source, channel: int, slab_voxels: int = 2**24, rows: bool = False):
    """(min, max, mean, std, the percentile sample, the rows' medians) of one channel, one z
    slab at a time.

    The mean and std are two passes in float64, as numpy computes them; the sample takes the
    voxels :func:`percentile_range` takes (every ``step``-th of the flattened volume). With
    ``rows``, the levels of the rows along x (Z, Y) and along y (Z, X) (:func:`_row_levels`),
    else None.
    """
    depth, height, width = (int(v) for v in source.shape[1:])
    plane = height * width
    slab = max(1, slab_voxels // plane)
    size = depth * plane
    step = _sample_step(size)
    mn, mx, total, sample, along_x, along_y = np.inf, -np.inf, 0.0, [], [], []
    for z in range(0, depth, slab):
        block = np.asarray(source[channel, z : z + slab], dtype=np.float64)
        mn, mx = min(mn, float(block.min())), max(mx, float(block.max()))
        if rows:
            levels = _row_levels(block)
            along_x.append(levels[0])
            along_y.append(levels[1])
        total += float(block.sum())
        offset = (-z * plane) % step
        sample.append(block.reshape(-1)[offset::step].copy())  # a view would keep the slab
    mean = total / size
    squares = 0.0
    for z in range(0, depth, slab):
        block = np.asarray(source[channel, z : z + slab], dtype=np.float64)
        squares += float(((block - mean) ** 2).sum())
    picked = np.concatenate(sample) if sample else np.empty(0)
    levels = (np.concatenate(along_x), np.concatenate(along_y)) if along_x else None
    return mn, mx, mean, math.sqrt(squares / size), picked, levels
