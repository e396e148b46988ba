"""The generator of confocal volumes the starters are pretrained on: exact labels that line up
with the raw, and a raw with the statistics of real stacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_cellseg_trainer.data.quality import neighbour_correlation
from napari_cellseg_trainer.data.synthetic import SCENES, synthetic_volume

SHAPE = (40, 96, 96)
SEEDS = range(8)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei_1135"


@pytest.fixture(scope="module")
def volumes():
    return {scene: [synthetic_volume(scene, SHAPE, s) for s in SEEDS] for scene in SCENES}


def _auc(values_in: np.ndarray, values_out: np.ndarray) -> float:
    """Probability that a structure voxel is brighter than a background voxel."""
    rng = np.random.default_rng(0)
    a = rng.choice(values_in, 20_000)
    b = rng.choice(values_out, 20_000)
    return float((a > b).mean() + 0.5 * (a == b).mean())


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_volume():
    a, b = synthetic_volume("nuclei", SHAPE, 3), synthetic_volume("nuclei", SHAPE, 3)
    assert np.array_equal(a.raw, b.raw) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.raw, synthetic_volume("nuclei", SHAPE, 4).raw)


def test_volumes_are_what_a_microscope_writes(volumes):
    every = [v for drawn in volumes.values() for v in drawn]
    for v in every:
        assert v.raw.shape == v.label.shape == SHAPE
        assert v.raw.dtype in (np.uint8, np.uint16)
        assert set(np.unique(v.label)) <= {0, 1}
        assert v.spacing[1:] == (1.0, 1.0) and v.spacing[0] >= 1.0
    assert {v.raw.dtype for v in every} == {np.dtype(np.uint8), np.dtype(np.uint16)}
    assert any(v.raw.max() == np.iinfo(v.raw.dtype).max for v in every)  # some saturate


@pytest.mark.parametrize("scene", SCENES)
def test_labels_line_up_with_the_raw(volumes, scene):
    """The structure is brighter than its background where the label says, and the match is
    worse when the label is shifted by a few voxels (so it is not just a bright region)."""
    aligned, shifted = [], []
    for v in volumes[scene]:
        smooth = ndimage.gaussian_filter(v.raw.astype(np.float32), 1)
        inside = v.label > 0
        if inside.all() or not inside.any():
            continue
        aligned.append(_auc(smooth[inside], smooth[~inside]))
        moved = np.roll(inside, 6, axis=2)
        shifted.append(_auc(smooth[moved], smooth[~moved]))
    assert len(aligned) >= 6
    assert np.median(aligned) > 0.75, aligned
    assert np.median(aligned) > np.median(shifted) + 0.1, (aligned, shifted)


def test_nuclei_have_instances_of_a_range_of_sizes_some_touching(volumes):
    sizes, touching = [], 0
    for v in volumes["nuclei"]:
        ids = np.unique(v.instances)[1:]
        assert np.array_equal(v.label > 0, v.instances > 0)
        sizes += list(np.bincount(v.instances.ravel())[ids])
        # two instances that share a face: the touching nuclei a threshold joins
        for axis in range(3):
            a = np.take(v.instances, range(SHAPE[axis] - 1), axis=axis)
            b = np.take(v.instances, range(1, SHAPE[axis]), axis=axis)
            touching += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    assert np.percentile(sizes, 90) > 4 * np.percentile(sizes, 10)
    assert touching > 0


def test_the_raw_has_the_statistics_of_real_stacks(volumes):
    """Neighbour correlations over the generated volumes span the real stacks' (nuclei_1135:
    0.57 along x, 0.56 along z): from noisy to smooth, never pure noise."""
    found = [neighbour_correlation(v.raw) for drawn in volumes.values() for v in drawn]
    assert min(found) < 0.5 < 0.6 < max(found)
    assert min(found) > 0.1  # each volume shows its structure, unlike a damaged raw
    anisotropic = [v for v in volumes["tissue"] + volumes["nuclei"] if v.spacing[0] >= 3]
    assert anisotropic, "some volumes have coarse z steps"


def test_the_generated_range_covers_nuclei_1135():
    if not REAL.is_dir():
        pytest.skip(f"real data not found at {REAL} (see ../shared/data/README.md)")
    import tifffile

    real = tifffile.imread(next(REAL.glob("*_raw.ome.tif")))
    target = neighbour_correlation(real)
    found = [neighbour_correlation(synthetic_volume("nuclei", SHAPE, s).raw) for s in range(12)]
    assert min(found) < target < max(found), (target, found)


@pytest.mark.parametrize(("scene", "shape"), [("moon", SHAPE), ("nuclei", (4, 96, 96))])
def test_a_bad_request_names_what_is_allowed(scene, shape):
    with pytest.raises(ValueError, match="nuclei|>= 8"):
        synthetic_volume(scene, shape)
