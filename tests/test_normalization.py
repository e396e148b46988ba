"""Normalisation recipes, checked against predict.md's formulas written out here in numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_cellseg_trainer.normalization import NormalizationError, normalize

SPEC_IDS = [0, 1, 2, 4, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18]


# ----------------------------------------------------------------- reference formulas (float64)


def ref_gaussian(img: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Separable Gaussian with "nearest" edges, radius int(truncate * sigma + 0.5).

    Along each axis the filter is a matrix: output i takes weight w[k] from voxel
    clamp(i + k, 0, n - 1), so the edge voxel collects the weight of every tap beyond it.
    """
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    out = img.astype(np.float64)
    for axis, n in enumerate(img.shape):
        matrix = np.zeros((n, n))
        for i in range(n):
            np.add.at(matrix[i], np.clip(i + taps, 0, n - 1), weights)
        out = np.moveaxis(np.tensordot(matrix, np.moveaxis(out, axis, 0), axes=1), 0, axis)
    return out


def ref_clip_scale(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip(img, lo, hi) - lo + 1e-8) / (hi - lo + 1e-8)


def ref_auto_contrast(img, a, b, high=-1.0, low=-1.0) -> np.ndarray:
    img = img.astype(np.float64)
    values = img
    if high > 0:
        values = values[values < high]
    if low > 0:
        values = values[values > low]
    m = values.sum() / values.size
    s = np.sqrt(((values - m) ** 2).sum() / values.size)  # population std
    return ref_clip_scale(img, max(m - a * s, img.min()), min(m + b * s, img.max()))


def ref_background_sub(img: np.ndarray, r: float) -> np.ndarray:
    d = img.astype(np.float64) - ref_gaussian(img, r)
    return (d - d.min()) / (d.max() - d.min())


def ref_mean_std(img, a, b, lo_is_min=False) -> np.ndarray:
    img = img.astype(np.float64)
    m = img.sum() / img.size
    s = np.sqrt(((img - m) ** 2).sum() / img.size)
    lo = img.min() if lo_is_min else max(m - a * s, img.min())
    return ref_clip_scale(img, lo, min(m + b * s, img.max()))


def ref_suppress_then_bg(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64).copy()
    img[img > 4000] = img.min()
    return ref_background_sub(img, 50)


REFERENCE = {
    0: lambda c: (c - c.min()) / (c.max() - c.min()),
    1: lambda c: ref_mean_std(c, 2, 11),
    2: lambda c: ref_auto_contrast(c, 2.5, 10),
    4: lambda c: ref_auto_contrast(c, 1, 15),
    7: lambda c: ref_auto_contrast(c, 1, 6),
    10: lambda c: ref_mean_std(c, 0, 25, lo_is_min=True),
    11: lambda c: ref_background_sub(c, 50),
    12: lambda c: ref_auto_contrast(ref_background_sub(c, 50), 2.5, 10),
    13: lambda c: ref_auto_contrast(ref_background_sub(c, 50), 2, 11),
    14: lambda c: ref_auto_contrast(c, 1, 10),
    15: ref_suppress_then_bg,
    16: lambda c: ref_auto_contrast(ref_background_sub(c, 50), 1.5, 6),
    17: lambda c: ref_auto_contrast(ref_background_sub(c, 50), 1, 10),
    18: lambda c: ref_auto_contrast(ref_background_sub(c, 50), 1.5, 10),
}


@pytest.fixture
def image() -> np.ndarray:
    """(2, 4, 16, 12): two channels of different brightness, integer-valued, with outliers.

    768 voxels per channel, so one outlier can lie more than 25 std above the mean: channel 0's
    bright voxel is clipped by every recipe's upper end and its dark voxel by the lower ends;
    channel 1 has voxels above 4000 (recipe 15) and a gradient for the background subtraction.
    """
    rng = np.random.default_rng(3)
    img = np.empty((2, 4, 16, 12))
    img[0] = np.round(rng.normal(100, 10, (4, 16, 12)))
    img[0, 0, 0, 0], img[0, 3, 15, 11] = 1100, 5
    img[1] = np.round(rng.normal(2000, 300, (4, 16, 12))) + np.arange(12) * 50
    img[1, 1, 2, 3], img[1, 2, 0, 5] = 6000, 4500
    return img


