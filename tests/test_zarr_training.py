"""Training folders of OME-Zarr images (``NAME.ome.zarr`` beside ``NAME_GT.ome.zarr``): checked
slab by slab, normalised window by window, and cut into patches each read from its own window,
the same patches as the whole-image rotation gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

zarr = pytest.importorskip(
    "zarr", reason="the zarr extra is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)
pytest.importorskip(
    "ome_zarr", reason="ome-zarr is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)

from napari_cellseg_trainer.data import DataError, load_folder  # noqa: E402
from napari_cellseg_trainer.data.buffer import draw_buffer, rotate_image  # noqa: E402
from napari_cellseg_trainer.data.sampling import Sampling  # noqa: E402
from napari_cellseg_trainer.data.stored_patches import rotated_patch  # noqa: E402
from napari_cellseg_trainer.data.zarr_folder import StoredVolume, in_memory, is_stored  # noqa: E402
from napari_cellseg_trainer.models.geometry import margin_of  # noqa: E402
from napari_cellseg_trainer.training import CheckpointSaved, train  # noqa: E402

VOXEL = (1.0, 0.25, 0.25)


def write_store(path: Path, array: np.ndarray) -> None:
    """An OME-Zarr image (ZYX or CZYX) as the ome-zarr library writes it, with VOXEL."""
    from ome_zarr.writer import write_image

    axes = "zyx" if array.ndim == 3 else "czyx"
    scale = {"c": 1.0, **dict(zip("zyx", VOXEL, strict=True))} if array.ndim == 4 else {}
    scale.update(zip("zyx", VOXEL, strict=True))
    write_image(
        array, zarr.open_group(str(path), mode="w"), axes=axes, scale=scale, scale_factors=()
    )


def zarr_folder_from(tiff_folder: Path, out: Path, with_costmap: set[str]) -> Path:
    """The TIFF training folder ``tiff_folder`` as OME-Zarr stores (cost maps for some)."""
    out.mkdir()
    for gt in sorted(tiff_folder.glob("*_GT.ome.tif")):
        name = gt.name.removesuffix("_GT.ome.tif")
        write_store(out / f"{name}.ome.zarr", tifffile.imread(tiff_folder / f"{name}.ome.tif"))
        write_store(out / f"{name}_GT.ome.zarr", tifffile.imread(gt))
        if name in with_costmap:
            cm = tifffile.imread(tiff_folder / f"{name}_CM.ome.tif")
            write_store(out / f"{name}_CM.ome.zarr", cm)
    return out


@pytest.fixture(scope="module")
def zarr_data(sample_folder, tmp_path_factory) -> Path:
    first = sorted(sample_folder.glob("*_GT.ome.tif"))[0].name.removesuffix("_GT.ome.tif")
    return zarr_folder_from(sample_folder, tmp_path_factory.mktemp("z") / "data", {first})


def test_a_folder_of_stores_loads_lazily_like_its_tiffs(sample_folder, zarr_data):
    from napari_cellseg_trainer.data.folder import image_shapes

    stored = load_folder(zarr_data, 1, 2, (4, 12, 12))
    tiffs = load_folder(sample_folder, 1, 2, (4, 12, 12))
    assert [im.name for im in stored] == [im.name for im in tiffs]
    assert all(is_stored(im) and isinstance(im.raw, StoredVolume) for im in stored)
    assert image_shapes(zarr_data) == image_shapes(sample_folder)
    for s, t in zip(stored, tiffs, strict=True):
        whole = in_memory(s)
        np.testing.assert_array_equal(whole.raw, t.raw)
        np.testing.assert_array_equal(whole.label, t.label)
        assert whole.label.dtype == t.label.dtype == np.uint8
        assert s.voxel_size == pytest.approx(VOXEL)
    # the first image's cost map came with it; the others weigh every voxel 1
    np.testing.assert_array_equal(in_memory(stored[0]).costmap, tiffs[0].costmap)
    assert (in_memory(stored[1]).costmap == 1).all()


@pytest.mark.parametrize(("angle", "flip"), [(37.0, False), (121.5, True)])
def test_a_stored_patch_is_the_whole_image_rotation_cut_at_its_place(angle, flip, tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.random((2, 12, 61, 71)).astype(np.float32)
    label = (rng.random((12, 61, 71)) > 0.7).astype(np.uint8)
    write_store(tmp_path / "a.ome.zarr", raw)
    write_store(tmp_path / "a_GT.ome.zarr", label)
    (image,) = load_folder(tmp_path, 2, 2, (4, 21, 31))
    size_in, size_out = (8, 41, 51), (4, 21, 31)
    margin = margin_of(size_in, size_out)
    # the patch centred on the image's centre: both rotations turn about the same point
    corner = (3, (61 - 21) // 2, (71 - 31) // 2)
    whole_raw, whole_label, whole_cost = rotate_image(in_memory(image), margin, angle, flip)
    raw_p, label_p, cost_p = rotated_patch(image, corner, margin, size_in, size_out, angle, flip)
    z, y, x = corner
    np.testing.assert_allclose(raw_p, whole_raw[:, z : z + 8, y : y + 41, x : x + 51], atol=1e-4)
    np.testing.assert_array_equal(label_p, whole_label[z : z + 4, y : y + 21, x : x + 31])
    np.testing.assert_array_equal(cost_p, whole_cost[z : z + 4, y : y + 21, x : x + 31])
    assert label_p.dtype == np.uint8 and 0 < label_p.mean() < 1


def test_a_buffer_reads_windows_not_the_whole_store(tmp_path):
    rng = np.random.default_rng(1)
    label = np.zeros((16, 400, 400), np.uint8)
    label[:, 200:204, 100:300] = 1  # one thin bar: structure is rare
    write_store(tmp_path / "big.ome.zarr", rng.random(label.shape).astype(np.float32))
    write_store(tmp_path / "big_GT.ome.zarr", label)
    (image,) = load_folder(tmp_path, 1, 2, (4, 12, 12))
    read = []
    inner = image.raw._read

    def counting(spans):
        block = inner(spans)
        read.append(block.size)
        return block

    image.raw._read = counting
    patches = draw_buffer(
        [image],
        8,
        (8, 36, 36),
        (4, 12, 12),
        np.random.default_rng(2),
        sampling=Sampling(foreground_share=1.0),
    )
    assert patches.raw.shape == (8, 1, 8, 36, 36) and patches.label.dtype == np.uint8
    assert all((patches.label[k] > 0).any() for k in range(8))  # centred on the bar
    assert 0 < sum(read) < 0.1 * label.size  # windows only: a tenth of the volume at most


def test_training_from_a_folder_of_stores_runs_with_held_out_slabs(
    zarr_data, tmp_path, stand_in_network
):
    from conftest import make_tiny_config

    cfg = make_tiny_config(zarr_data, tmp_path / "ck")
    cfg.normalization, cfg.holdout, cfg.epochs = 10, 0.25, 1
    saved = [e for e in train(cfg) if isinstance(e, CheckpointSaved)]
    assert saved and Path(saved[-1].path).is_file()


def test_a_whole_volume_normalisation_and_a_broken_store_are_refused(
    zarr_data, tmp_path, stand_in_network
):
    from conftest import make_tiny_config

    cfg = make_tiny_config(zarr_data, tmp_path / "ck")
    cfg.normalization = 11
    with pytest.raises(DataError, match="normalization 11 smooths the whole volume"):
        list(train(cfg))
    broken = tmp_path / "broken"
    broken.mkdir()
    write_store(broken / "a_GT.ome.zarr", np.full((8, 30, 30), 3, np.uint8))
    write_store(broken / "a.ome.zarr", np.zeros((8, 30, 30), np.float32))
    write_store(broken / "b_GT.ome.zarr", np.zeros((8, 30, 30), np.uint8))
    with pytest.raises(DataError) as info:
        load_folder(broken, 1, 2, (4, 12, 12))
    lines = str(info.value).splitlines()
    assert any("a_GT.ome.zarr" in x and "label value(s) 3 outside 0..1" in x for x in lines)
    assert any("b.ome.zarr: missing: the raw image" in x for x in lines)
