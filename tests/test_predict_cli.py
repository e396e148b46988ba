"""Prediction from the command line, with a checkpoint trained in the tests."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main

# Prediction may use larger tiles than training (the network is fully convolutional).
BIG_TILES = ["--set", "size_in=[40, 132, 132]"]  # 12 planes out: one tile deep


def short_form(checkpoint, image, out, *extra: str) -> int:
    """``cellseg-trainer predict --checkpoint CK --input IMG --output OUT`` with bigger tiles."""
    args = ["predict", "--checkpoint", str(checkpoint), "--input", str(image), "--output", str(out)]
    return main([*args, *BIG_TILES, *extra])


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path, rng.random((9, 37, 41), dtype=np.float32), ome=True, metadata={"axes": "ZYX"}
    )
    return path


def test_short_form_writes_a_segmentation_named_as_the_cli_names_it(
    trained_checkpoint, image_file, tmp_path, capsys
):
    out = tmp_path / "out"
    code = short_form(trained_checkpoint, image_file, out, "--threshold", "0.5", "--device", "cpu")
    assert code == 0
    written = out / "cells_struct_segmentation.tiff"
    assert capsys.readouterr().out.strip() == str(written)
    seg = tifffile.imread(written)
    assert seg.shape == (9, 37, 41) and seg.dtype == np.uint8
    assert set(np.unique(seg)) <= {0, 255}


def test_config_form_folder_mode_with_several_outputs(trained_checkpoint, image_file, tmp_path):
    cfg = config.PredictConfig(model_path=str(trained_checkpoint), OutputDir=str(tmp_path / "o"))
    cfg.size_in, cfg.size_out = [40, 132, 132], [12, 44, 44]
    cfg.OutputCh = [0, 1, 2, 1]
    cfg.mode.name, cfg.mode.InputDir, cfg.mode.DataType = (
        "folder",
        str(image_file.parent),
        ".ome.tif",
    )
    cfg.Normalization, cfg.device = 0, "cpu"
    path = config.save_config(cfg, tmp_path / "predict.yaml")
    assert main(["predict", "--config", str(path)]) == 0
    for index in (0, 2):
        prob = tifffile.imread(tmp_path / "o" / f"cells_seg_{index}.tiff")
        assert prob.dtype == np.float32 and prob.shape == (9, 37, 41)
        assert 0.0 <= prob.min() <= prob.max() <= 1.0


def test_timelapse_writes_one_file_per_time_point(trained_checkpoint, tmp_path):
    movie = tmp_path / "movie.ome.tif"
    data = np.random.default_rng(0).random((2, 5, 30, 30), dtype=np.float32)
    tifffile.imwrite(movie, data, ome=True, metadata={"axes": "TZYX"})
    cfg = config.PredictConfig(model_path=str(trained_checkpoint), OutputDir=str(tmp_path / "o"))
    cfg.size_in, cfg.size_out = [40, 132, 132], [12, 44, 44]
    cfg.mode.InputFile, cfg.mode.timelapse, cfg.device = str(movie), True, "cpu"
    path = config.save_config(cfg, tmp_path / "predict.yaml")
    assert main(["predict", "--config", str(path)]) == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["movie_T_000_struct_segmentation.tiff", "movie_T_001_struct_segmentation.tiff"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "InputCh=[3]"], "InputCh [3] asks for channel 3, but the image has 1"),
        (
            ["--set", "model.name=unet_xy_zoom", "--set", "size_in=[40, 276, 276]"],
            "checkpoint does not match the model",
        ),
        (["--set", "Normalization=99"], "99"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    trained_checkpoint, image_file, tmp_path, capsys, extra, message
):
    code = short_form(trained_checkpoint, image_file, tmp_path / "o", *extra)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_file_exits_2(trained_checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    code = main(["predict", "--checkpoint", str(trained_checkpoint), "--input", str(broken)])
    assert code == 2
    assert "broken.tif: not a readable TIFF" in capsys.readouterr().err