def test_the_spec_lists_exactly_the_recipes_checked_here():
    assert sorted(REFERENCE) == SPEC_IDS


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("recipe", SPEC_IDS)
def test_each_recipe_matches_the_formula_per_channel(recipe, dtype, image):
    result = normalize(image.astype(dtype), recipe)
    assert result.dtype == np.float32
    assert result.shape == image.shape
    for c in range(image.shape[0]):
        expected = REFERENCE[recipe](image[c])
        np.testing.assert_allclose(
            result[c], expected, rtol=1e-5, atol=2e-6, err_msg=f"channel {c}"
        )
        assert 0.0 <= result[c].min() and result[c].max() <= 1.0 + 1e-6


def test_the_test_image_exercises_the_clipping(image):
    """Guard for the test above: on this image each recipe clips, so differs from min-max."""
    plain = REFERENCE[0](image[0])
    for recipe in (1, 2, 4, 7, 10, 14):
        assert np.abs(REFERENCE[recipe](image[0]) - plain).max() > 5e-3, recipe
    assert not np.allclose(REFERENCE[15](image[1]), REFERENCE[11](image[1]), atol=1e-2)


def test_a_hand_computed_example():
    """auto_contrast(1, 6) on five values, worked out on paper: m = 4, s = 2."""
    img = np.array([2.0, 2.0, 4.0, 4.0, 8.0], dtype=np.float32).reshape(1, 1, 1, 5)
    # lo = max(4 - 2, 2) = 2, hi = min(4 + 12, 8) = 8: (x - 2) / 6.
    expected = np.array([0.0, 0.0, 1 / 3, 1 / 3, 1.0]) + 1e-8 / 6
    np.testing.assert_allclose(normalize(img, 7)[0, 0, 0], expected, rtol=1e-6, atol=1e-7)
    # recipe 1: lo = max(4 - 4, 2) = 2, hi = min(4 + 22, 8) = 8: the same here.
    np.testing.assert_allclose(normalize(img, 1)[0, 0, 0], expected, rtol=1e-6, atol=1e-7)
    # min-max.
    np.testing.assert_allclose(normalize(img, 0)[0, 0, 0], [0, 0, 1 / 3, 1 / 3, 1], rtol=1e-6)


def test_dict_form_applies_each_channels_steps_in_order(image):
    recipe = {
        "ops": [
            {
                "ch": [
                    {"name": "background_sub", "sigma": 2},
                    {"name": "auto_contrast", "param": [1.5, 6]},
                ]
            },
            {"ch": [{"name": "auto_contrast", "param": [1, 6, 4000, 1500]}]},
        ]
    }
    result = normalize(image.astype(np.float32), recipe)
    assert result.dtype == np.float32 and result.shape == image.shape
    expected0 = ref_auto_contrast(ref_background_sub(image[0], 2), 1.5, 6)
    expected1 = ref_auto_contrast(image[1], 1, 6, high=4000, low=1500)
    np.testing.assert_allclose(result[0], expected0, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(result[1], expected1, rtol=1e-5, atol=2e-6)
    # high/low change the fit: without them the bright voxels widen the std.
    assert not np.allclose(expected1, ref_auto_contrast(image[1], 1, 6), atol=1e-3)


@pytest.mark.parametrize("recipe", [3, 5, 19, -1, "10", 10.0, True, None])
def test_an_unknown_recipe_id_names_the_valid_ones(recipe, image):
    with pytest.raises(NormalizationError) as err:
        normalize(image, recipe)
    assert f"unknown Normalization recipe {recipe!r}" in str(err.value)
    assert "valid ids: 0, 1, 2, 4, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18" in str(err.value)


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{"ch": [{"name": "gamma", "value": 2}]}] * 2, "unknown normalisation step"),
        (
            [{"ch": [{"name": "auto_contrast", "param": [1]}]}] * 2,
            "needs param [a, b] or [a, b, high, low]",
        ),
        ([{"ch": []}], "one entry per channel (2)"),
        ([{"steps": []}] * 2, "ops[0] must be {ch: [steps]}"),
    ],
)
def test_a_bad_dict_recipe_is_a_clear_error(ops, message, image):
    with pytest.raises(NormalizationError) as err:
        normalize(image, {"ops": ops})
    assert message in str(err.value)


