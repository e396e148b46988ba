"""Bad input from the command line: one clear line per problem, exit code 2, nothing changed.

The cases (counted in the test ids) live in ``bad_inputs.py``; the config and data cases are
shared with the panel's test (tests/_qt/test_bad_input_panel.py). Every case checks that the
files that existed before are byte for byte unchanged, and that no checkpoint appeared.
"""

from __future__ import annotations

import time

import pytest

import bad_inputs as cases
from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main


def _fails_cleanly(args, tmp_path, capsys, fragment: str, before: dict) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err) < 4000
    assert cases.unchanged(before, tmp_path)
    assert not list(tmp_path.rglob("*.pytorch")) or "checkpoint" in str(args)
    return err


@pytest.mark.parametrize("case", range(len(cases.CONFIG_CASES)), ids=cases.config_ids())
@pytest.mark.parametrize("command", ["config check", "train"])
def test_bad_config_exits_2_naming_the_key(command, case, tiny_config, tmp_path, capsys):
    path, key = cases.broken_config(tiny_config, case, tmp_path)
    args = (
        ["config", "check", str(path)]
        if command == "config check"
        else ["train", "--config", str(path)]
    )
    before = cases.snapshot(tmp_path)
    _fails_cleanly(args, tmp_path, capsys, key, before)


@pytest.mark.parametrize("case", range(len(cases.FILE_CASES)), ids=cases.file_ids())
def test_a_hostile_config_file_is_refused_quickly_in_one_line(case, tmp_path, capsys):
    _, make, fragment = cases.FILE_CASES[case]
    path = make(tmp_path)
    before = cases.snapshot(tmp_path)
    started = time.monotonic()
    err = _fails_cleanly(["config", "check", str(path)], tmp_path, capsys, fragment, before)
    assert time.monotonic() - started < 30  # bounded: the bomb is refused before it expands
    assert len(err) < 1000


def test_a_400_byte_alias_bomb_is_refused_in_seconds_with_a_short_message(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(cases.ALIAS_BOMB)
    assert len(cases.ALIAS_BOMB) < 450
    started = time.monotonic()
    assert main(["config", "check", str(path)]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "expands to more than 100,000 values" in err and len(err) < 300


@pytest.mark.parametrize("case", range(len(cases.DATA_CASES)), ids=cases.data_ids())
def test_bad_training_folder_exits_2_naming_the_file(case, tiny_config, tmp_path, capsys):
    folder, named = cases.broken_folder(tmp_path, case)
    tiny_config.loader.datafolder = str(folder)
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    before = cases.snapshot(tmp_path)
    _fails_cleanly(["train", "--config", str(path)], tmp_path, capsys, named, before)


@pytest.mark.parametrize("case", range(len(cases.RUN_CASES)), ids=cases.run_ids())
def test_a_run_that_cannot_start_exits_2_before_any_work(case, tiny_config, tmp_path, capsys):
    _, change, fragment = cases.RUN_CASES[case]
    change(tiny_config, tmp_path)
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    before = cases.snapshot(tmp_path)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert cases.unchanged(before, tmp_path)


@pytest.mark.parametrize("case", range(len(cases.CHECKPOINT_CASES)), ids=cases.checkpoint_ids())
def test_a_crafted_checkpoint_exits_2_with_one_line(case, tmp_path, capsys):
    checkpoint, fragment = cases.crafted_checkpoint(tmp_path, case)
    image = cases.image(tmp_path / "in" / "cells.tiff")
    args = ["predict", "--checkpoint", str(checkpoint), "--input", str(image)]
    before = cases.snapshot(tmp_path)
    started = time.monotonic()
    _fails_cleanly([*args, "--output", str(tmp_path / "out")], tmp_path, capsys, fragment, before)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", range(len(cases.PREDICT_CASES)), ids=cases.predict_ids())
def test_prediction_that_would_lose_data_exits_2_before_any_tile(
    case, trained_checkpoint, tmp_path, capsys
):
    _, make_args, fragment = cases.PREDICT_CASES[case]
    args = ["predict", "--checkpoint", str(trained_checkpoint), *make_args(tmp_path)]
    before = cases.snapshot(tmp_path)
    _fails_cleanly(args, tmp_path, capsys, fragment, before)
    written = [p for p in tmp_path.rglob("*_struct_segmentation.tiff") if p.name not in str(before)]
    assert not written


def test_sample_data_onto_an_existing_file_or_samples_exits_2(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert main(["sample-data", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"
    folder = tmp_path / "samples"
    assert main(["sample-data", str(folder), "--n-images", "1"]) == 0
    before = cases.snapshot(tmp_path)
    assert main(["sample-data", str(folder), "--n-images", "1"]) == 2
    assert "already holds" in capsys.readouterr().err and cases.unchanged(before, tmp_path)


def test_every_input_error_is_caught_as_user_input():
    """The CLI and the panels catch UserInputError: each module's input error must be one."""
    from napari_cellseg_trainer.checkpoint import CheckpointError
    from napari_cellseg_trainer.config import ConfigError
    from napari_cellseg_trainer.data import DataError
    from napari_cellseg_trainer.data.images import ImageReadError
    from napari_cellseg_trainer.devices import DeviceError
    from napari_cellseg_trainer.errors import UserInputError
    from napari_cellseg_trainer.files import FileWriteError
    from napari_cellseg_trainer.inference.outputs import OutputError
    from napari_cellseg_trainer.inference.tile_choice import TileChoiceError
    from napari_cellseg_trainer.models.geometry import InvalidSizeError
    from napari_cellseg_trainer.models.memory import MemoryBudgetError
    from napari_cellseg_trainer.normalization import NormalizationError
    from napari_cellseg_trainer.training import TrainingError
    from napari_cellseg_trainer.training.metrics import MetricsError
    from napari_cellseg_trainer.training.precision import PrecisionError

    for error in (
        CheckpointError,
        ConfigError,
        DataError,
        DeviceError,
        FileWriteError,
        ImageReadError,
        InvalidSizeError,
        MemoryBudgetError,
        MetricsError,
        NormalizationError,
        OutputError,
        PrecisionError,
        TileChoiceError,
        TrainingError,
    ):
        assert issubclass(error, UserInputError), error
