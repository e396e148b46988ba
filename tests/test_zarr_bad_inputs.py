"""Bad zarr inputs on the command line: one clear line each, exit 2, nothing written, and nothing
in the input changed."""

from __future__ import annotations

import os
import socket
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

from conftest import Counting  # noqa: E402
from napari_cellseg_trainer.cli import main  # noqa: E402
from napari_cellseg_trainer.inference import PredictionCancelled  # noqa: E402
from napari_cellseg_trainer.inference.chunked import predict_to_zarr  # noqa: E402
from test_zarr_inputs import DATA, _config, _tree, library_v05  # noqa: E402


def not_zarr(folder: Path) -> Path:
    path = folder / "scan.zarr"
    path.mkdir()
    (path / "readme.txt").write_text("not a zarr store")
    return path


def group_without_multiscales(folder: Path) -> Path:
    path = folder / "plain.zarr"
    zarr.open_group(str(path), mode="w").create_array("raw", data=DATA[:4])
    return path


def two_channels_tczyx(folder: Path) -> Path:
    path = folder / "two.ome.zarr"
    from ome_zarr.writer import write_image

    data = np.stack([DATA[:, :40, :50], DATA[:, :40, :50] / 2])[None]
    write_image(data, zarr.open_group(str(path), mode="w"), axes="tczyx", scale_factors=())
    return path


def foreign_axis(folder: Path) -> Path:
    path = folder / "angles.ome.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=DATA[:4])
    axes = [{"name": "angle", "type": "space"}, {"name": "y"}, {"name": "x"}]
    transform = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    dataset = {"path": "0", "coordinateTransformations": transform}
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}
    return path


def unfinished_prediction(folder: Path) -> Path:
    """A block-by-block prediction of this tool stopped after 2 of its 18 blocks."""
    path = folder / "half_struct_segmentation.ome.zarr"
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    cfg = _config(path, folder, "ome-zarr")
    with pytest.raises(PredictionCancelled):
        predict_to_zarr(
            Counting(),
            DATA[None],
            path,
            cfg,
            cfg.size_in,
            cfg.size_out,
            block=(8, 32, 32),
            should_cancel=stop,
        )
    return path


def ome_zarr(folder: Path) -> Path:
    path = folder / "cells.ome.zarr"
    library_v05(path, DATA[:, :40, :50])
    return path


def tiff(folder: Path) -> Path:
    path = folder / "cells.ome.tif"
    tifffile.imwrite(path, DATA[:, :40, :50], ome=True, metadata={"axes": "ZYX"})
    return path


CASES = {
    "not a zarr store": (not_zarr, [], "not a zarr array or OME-Zarr image"),
    "group without multiscales": (
        group_without_multiscales,
        [],
        "without OME-NGFF multiscales, not an image; it holds arrays raw",
    ),
    "several channels, none chosen": (two_channels_tczyx, [], "choose one with --channel"),
    "an axis the models cannot take": (foreign_axis, [], "axis 'angle'"),
    "a level that does not exist": (ome_zarr, ["--level", "7"], "level 7 does not exist"),
    "a level of a TIFF": (tiff, ["--level", "1"], "only OME-Zarr inputs have levels"),
    "a store still being written": (unfinished_prediction, [], "16 of 18 blocks are missing"),
    "the watershed block by block": (
        ome_zarr,
        ["--instances", "watershed"],
        "the watershed needs the whole volume",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_zarr_input_is_one_line_and_changes_nothing(
    case, trained_checkpoint, tmp_path, capsys
):
    make, extra, message = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source = make(inputs)
    before = _tree(inputs)
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(source)]
    code = main([*args, "--output", str(out), "--format", "ome-zarr", *extra])
    errors = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in errors if line.startswith("error")]
    assert code == 2 and len(errors) == 1, errors
    assert message in errors[0]
    assert source.name in errors[0] or "--instances" in extra  # the file, or the flag, named
    assert not out.exists()  # nothing written
    assert _tree(inputs) == before  # nothing in the input changed


def test_a_tiff_result_too_large_for_memory_is_refused_with_its_size(
    trained_checkpoint, tmp_path, capsys, monkeypatch
):
    from napari_cellseg_trainer.inference import inputs

    source = ome_zarr(tmp_path)
    monkeypatch.setattr(inputs, "available_ram", lambda: 2**16)  # 64 KiB left
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(source)]
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    (error,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert "12 x 40 x 50 voxels need about 0.5 MiB in memory" in error
    assert "0.1 MiB are available" in error
    assert "use --format ome-zarr" in error and not (tmp_path / "out").exists()


def test_a_store_another_live_run_is_writing_is_refused(trained_checkpoint, tmp_path, capsys):
    source = ome_zarr(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    marker = out / ".cells_struct_segmentation.ome.zarr.writing-0"
    marker.write_text(f"{os.getppid()}@{socket.gethostname()}")  # our parent: alive
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(source)]
    args += ["--output", str(out), "--format", "ome-zarr"]
    assert main(args) == 2
    (error,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert "is being written by another run" in error and str(os.getppid()) in error
    assert sorted(p.name for p in out.iterdir()) == [marker.name]  # no store begun
    marker.write_text(f"{2**22 + 7}@{socket.gethostname()}")  # a dead run's mark: taken over
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells_struct_segmentation.ome.zarr"]


def test_a_store_at_another_voxel_size_names_the_level_that_matches_the_model(
    trained_checkpoint, tmp_path, capsys
):
    from ome_zarr.writer import write_image

    from napari_cellseg_trainer.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(trained_checkpoint)
    model = save_checkpoint(
        tmp_path / "at_0.6um.pytorch",
        model_state=loaded.model_state,
        optimizer_state=None,
        epoch=1,
        num_iterations=1,
        device="cpu",
        config=loaded.config,
        extra={**loaded.extra, "voxel_size": [1.0, 0.6, 0.6]},
    )
    source = tmp_path / "fine.ome.zarr"  # level 0 at 0.3 um, level 1 at 0.6 um
    scale = {"z": 1.0, "y": 0.3, "x": 0.3}
    write_image(DATA, zarr.open_group(str(source), mode="w"), axes="zyx", scale=scale)
    args = ["predict", "--checkpoint", str(model), "--input", str(source)]
    args += ["--output", str(tmp_path / "out"), "--format", "ome-zarr"]
    assert main(args) == 2
    (error,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error")]
    assert "cannot resize" in error and "--level 1 ([1.0, 0.6, 0.6] um) matches it" in error
    assert not (tmp_path / "out").exists()
    assert main([*args, "--level", "1"]) == 0
    store = tmp_path / "out" / "fine_struct_segmentation.ome.zarr"
    assert zarr.open_group(str(store), mode="r")["0"].shape == (1, 12, 35, 45)
