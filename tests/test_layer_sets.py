"""Training data from napari-style arrays, its export as a folder, and the zoom estimate."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg_trainer.data import DataError, draw_buffer, load_folder, sample_training_image
from napari_cellseg_trainer.data.layer_sets import (
    LayerSet,
    export_training_folder,
    images_from_layers,
)
from napari_cellseg_trainer.data.measure import object_diameters_yx, suggest_zoom

SIZE_IN, SIZE_OUT = (32, 100, 100), (4, 12, 12)


def layer_sets() -> list[LayerSet]:
    """Two sample images as a microscope gives them (uint16) with hand-made labels and masks."""
    sets = []
    for i in range(2):
        raw, label, _ = sample_training_image("filaments", i)
        counts = (raw * 3000 + 100).astype(np.uint16)
        exclude = np.zeros(label.shape, np.uint8)
        exclude[:, :20, :30] = 1 + i  # any label value marks an exclusion
        sets.append(LayerSet(f"cells {i}", counts, label * (3 + i), exclude))
    return sets


def test_layers_and_the_exported_folder_give_the_same_patches(tmp_path):
    sets = layer_sets()
    from_layers = images_from_layers(sets, 1, 2, SIZE_OUT)
    paths = export_training_folder(sets, tmp_path / "folder")
    assert sorted(p.name for p in paths) == sorted(
        f"cells_{i}{s}" for i in range(2) for s in (".ome.tif", "_GT.ome.tif", "_CM.ome.tif")
    )
    from_folder = load_folder(tmp_path / "folder", 1, 2, SIZE_OUT)
    for a, b in zip(from_layers, from_folder, strict=True):
        np.testing.assert_array_equal(a.raw, b.raw)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.costmap, b.costmap)
    one = draw_buffer(from_layers, 6, SIZE_IN, SIZE_OUT, np.random.default_rng(5))
    two = draw_buffer(from_folder, 6, SIZE_IN, SIZE_OUT, np.random.default_rng(5))
    for name in ("raw", "label", "costmap"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))


def test_layer_arrays_are_normalised_binarised_and_masked():
    item = layer_sets()[1]
    (image,) = images_from_layers([item], 1, 2, SIZE_OUT)
    assert image.raw.dtype == np.float32 and image.raw.min() == 0 and image.raw.max() == 1
    assert set(np.unique(image.label)) == {0, 1}  # label value 4 painted: the structure
    assert (image.costmap[:, :20, :30] == 0).all() and (image.costmap[:, 20:, 30:] == 1).all()


def test_bad_layers_are_each_named(tmp_path):
    good, other = layer_sets()
    wrong_shape = LayerSet("wrong", good.raw, good.label[:, :50], None)
    flat = LayerSet("flat", good.raw[0], good.label[0], None)
    with pytest.raises(DataError) as err:
        images_from_layers([good, wrong_shape, flat], 1, 2, SIZE_OUT)
    text = str(err.value)
    assert "'wrong'" in text and "'flat'" in text and "'cells 0'" not in text


def balls(diameter: int, count: int, shape=(12, 300, 300), seed=0) -> np.ndarray:
    """Spheres (flattened in z) of a known y-x diameter, apart from each other."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = diameter / 2
    placed = []
    while len(placed) < count:
        cy, cx = rng.uniform(r + 1, shape[1] - r - 1), rng.uniform(r + 1, shape[2] - r - 1)
        if all((cy - py) ** 2 + (cx - px) ** 2 > (2 * r + 3) ** 2 for py, px in placed):
            placed.append((cy, cx))
            zc = shape[0] / 2
            labels[((y - cy) ** 2 + (x - cx) ** 2) / r**2 + ((z - zc) / 5) ** 2 <= 1] = 1
    return labels


@pytest.mark.parametrize("diameter", [20, 41, 80])
def test_object_diameters_of_synthetic_balls(diameter):
    measured = object_diameters_yx(balls(diameter, 3))
    assert measured.size == 3
    np.testing.assert_allclose(measured, diameter, rtol=0.05)


@pytest.mark.parametrize(
    ("diameter", "model", "zoom"),
    [(40, "unet_xy", None), (300, "unet_xy_zoom", 2), (450, "unet_xy_zoom", 3)],
)
def test_zoom_suggestion_follows_the_diameter(diameter, model, zoom):
    shape = (10, diameter + 20, diameter + 20)
    advice = suggest_zoom(balls(diameter, 1, shape=shape))
    assert (advice.model, advice.zoom_ratio) == (model, zoom)
    assert abs(advice.mean_diameter - diameter) < 0.05 * diameter
    assert f"{advice.mean_diameter:.0f}" in advice.reason


def test_zoom_suggestion_needs_objects():
    with pytest.raises(ValueError, match="no object"):
        suggest_zoom(np.zeros((3, 10, 10), np.uint8))
