"""The bad-input matrix shared by the CLI and panel tests: configs and training folders.

Each config case turns a valid config mapping into a broken one and names the key its message
must carry; each data case breaks one file of a good folder (from test_data_folder) or the
folder itself and names the file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import yaml

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_training_image
from test_data_folder import BROKEN, _good_arrays


def _set(key: str, value) -> Callable[[dict, Path], None]:
    def mutate(data: dict, tmp: Path) -> None:
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value(tmp) if callable(value) else value

    return mutate


def _unwritable(tmp: Path) -> str:
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return str(blocker / "checkpoints")


# (name, mutation, the key the message names)
CONFIG_CASES: list[tuple[str, Callable[[dict, Path], None], str]] = [
    ("wrong type", _set("epochs", "many"), "epochs"),
    ("out of range", _set("learning_rate", -0.1), "learning_rate"),
    ("zero batch", _set("loader.batch_size", 0), "loader.batch_size"),
    ("invalid size_in", _set("size_in", [48, 150, 150]), "size_in"),
    ("size pair mismatch", _set("size_out", [20, 50, 50]), "size_out"),
    ("nclass wrong length", _set("nclass", [2, 2]), "nclass"),
    ("loss_weight wrong length", _set("loss.loss_weight", [1, 1]), "loss.loss_weight"),
    ("unknown model", _set("model.name", "unet_3d"), "model.name"),
    ("unknown key", _set("loader.batch_sise", 4), "loader.batch_sise"),
    ("bad device", _set("device", "gpu7"), "device"),
    (
        "missing data folder",
        _set("loader.datafolder", lambda t: str(t / "nowhere")),
        "loader.datafolder",
    ),
    ("unwritable checkpoint_dir", _set("checkpoint_dir", _unwritable), "checkpoint_dir"),
]


def config_ids() -> list[str]:
    n = len(CONFIG_CASES)
    return [f"config {i:02d} of {n} - {name}" for i, (name, _, _) in enumerate(CONFIG_CASES, 1)]


def broken_config(cfg: config.TrainConfig, case: int, tmp: Path) -> tuple[Path, str]:
    """Write config case ``case`` (0-based) to a file; return (path, key)."""
    _, mutate, key = CONFIG_CASES[case]
    data = copy.deepcopy(yaml.safe_load(config.dump_config(cfg)))
    mutate(data, tmp)
    path = tmp / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, key


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


DATA_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    **{name: (make, file) for name, (make, file, _) in BROKEN.items()},
    "empty folder": (_empty, "no training images"),
}


def data_ids() -> list[str]:
    n = len(DATA_CASES)
    return [f"data {i:02d} of {n} - {name}" for i, name in enumerate(DATA_CASES, 1)]


def broken_folder(tmp: Path, case: int) -> tuple[Path, str]:
    """A training folder broken as data case ``case`` (0-based); return (folder, what it names)."""
    folder = tmp / "train"
    for i, name in enumerate(["b_img", "a_img"]):
        write_training_image(folder, name, *_good_arrays(i))
    make, named = list(DATA_CASES.values())[case]
    make(folder)
    return folder, named
