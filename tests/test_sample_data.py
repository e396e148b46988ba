"""The embedded sample data: deterministic, valid as a training folder, small, and not trivial."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg_trainer.data import (
    SAMPLE_KINDS,
    check_folder,
    load_folder,
    make_sample,
    sample_image,
    write_sample_folder,
)


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_same_seed_same_bytes(kind):
    first, again = make_sample(kind, seed=4), make_sample(kind, seed=4)
    for a, b in zip(first, again, strict=True):
        assert a.tobytes() == b.tobytes()
    assert make_sample(kind, seed=5)[0].tobytes() != first[0].tobytes()


def test_written_folder_is_byte_identical_across_runs(tmp_path):
    one = write_sample_folder(tmp_path / "one", n_images=2)
    two = write_sample_folder(tmp_path / "two", n_images=2)
    assert [p.name for p in one] == [p.name for p in two]
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_sample_folder_passes_check_and_is_small(tmp_path, kind):
    paths = write_sample_folder(tmp_path, kind=kind, n_images=3)
    assert sorted(p.name for p in paths)[:3] == [
        "sample_00.ome.tif",
        "sample_00_CM.ome.tif",
        "sample_00_GT.ome.tif",
    ]
    assert len(paths) == 9
    assert check_folder(tmp_path, nchannel=1, nclass=2, size_out=(4, 12, 12)) == []
    assert sum(p.stat().st_size for p in paths) < 10 * 2**20


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_arrays_have_training_types_and_range(kind):
    raw, label, costmap = make_sample(kind, shape=(16, 64, 80), seed=1)
    assert raw.shape == label.shape == costmap.shape == (16, 64, 80)
    assert raw.dtype == np.float32 and label.dtype == np.uint8 and costmap.dtype == np.float32
    assert set(np.unique(label).tolist()) == {0, 1}
    low, high = np.percentile(raw, [1, 99])
    assert -0.1 < low < 0.2 and 0.5 < high < 1.2


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_foreground_fraction_is_sensible(kind):
    fractions = [make_sample(kind, seed=s)[1].mean() for s in range(3)]
    assert all(0.02 <= f <= 0.40 for f in fractions), fractions


@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_structure_is_visible_but_no_threshold_segments_it(kind):
    raw, label, _ = make_sample(kind, seed=2)
    truth = label == 1
    assert raw[truth].mean() > raw[~truth].mean() + 0.1
    ious = [
        np.count_nonzero((raw > t) & truth) / np.count_nonzero((raw > t) | truth)
        for t in np.linspace(0.05, 0.95, 19)
    ]
    assert max(ious) < 0.9  # blur, noise and uneven background leave work for a network


def test_unannotated_box_has_zero_cost_and_no_label(tmp_path):
    write_sample_folder(tmp_path, n_images=2)
    plain, boxed = load_folder(tmp_path, 1, 2, (4, 12, 12))
    assert np.all(plain.costmap == 1)
    excluded = boxed.costmap == 0
    assert 0 < excluded.mean() < 0.2
    assert not boxed.label[excluded].any()


def test_sample_image_and_unknown_kind():
    image = sample_image("blobs")
    assert image.ndim == 3 and image.dtype == np.float32
    with pytest.raises(ValueError, match="filaments, blobs"):
        make_sample("stars")
