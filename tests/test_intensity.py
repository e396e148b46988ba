"""Predictions that hold on a brighter or dimmer next volume: the acquisition augmentation,
the robust normalisation, and the warning before a prediction on a shifted volume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.data import TrainingImage, draw_buffer, intensity, make_sample
from napari_cellseg_trainer.data.intensity import (
    IntensityBand,
    acquisition_change,
    saturation_warnings,
)
from napari_cellseg_trainer.data.sampling import Sampling
from napari_cellseg_trainer.data.synthetic import synthetic_volume
from napari_cellseg_trainer.normalization import normalize
from napari_cellseg_trainer.training import CheckpointSaved, train


@pytest.fixture(scope="module")
def blobs():
    raw, label, _ = make_sample("blobs", (24, 96, 96), seed=3)
    return (raw * 200 + 10).astype(np.uint8), label


def _gain_only(monkeypatch):
    """The acquisition change reduced to its gain and offset (no gamma, contrast, artefacts)."""
    monkeypatch.setattr(intensity, "GAMMA", (1.0, 1.0))
    monkeypatch.setattr(intensity, "STRUCTURE_CONTRAST", (1.0, 1.0))
    for name in ("SPECK_CHANCE", "STRIPE_CHANCE", "BLOB_CHANCE"):
        monkeypatch.setattr(intensity, name, 0.0)


def test_the_acquisition_change_stays_within_its_gain_and_offset(blobs, monkeypatch):
    raw, label = blobs
    _gain_only(monkeypatch)
    span, low = float(raw.max() - raw.min()), float(raw.min())
    gains, offsets = [], []
    saturated = []
    for seed in range(40):
        out = acquisition_change(raw, np.random.default_rng(seed), label)
        assert out.max() <= raw.max()  # the detector's ceiling: the image's brightest voxel
        below = out < raw.max()  # the gain and offset, read where the detector did not saturate
        gain, offset = np.polyfit(raw[below].astype(np.float64), out[below], 1)
        gains.append(gain)
        offsets.append((offset + gain * low - low) / span)  # the offset added, in ranges
        saturated.append((gain, np.mean(~below)))
    assert intensity.GAIN[0] - 1e-3 <= min(gains) and max(gains) <= intensity.GAIN[1] + 1e-3
    assert max(gains) / min(gains) > 2  # the range is used, not one value
    assert -1e-3 <= min(offsets) and max(offsets) <= intensity.OFFSET + 1e-3
    # a brighter acquisition saturates its brightest structure, a dimmer one nothing
    assert max(share for gain, share in saturated if gain > 1.5) > 0.01
    assert all(share <= np.mean(raw == raw.max()) for gain, share in saturated if gain < 0.9)


def test_the_acquisition_change_leaves_labels_alone_and_adds_its_artefacts(blobs):
    raw, label = blobs
    before = label.copy()
    changed = [acquisition_change(raw, np.random.default_rng(s), label) for s in range(30)]
    assert np.array_equal(label, before)
    saturated = [np.mean(c == c.max()) for c in changed]
    assert max(saturated) > 1e-3  # some got specks or a blob at the top value
    assert all(c.dtype == np.float32 and c.shape == raw.shape for c in changed)


def test_buffers_with_the_acquisition_augmentation_keep_labels_and_the_recipe(blobs):
    """The same patches as without it (labels equal), only the raw changed."""
    raw, label = blobs
    image = TrainingImage(
        "b", normalize(raw[None], 21), label, np.ones(label.shape, np.float32), "b", 21
    )
    args = ([image], 4, (8, 40, 40), (4, 20, 20))
    plain = draw_buffer(*args, np.random.default_rng(5))
    varied = draw_buffer(*args, np.random.default_rng(5), sampling=Sampling(acquisition=21))
    assert np.array_equal(plain.label, varied.label)
    assert not np.allclose(plain.raw, varied.raw)
    assert varied.raw.min() >= -1 and varied.raw.max() <= 10  # recipe 21's bounds


def test_per_patch_every_patch_gets_a_change_of_its_own(blobs, monkeypatch):
    """acquisition_per_patch: one acquisition change a patch instead of one an image and buffer;
    labels still the image's, raw within the recipe's bounds."""
    from napari_cellseg_trainer.data import buffer

    raw, label = blobs
    image = TrainingImage("b", raw[None].astype(np.float32), label, np.ones(label.shape), "b", 21)
    calls = []
    real = buffer.acquisition_change

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(buffer, "acquisition_change", counted)
    args = ([image], 4, (8, 40, 40), (4, 20, 20))
    once = draw_buffer(*args, np.random.default_rng(5), sampling=Sampling(acquisition=21))
    assert len(calls) == 1
    each = Sampling(acquisition=21, per_patch=True)
    varied = draw_buffer(*args, np.random.default_rng(5), sampling=each)
    assert len(calls) == 1 + 4
    for patches in (once, varied):
        assert set(np.unique(patches.label)) <= set(np.unique(label))
        assert patches.raw.min() >= -1 and patches.raw.max() <= 10  # recipe 21's bounds
    assert not np.allclose(once.raw, varied.raw)
    # a bigger image gets fewer changes: their voxels in all bounded by PER_PATCH_VOXELS
    monkeypatch.setattr(buffer, "PER_PATCH_VOXELS", 2 * raw.size)
    draw_buffer(*args, np.random.default_rng(5), sampling=each)
    assert len(calls) == 1 + 4 + 2


def test_acquisition_per_patch_needs_the_acquisition_augmentation(tiny_config):
    tiny_config.acquisition_per_patch = True
    assert [p.key for p in config.validate(tiny_config)] == ["acquisition_per_patch"]
    tiny_config.acquisition_augmentation, tiny_config.normalization = True, 24
    assert config.validate(tiny_config) == []


def test_recipe_21_is_robust_to_a_bright_tail():
    """1% saturated specks: the medians of nucleus and background move by at most 0.15 of their
    separation with recipe 21 (percentiles 5-95), by much more with recipe 20 (1-99.8)."""
    moved = {20: [], 21: []}
    for seed in range(4):
        volume = synthetic_volume("nuclei", (32, 96, 96), seed)
        raw, inside = volume.raw, volume.label > 0
        specked = raw.copy()
        specked[np.random.default_rng(seed).random(raw.shape) < 0.01] = np.iinfo(raw.dtype).max
        for recipe, found in moved.items():
            a, b = normalize(raw[None], recipe)[0], normalize(specked[None], recipe)[0]
            separation = np.median(a[inside]) - np.median(a[~inside])
            shift = max(
                abs(np.median(b[inside]) - np.median(a[inside])),
                abs(np.median(b[~inside]) - np.median(a[~inside])),
            )
            found.append(shift / separation)
    assert max(moved[21]) < 0.15, moved
    assert np.median(moved[20]) > 0.3, moved


def test_the_band_warns_on_a_shifted_volume_not_on_the_training_one(blobs):
    raw, label = blobs
    normalized = normalize(raw[None], 21)
    band = IntensityBand.of([normalized], 21)
    assert band.shift(normalized, 21) is None
    dark = (255 * (raw / 255.0) ** 3).astype(np.uint8)  # a strong gamma: most voxels darker
    line = band.shift(normalize(dark[None], 21), 21)
    assert line and "percentile" in line and "fine-tune" in line
    assert band.shift(normalize(dark[None], 0), 0) is None  # another recipe: not comparable
    assert band.shift(normalize(dark[None], 21), {"ops": []}) is None
    band22 = IntensityBand.of([normalize(raw[None], 22)], 22)  # 24 is 22 after the stripes
    assert band22.shift(normalize(raw[None], 24), 24) is None
    assert band22.shift(normalize(dark[None], 24), 24)
    assert IntensityBand.from_extra({"intensity": band.to_extra()}) == band
    assert IntensityBand.from_extra({"intensity": {"low": "x"}}) is None


def test_the_saturation_warning_fires_where_a_quarter_of_the_voxels_lie_at_the_maximum(blobs):
    raw, _ = blobs
    assert saturation_warnings([raw]) == []
    clipped = np.minimum(raw, np.percentile(raw, 60))  # about 40% of the voxels saturate
    share = np.mean(clipped == clipped.max())
    assert 0.35 < share < 0.45
    (line,) = saturation_warnings([clipped])
    assert line.startswith(
        f"{share:.0%} of this volume's voxels lie at its maximum ({clipped.max():g})"
    )
    assert "lower gain" in line
    fifth = np.minimum(raw, np.percentile(raw, 80))
    assert np.mean(fifth == fifth.max()) < 0.25 and saturation_warnings([fifth]) == []
    specks = raw.copy()
    specks[np.random.default_rng(0).random(raw.shape) < 0.01] = 255
    assert saturation_warnings([specks]) == []
    noisy = np.random.default_rng(1).normal(100, 10, raw.shape)  # a tail thinning out
    assert saturation_warnings([noisy]) == []
    assert saturation_warnings([np.zeros_like(raw)]) == []  # flat: no ceiling to speak of
    lines = saturation_warnings([raw, clipped])  # named by channel when there are several
    assert len(lines) == 1 and lines[0].startswith(f"channel 1: {share:.0%}")


def test_a_checkpoint_records_its_band_and_predict_warns_on_a_shifted_volume(
    tiny_config, tmp_path, capsys, blobs, monkeypatch, stand_in_predictor
):
    """The stand-in network trains and predicts: the band comes from the data, the warning
    from the volume to predict, neither from the network."""
    from conftest import StandInPredictor
    from napari_cellseg_trainer.training import step

    monkeypatch.setattr(step, "build_network", StandInPredictor)
    cfg = tiny_config
    cfg.epochs, cfg.normalization, cfg.acquisition_augmentation = 1, 21, True
    cfg.preview_every_n_iter = 0
    assert config.validate(cfg) == []
    (saved,) = [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)]
    band = IntensityBand.from_extra(ckpt.load_checkpoint(saved).extra)
    assert band is not None and band.augmented and band.recipe == 21
    sample = next(p for p in sorted(cfg_folder(cfg).glob("*.tif*")) if "_GT" not in p.name)
    image = tifffile.imread(sample)[:16, :48, :48]  # a corner: the band, not the tile, is tested
    tifffile.imwrite(tmp_path / "same.tif", image)
    tifffile.imwrite(tmp_path / "dark.tif", (np.clip(image, 0, None) ** 4).astype(np.float32))
    saturated = np.minimum(image, np.percentile(image, 50)).astype(np.float32)
    share = np.mean(saturated == saturated.max())  # about half the voxels at the ceiling
    tifffile.imwrite(tmp_path / "saturated.tif", saturated)
    for name, shifted, clipped in (
        ("same", False, False),
        ("dark", True, False),
        ("saturated", True, True),
    ):
        for fmt in ("tiff", "ome-zarr"):  # in memory, and block by block
            args = ["predict", "--checkpoint", str(saved), "--input", str(tmp_path / f"{name}.tif")]
            out = ["--output", str(tmp_path / f"out-{name}-{fmt}"), "--format", fmt]
            assert main([*args, *out]) == 0
            err = capsys.readouterr().err
            assert ("warning: this volume's intensities differ" in err) is shifted, (fmt, err)
            saying = f"warning: {share:.0%} of this volume's voxels lie at its maximum"
            assert (saying in err) is clipped, (fmt, err)


def cfg_folder(cfg):
    from pathlib import Path

    return Path(cfg.loader.datafolder)


def test_acquisition_augmentation_needs_a_normalisation(tiny_config):
    tiny_config.acquisition_augmentation = True
    problems = config.validate(tiny_config)
    assert [p.key for p in problems] == ["acquisition_augmentation"]