@pytest.mark.parametrize("value", [0.0, 123.4, 5000.0])
@pytest.mark.parametrize("recipe", SPEC_IDS)
def test_a_constant_image_gives_a_constant_finite_result(recipe, value):
    result = normalize(np.full((1, 3, 4, 5), value, dtype=np.float32), recipe)
    assert np.isfinite(result).all()
    assert result.min() == result.max()
    assert 0.0 <= result.min() <= 1.0
    if recipe in (1, 2, 4, 7, 10, 14):
        # (img - lo + 1e-8) / (hi - lo + 1e-8) with lo = hi = the value.
        assert result.min() == pytest.approx(1.0)


def test_input_is_not_modified(image):
    original = image.astype(np.float32)
    copy = original.copy()
    for recipe in (0, 7, 15):
        normalize(original, recipe)
    np.testing.assert_array_equal(original, copy)


# ----------------------------------------------------------------- recipe 22 (the quick preset's)


def _nuclei_like(seed: int = 0) -> np.ndarray:
    """(16, 48, 48) uint8: dim noisy background, brighter blobs (a third of the voxels)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:16, :48, :48]
    inside = np.zeros((16, 48, 48), bool)
    for cz, cy, cx in rng.integers([0, 0, 0], [16, 48, 48], (12, 3)):
        inside |= (z - cz) ** 2 / 9 + (y - cy) ** 2 / 49 + (x - cx) ** 2 / 49 <= 1
    raw = np.where(inside, 120.0, 30.0) + rng.normal(0, 6, inside.shape)
    return np.clip(np.round(raw), 0, 255).astype(np.uint8)


def test_specks_go_and_lines_sheets_and_blobs_stay():
    from napari_cellseg_trainer.normalization import without_specks

    img = np.zeros((9, 12, 12), np.float32)
    img[4, 4, 1:11] = 10  # a line inside the volume: its tips have one bright neighbour
    img[7, :, :] = 10  # a sheet
    img[1:3, 8:11, 8:11] = 8  # a blob
    img[2, 2, 2] = 10  # a speck
    img[5, 9, 2] = img[5, 9, 3] = 10  # a pair
    img[0, 0, 0] = 10  # a speck in the corner
    out = without_specks(img, 1.0)
    assert out[2, 2, 2] == 0 and out[5, 9, 2] == out[5, 9, 3] == 0 and out[0, 0, 0] == 0
    assert (out[4, 4, 2:10] == 10).all()  # the line, all but its two tips
    assert (out[7] == 10).all() and (out[1:3, 8:11, 8:11] == 8).all()
    assert img[2, 2, 2] == 10  # the input is not changed
    quiet = without_specks(img, 20.0)  # nothing stands out by more than 20
    np.testing.assert_array_equal(quiet, img)


def test_recipe_22_undoes_gain_offset_and_gamma_and_removes_specks():
    raw = _nuclei_like()
    base = normalize(raw[None], 22)[0]
    assert np.median(base) == pytest.approx(0.25, abs=0.01)
    x = raw.astype(np.float64)
    changed = {
        "gain x2, offset 20": x * 2 + 20,
        "gamma 0.7": 255 * (x / 255) ** 0.7,
        "gamma 1.4": 255 * (x / 255) ** 1.4,
    }
    specked = x.copy()
    specked[np.random.default_rng(1).random(raw.shape) < 0.01] = 255
    changed["1% saturated specks"] = specked
    for name, volume in changed.items():
        result = normalize(volume[None], 22)[0]
        assert np.median(np.abs(result - base)) < 0.01, name
        assert np.percentile(np.abs(result - base), 99) < 0.05, name
    for gamma in ("gamma 0.7", "gamma 1.4"):  # recipe 21 does not undo a gamma: 7 times more
        plain = normalize(changed[gamma][None], 21)[0] - normalize(raw[None], 21)[0]
        assert np.median(np.abs(plain)) > 0.02, gamma


def test_recipe_22_block_by_block_equals_the_whole_volume():
    from napari_cellseg_trainer.normalization import normalised_window, streamed_normalizer

    raw = _nuclei_like(2).astype(np.float32)
    raw[np.random.default_rng(3).random(raw.shape) < 0.01] = 255  # specks at block faces too
    whole = normalize(raw[None], 22)[0]
    transform = streamed_normalizer(22, raw[None], 0)
    for box in [
        (slice(0, 16), slice(0, 48), slice(0, 48)),
        (slice(3, 9), slice(10, 30), slice(47, 48)),
        (slice(3, 9), slice(10, 30), slice(20, 40)),  # inside: specks beyond its faces
    ]:
        block = normalised_window(lambda spans: raw[spans], box, raw.shape, transform)
        np.testing.assert_array_equal(block, whole[box])


def test_recipe_22_leaves_a_clean_image_nearly_as_recipe_21_shapes_it():
    """Specks removed from a clean image: hardly any voxel; the power only reshapes."""
    from napari_cellseg_trainer.normalization import without_specks

    raw = _nuclei_like(4).astype(np.float32)
    lo, hi = np.percentile(raw, [5, 95])
    assert np.count_nonzero(without_specks(raw, hi - lo) != raw) < 0.001 * raw.size
    a, b = normalize(raw[None], 21)[0], normalize(raw[None], 22)[0]
    assert np.all(np.diff(b.ravel()[np.argsort(a.ravel(), kind="stable")]) >= -1e-6)  # monotone


def test_streamed_statistics_keep_one_slab_at_a_time_not_the_volume(monkeypatch):
    """The strided sample is copied out of each slab: a view would keep every slab alive (the
    whole volume in float64, which a 3 GiB cap refused at 256 x 2048 x 2048)."""
    import tracemalloc

    from napari_cellseg_trainer import normalization as norm

    monkeypatch.setattr(norm, "_SAMPLE_VOXELS", 1000)  # a sample of every few hundredth voxel
    volume = np.random.default_rng(5).random((1, 32, 128, 128)).astype(np.float32)
    slab_bytes = 128 * 128 * 8  # one plane a slab, float64
    tracemalloc.start()
    try:
        norm._channel_statistics(volume, 0, slab_voxels=128 * 128)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * slab_bytes  # the whole volume would be 32 slabs


# ----------------------------------------------------- recipe 24 (the quick preset's before 25)


def _striped(raw: np.ndarray) -> np.ndarray:
    """A bright stripe along x (rows 20-22 of every plane, saturating) and one along y (x 30)."""
    out = raw.astype(np.float64)
    out[:, 20:23, :] += 200
    out[:, :, 30] += 120
    return np.clip(out, 0, 255).astype(np.uint8)


def test_recipe_24_takes_stripes_out_and_is_recipe_22_without_them():
    from napari_cellseg_trainer.data.synthetic import synthetic_volume

    for seed in range(3):
        raw = _nuclei_like(seed)
        clean = normalize(raw[None], 22)[0]
        np.testing.assert_array_equal(normalize(raw[None], 24)[0], clean)
        striped = _striped(raw)
        found, plain = normalize(striped[None], 24)[0], normalize(striped[None], 22)[0]
        rest = np.ones(raw.shape, bool)
        rest[:, 20:23, :] = rest[:, :, 30] = False
        # away from the stripes, the volume as if they were not there (22 moves the nuclei)
        assert np.percentile(np.abs(found - clean)[rest], 90) < 0.02
        assert np.percentile(np.abs(plain - clean)[rest], 90) > 0.2
        # the stripes' rows at the background's level (the median, 0.25), where 22 leaves them
        # at the top of the window
        assert np.median(found[:, 20:23, :]) < 0.3 and np.median(found[:, :, 30]) < 0.3
        assert np.median(plain[:, 20:23, :]) > 0.95
    for scene in ("nuclei", "tissue", "thin"):  # no stripe found in the synthetic scenes
        volume = synthetic_volume(scene, (24, 96, 96), 0).raw
        np.testing.assert_array_equal(normalize(volume[None], 24), normalize(volume[None], 22))


def test_recipe_24_block_by_block_equals_the_whole_volume():
    from napari_cellseg_trainer.normalization import (
        NormalizationError,
        normalised_window,
        streamed_normalizer,
    )

    raw = _striped(_nuclei_like(2))
    raw[np.random.default_rng(3).random(raw.shape) < 0.01] = 255
    whole = normalize(raw[None], 24)[0]
    transform = streamed_normalizer(24, raw[None], 0)
    for box in [
        (slice(0, 16), slice(0, 48), slice(0, 48)),
        (slice(3, 9), slice(18, 30), slice(29, 48)),  # across both stripes
        (slice(3, 9), slice(10, 30), slice(20, 40)),
    ]:
        block = normalised_window(lambda spans: raw[spans], box, raw.shape, transform)
        np.testing.assert_array_equal(block, whole[box])
    # the shift warning's sample (every voxel of so small a volume): stripes taken out too,
    # the 1% specks left (a voxel-by-voxel step)
    sample = transform.normalized_sample()
    assert np.mean(np.isclose(sample, whole.ravel(), atol=1e-5)) > 0.98
    with pytest.raises(NormalizationError, match="whole slices"):
        normalised_window(
            lambda spans: raw[spans], (3, slice(0, 9), slice(0, 9)), raw.shape, transform
        )


# ----------------------------------------------------------------- recipe 25 (the quick preset's)


def _saturating(raw: np.ndarray, gain: float) -> np.ndarray:
    """``raw`` recorded with ``gain``: the bright voxels clipped flat at 255."""
    return np.clip(np.round(raw.astype(np.float64) * gain), 0, 255).astype(np.uint8)


def test_recipe_25_is_recipe_24_where_nothing_saturates():
    """A noisy volume's brightest voxels are a few, not a plateau: 25 gives 24's values, with
    stripes too; so does a volume whose plateau at the maximum lies above the level."""
    for seed in range(3):
        raw = _nuclei_like(seed)
        for volume in (raw, _striped(raw)):
            np.testing.assert_array_equal(normalize(volume[None], 25), normalize(volume[None], 24))
    bright = _nuclei_like(0).astype(np.uint16)
    bright[2:6, 10:14, 10:14] = 1000  # a saturated cell far above the window: 24 leaves it at 2.5+
    assert normalize(bright[None], 24)[0][3, 11, 11] > 2.5
    np.testing.assert_array_equal(normalize(bright[None], 25), normalize(bright[None], 24))


def test_recipe_25_keeps_the_voxels_a_gain_clips_bright_and_no_other():
    from napari_cellseg_trainer.normalization import SATURATED_LEVEL

    raw = _nuclei_like(1)
    raw[2:6, 10:14, 10:14] = 250  # a bright cell: 5 windows up as recorded
    clipped = _saturating(raw, 2.0)  # the cell and the brightest nucleus voxels at 255
    at_top = clipped == 255
    assert 64 < np.count_nonzero(at_top) < 0.05 * raw.size
    plain, kept = normalize(clipped[None], 24)[0], normalize(clipped[None], 25)[0]
    assert plain[3, 11, 11] < 2.0 <= SATURATED_LEVEL  # 24: the clipped cell falls in the window
    assert kept[3, 11, 11] == pytest.approx(SATURATED_LEVEL)
    np.testing.assert_array_equal(kept[~at_top], plain[~at_top])
    assert np.all(kept[at_top] >= plain[at_top])


def test_recipe_25_leaves_saturated_specks_taken_out():
    from napari_cellseg_trainer.normalization import SATURATED_LEVEL

    raw = _nuclei_like(1)
    raw[2:6, 10:14, 10:14] = 255  # a saturated cell, low in this volume's window
    dark = np.argwhere(ndimage.maximum_filter(raw, size=3) < 60)
    specks = tuple(dark[:: len(dark) // 40].T)
    raw[specks] = 255  # saturated specks in the background
    plain, kept = normalize(raw[None], 24)[0], normalize(raw[None], 25)[0]
    assert plain[3, 11, 11] < 2.0 and kept[3, 11, 11] == pytest.approx(SATURATED_LEVEL)
    assert np.all(kept[specks] < 1.0)  # taken out, not kept bright
    np.testing.assert_array_equal(kept[specks], plain[specks])


def test_recipe_25_block_by_block_equals_the_whole_volume():
    from napari_cellseg_trainer.normalization import normalised_window, streamed_normalizer

    raw = _nuclei_like(2)
    raw[2:6, 10:14, 10:14] = 250
    for volume in (_saturating(raw, 2.0), _saturating(_striped(raw), 2.0)):
        whole = normalize(volume[None], 25)[0]
        assert whole.max() >= 2.5 > normalize(volume[None], 24)[0][3, 11, 11]
        transform = streamed_normalizer(25, volume[None], 0)
        for box in [
            (slice(0, 16), slice(0, 48), slice(0, 48)),
            (slice(1, 5), slice(8, 30), slice(9, 40)),  # across the clipped cell and a stripe
        ]:
            block = normalised_window(
                lambda spans, v=volume: v[spans], box, volume.shape, transform
            )
            np.testing.assert_array_equal(block, whole[box])


# ------------------------------------------------------------------ recipe 26 (the quick preset's)


def _walls_like(seed: int = 0) -> np.ndarray:
    """(16, 48, 48) uint8 like a membrane stack: a bright cytoplasm (noisy, about 100) cut by
    walls (about 200, a fifth of the voxels) that fill the window to its top."""
    rng = np.random.default_rng(seed)
    _, y, x = np.ogrid[:16, :48, :48]
    walls = ((y + x) % 12 < 2) | ((y - x) % 14 < 1)  # slanted: no row is all wall (a stripe)
    raw = np.where(walls, 200.0, 100.0) + rng.normal(0, 8, (16, 48, 48))
    return np.clip(np.round(raw), 0, 255).astype(np.uint8)


def test_recipe_26_is_recipe_25_where_the_saturated_maximum_lies_above_the_window():
    """A gain that clips a bright cell far above the nuclei (the maximum 1.5 windows up or
    more), with stripes too, and a saturated cell among saturated specks: 26 keeps the cell
    bright as 25 does."""
    from napari_cellseg_trainer.normalization import SATURATED_LEVEL

    raw = _nuclei_like(1) // 2  # nuclei at 60: a gain of 2 leaves them in the window
    raw[2:6, 10:14, 10:14] = 250
    specked = _nuclei_like(1)
    specked[2:6, 10:14, 10:14] = 255
    dark = np.argwhere(ndimage.maximum_filter(specked, size=3) < 60)
    specked[tuple(dark[:: len(dark) // 40].T)] = 255
    for volume in (_saturating(raw, 2.0), _saturating(_striped(raw), 2.0), specked):
        kept = normalize(volume[None], 26)
        assert kept[0, 3, 11, 11] == pytest.approx(SATURATED_LEVEL)
        assert normalize(volume[None], 24)[0, 3, 11, 11] < SATURATED_LEVEL
        np.testing.assert_array_equal(kept, normalize(volume[None], 25))


def test_recipe_26_is_recipe_24_where_the_structure_itself_saturates():
    """Walls clipped flat by an offset or a gain (the maximum at the window's top): 25 makes
    them brighter than they ever were, 26 leaves them as 24 does; with saturated specks too."""
    raw = _walls_like(2)
    specked = raw.copy()
    specked[np.random.default_rng(3).random(raw.shape) < 0.01] = 255
    for volume in (_saturating(raw.astype(np.float64) + 60, 1.0), _saturating(raw, 1.3), specked):
        plain = normalize(volume[None], 24)
        assert normalize(volume[None], 25).max() >= 2.5 > plain.max()  # 25 raises the walls
        np.testing.assert_array_equal(normalize(volume[None], 26), plain)


def test_recipe_26_block_by_block_equals_the_whole_volume():
    from napari_cellseg_trainer.normalization import normalised_window, streamed_normalizer

    raw = _nuclei_like(2) // 2
    raw[2:6, 10:14, 10:14] = 250
    volumes = [
        _saturating(raw, 2.0),
        _saturating(_striped(raw), 2.0),
        _saturating(_walls_like(), 1.3),
    ]
    for n, volume in enumerate(volumes):
        whole = normalize(volume[None], 26)[0]
        assert bool(whole.max() >= 2.5) is (n < 2)  # the clipped cell kept bright, the walls not
        transform = streamed_normalizer(26, volume[None], 0)
        for box in [
            (slice(0, 16), slice(0, 48), slice(0, 48)),
            (slice(1, 5), slice(8, 30), slice(9, 40)),
        ]:
            block = normalised_window(
                lambda spans, v=volume: v[spans], box, volume.shape, transform
            )
            np.testing.assert_array_equal(block, whole[box])
