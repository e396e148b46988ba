"""Microscope files: OME-TIFF and OME-Zarr read alike through tifffile/zarr and through bioio,
channels chosen by name or index, voxel sizes kept from the file to the output."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellseg_trainer._reader import get_reader
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.data.images import (
    ImageReadError,
    channel_names,
    read_microscopy,
    voxel_size_of,
)

pytest.importorskip("bioio", reason="the bioio extra is not installed: pip install '.[bioio]'")
pytest.importorskip("ome_zarr", reason="the zarr extra is not installed: pip install '.[zarr]'")

VOXEL = (0.5, 0.2, 0.2)
DATA = np.random.default_rng(0).integers(0, 100, (2, 6, 20, 30)).astype(np.uint16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import zarr
    from ome_zarr.writer import write_image

    folder = tmp_path_factory.mktemp("microscope")
    tiff = folder / "two.ome.tif"
    meta = {"axes": "CZYX", "PhysicalSizeZ": 0.5, "PhysicalSizeY": 0.2, "PhysicalSizeX": 0.2}
    tifffile.imwrite(tiff, DATA, ome=True, metadata={**meta, "Channel": {"Name": ["DAPI", "GFP"]}})
    store = folder / "two.ome.zarr"
    window = {"start": 0, "end": 100, "min": 0, "max": 65535}
    channels = [{"label": n, "color": "FFFFFF", "window": window} for n in ("DAPI", "GFP")]
    write_image(
        DATA,
        zarr.open_group(str(store), mode="w"),
        axes="czyx",
        scale={"c": 1.0, **dict(zip("zyx", VOXEL, strict=True))},
        scale_factors=(),
        omero={"channels": channels},
    )
    return tiff, store


@pytest.mark.parametrize("which", [0, 1], ids=["ome-tiff", "ome-zarr"])
def test_our_reading_and_bioios_agree_on_pixels_voxel_size_and_channels(files, which):
    from napari_cellseg_trainer.data.images import _read_bioio

    path = files[which]
    ours, theirs = read_microscopy(path), _read_bioio(path, header_only=False)
    assert ours.shape == theirs.shape == (1, 2, 6, 20, 30)
    np.testing.assert_array_equal(ours.data, theirs.data)
    np.testing.assert_array_equal(ours.data[0], DATA)
    assert ours.voxel_size == pytest.approx(VOXEL) and theirs.voxel_size == pytest.approx(VOXEL)
    assert channel_names(path) == ["DAPI", "GFP"]


def test_a_channel_by_name_is_predicted_and_the_voxel_size_written(
    files, trained_checkpoint, tmp_path, capsys
):
    tiff, _ = files
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(tiff)]
    assert main([*args, "--output", str(tmp_path), "--channel", "GFP"]) == 0
    out = tmp_path / "two_struct_segmentation.tiff"
    assert voxel_size_of(out) == pytest.approx(VOXEL)
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "b"), "--channel", "mCherry"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mCherry" in err[0] and "DAPI" in err[0] and "GFP" in err[0]


def test_a_file_bioio_cannot_read_is_one_line_naming_it(trained_checkpoint, tmp_path, capsys):
    bad = tmp_path / "scan.czi"
    bad.write_bytes(b"not a czi file" * 10)
    before = bad.read_bytes()
    with pytest.raises(ImageReadError, match="scan.czi"):
        read_microscopy(bad)
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(bad)]
    args += ["--output", str(tmp_path / "o")]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "scan.czi" in errors[0] and "pip install bioio-czi" in errors[0]
    assert len(errors[0]) < 300 and bad.read_bytes() == before


def test_the_reader_opens_an_ome_zarr_lazily_one_named_layer_per_channel(files):
    _, store = files
    layers = get_reader(str(store))(str(store))
    assert [meta["name"] for _, meta, _ in layers] == ["two [DAPI]", "two [GFP]"]
    for (data, meta, kind), expected in zip(layers, DATA, strict=True):
        assert kind == "image" and meta["scale"] == pytest.approx(VOXEL)
        assert type(data).__module__.startswith("dask")  # napari reads what it shows
        np.testing.assert_array_equal(np.asarray(data), expected)
