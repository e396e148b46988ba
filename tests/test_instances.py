"""Instance labels from probability maps: watershed separates touching balls, components do not."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg_trainer.errors import UserInputError
from napari_cellseg_trainer.evaluation import (
    InstanceError,
    InstanceParams,
    default_params,
    label_instances,
)

SHAPE = (32, 48, 64)
RADIUS = 8


def ball(centre: tuple[int, int, int], radius: int = RADIUS, shape=SHAPE) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cz, cy, cx = centre
    return (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


@pytest.fixture
def touching_balls() -> tuple[np.ndarray, np.ndarray]:
    """Two balls of radius 8 whose centres are 14 voxels apart: they overlap in a neck."""
    return ball((16, 24, 25)), ball((16, 24, 39))


def test_watershed_splits_two_touching_balls(touching_balls):
    a, b = touching_balls
    labels = label_instances((a | b).astype(np.float32), InstanceParams(method="watershed"))
    assert labels.dtype == np.uint32
    sizes = np.bincount(labels.ravel())[1:]
    assert len(sizes) == 2
    one_ball = a.sum()
    assert np.all(np.abs(sizes - one_ball) <= 0.15 * one_ball)
    # Each label sits on its own ball: the centres get different labels.
    assert labels[16, 24, 25] != labels[16, 24, 39]


def test_probability_seeds_split_balls_with_a_dip_between(touching_balls):
    a, b = touching_balls
    probability = np.maximum(_bump(a, (16, 24, 25)), _bump(b, (16, 24, 39)))
    params = InstanceParams(method="watershed", seeds="probability", threshold=0.1)
    labels = label_instances(probability, params)
    assert labels.max() == 2
    assert labels[16, 24, 25] != labels[16, 24, 39]


def _bump(inside: np.ndarray, centre: tuple[int, int, int]) -> np.ndarray:
    """A probability that falls from 1 at ``centre`` to 0.2 at the ball's rim."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    return np.where(inside, 1 - 0.8 * r / RADIUS, 0).astype(np.float32)


def test_a_single_ball_stays_one_label():
    labels = label_instances(ball((16, 24, 32)).astype(np.float32), InstanceParams())
    assert labels.max() == 1
    assert np.count_nonzero(labels) == ball((16, 24, 32)).sum()


def test_components_keep_touching_balls_as_one(touching_balls):
    a, b = touching_balls
    labels = label_instances((a | b).astype(np.float32), InstanceParams(method="components"))
    assert labels.max() == 1
    assert np.count_nonzero(labels) == (a | b).sum()


@pytest.mark.parametrize("method", ["watershed", "components"])
def test_min_size_removes_a_speck(method):
    probability = ball((16, 24, 20)).astype(np.float32)
    probability[5:7, 40:42, 55:57] = 0.9  # 8 voxels, far from the ball
    kept = label_instances(probability, InstanceParams(method=method, min_size=1))
    removed = label_instances(probability, InstanceParams(method=method, min_size=9))
    assert kept.max() == 2
    assert removed.max() == 1
    assert removed[6, 41, 56] == 0 and removed[16, 24, 20] == 1


def test_threshold_decides_the_foreground():
    probability = np.zeros(SHAPE, dtype=np.float32)
    probability[ball((16, 24, 20))] = 0.6
    probability[ball((16, 24, 44))] = 0.4
    labels = label_instances(probability, InstanceParams(threshold=0.5))
    assert labels.max() == 1
    assert labels[16, 24, 20] == 1 and labels[16, 24, 44] == 0
    assert label_instances(np.zeros(SHAPE, np.float32)).max() == 0


def test_anisotropic_spacing_still_splits_flattened_balls():
    """Balls sampled with z steps 2x the pixel size: 8 z slices instead of 16."""
    full = ball((16, 24, 25)) | ball((16, 24, 39))
    flat = full[::2].astype(np.float32)
    params = InstanceParams(spacing=(2.0, 1.0, 1.0))
    labels = label_instances(flat, params)
    assert labels.max() == 2
    assert labels[8, 24, 25] != labels[8, 24, 39]


def test_defaults_per_model():
    assert default_params("unet_xy").method == "components"
    zoom = default_params("unet_xy_zoom")
    assert zoom.method == "watershed" and zoom.seeds == "distance"
    with pytest.raises(InstanceError, match="unet_xy, unet_xy_zoom"):
        default_params("resnet")


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 1.5), ("method", "slic"), ("min_distance", 0), ("spacing", (1.0, 0.0, 1.0))],
)
def test_bad_params_are_user_errors(field, value):
    with pytest.raises(UserInputError, match=field):
        InstanceParams(**{field: value})


def test_spacing_must_fit_the_dimensions():
    with pytest.raises(InstanceError, match="spacing"):
        label_instances(np.zeros((4, 4), np.float32), InstanceParams())


def test_the_cli_writes_instances_beside_the_result_with_the_voxel_size(
    trained_checkpoint, tmp_path, capsys
):
    import tifffile

    from napari_cellseg_trainer.cli import main
    from napari_cellseg_trainer.data.images import voxel_size_of

    image = tmp_path / "cells.ome.tif"
    data = np.random.default_rng(0).random((6, 30, 40)).astype(np.float32)
    meta = {"axes": "ZYX", "PhysicalSizeZ": 1.0, "PhysicalSizeY": 0.25, "PhysicalSizeX": 0.25}
    tifffile.imwrite(image, data, ome=True, metadata=meta)
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(image)]
    assert main([*args, "--output", str(out), "--instances", "components"]) == 0
    assert "instances: components at threshold 0.50" in capsys.readouterr().err
    probability = tifffile.imread(out / "cells_struct_segmentation.tiff")
    labels = tifffile.imread(out / "cells_instances.tiff")
    assert labels.shape == probability.shape and np.issubdtype(labels.dtype, np.integer)
    spacing = (1.0, 0.25, 0.25)
    expected = label_instances(
        probability, InstanceParams(method="components", min_size=10, spacing=spacing)
    )
    np.testing.assert_array_equal(labels, expected)
    assert voxel_size_of(out / "cells_instances.tiff") == pytest.approx(spacing)
    # a second run refuses to replace them, naming the file
    assert main([*args, "--output", str(out), "--instances"]) == 2
    assert "already exists" in capsys.readouterr().err
