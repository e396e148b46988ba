"""Bad input from the command line: one clear line per problem, exit code 2, nothing written.

The cases (counted in the test ids) live in ``bad_inputs.py`` and are shared with the panel's
test (tests/_qt/test_bad_input_panel.py).
"""

from __future__ import annotations

import pytest

from bad_inputs import CONFIG_CASES, DATA_CASES, broken_config, broken_folder, config_ids, data_ids
from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main


@pytest.mark.parametrize("case", range(len(CONFIG_CASES)), ids=config_ids())
@pytest.mark.parametrize("command", ["config check", "train"])
def test_bad_config_exits_2_naming_the_key(command, case, tiny_config, tmp_path, capsys):
    path, key = broken_config(tiny_config, case, tmp_path)
    args = (
        ["config", "check", str(path)]
        if command == "config check"
        else ["train", "--config", str(path)]
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.pytorch"))


@pytest.mark.parametrize("case", range(len(DATA_CASES)), ids=data_ids())
def test_bad_training_folder_exits_2_naming_the_file(case, tiny_config, tmp_path, capsys):
    folder, named = broken_folder(tmp_path, case)
    tiny_config.loader.datafolder = str(folder)
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.pytorch"))


def test_every_input_error_is_caught_as_user_input():
    """The CLI and the panels catch UserInputError: each module's input error must be one."""
    from napari_cellseg_trainer.checkpoint import CheckpointError
    from napari_cellseg_trainer.config import ConfigError
    from napari_cellseg_trainer.data import DataError
    from napari_cellseg_trainer.devices import DeviceError
    from napari_cellseg_trainer.errors import UserInputError
    from napari_cellseg_trainer.inference.images import ImageReadError
    from napari_cellseg_trainer.models.geometry import InvalidSizeError
    from napari_cellseg_trainer.models.memory import MemoryBudgetError
    from napari_cellseg_trainer.normalization import NormalizationError
    from napari_cellseg_trainer.training import TrainingError
    from napari_cellseg_trainer.training.precision import PrecisionError

    for error in (
        CheckpointError,
        ConfigError,
        DataError,
        DeviceError,
        ImageReadError,
        InvalidSizeError,
        MemoryBudgetError,
        NormalizationError,
        PrecisionError,
        TrainingError,
    ):
        assert issubclass(error, UserInputError), error
