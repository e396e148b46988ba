"""The bad-input matrix shared by the CLI and panel tests.

Each case breaks one thing and names what the message must carry. The kinds:
- CONFIG_CASES: a valid config mapping, one value broken (the key is named);
- FILE_CASES: a config file that is not a config (hostile, huge, malformed);
- DATA_CASES: one file of a good training folder broken (the file is named);
- RUN_CASES: a valid config whose run cannot start (memory, an occupied folder, no signal);
- CHECKPOINT_CASES: a crafted or damaged checkpoint given to ``predict``;
- PREDICT_CASES: prediction arguments that would lose or corrupt results.
Every case is also checked to leave the files that existed before byte for byte unchanged.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_training_image
from napari_cellseg_trainer.models import build_model
from test_data_folder import BROKEN, _good_arrays


def _set(key: str, value) -> Callable[[dict, Path], None]:
    def mutate(data: dict, tmp: Path) -> None:
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value(tmp) if callable(value) else value

    return mutate


def _both(*mutations):
    def mutate(data: dict, tmp: Path) -> None:
        for m in mutations:
            m(data, tmp)

    return mutate


def _unwritable(tmp: Path) -> str:
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return str(blocker / "checkpoints")


def _dangling(tmp: Path) -> str:
    link = tmp / "dangling"
    link.symlink_to(tmp / "nowhere" / "at_all")
    return str(link)


def _looping(tmp: Path) -> str:
    a, b = tmp / "loop_a", tmp / "loop_b"
    a.symlink_to(b)
    b.symlink_to(a)
    return str(a / "checkpoints")


# (name, mutation, the key the message names)
CONFIG_CASES: list[tuple[str, Callable[[dict, Path], None], str]] = [
    ("wrong type", _set("epochs", "many"), "epochs"),
    ("out of range", _set("learning_rate", -0.1), "learning_rate"),
    ("400-digit learning rate", _set("learning_rate", 10**400), "learning_rate"),
    ("zero batch", _set("loader.batch_size", 0), "loader.batch_size"),
    ("invalid size_in", _set("size_in", [48, 150, 150]), "size_in"),
    ("size pair mismatch", _set("size_out", [20, 50, 50]), "size_out"),
    ("nclass wrong length", _set("nclass", [2, 2]), "nclass"),
    ("loss_weight wrong length", _set("loss.loss_weight", [1, 1]), "loss.loss_weight"),
    ("unknown model", _set("model.name", "unet_3d"), "model.name"),
    ("unknown key", _set("loader.batch_sise", 4), "loader.batch_sise"),
    ("bad device", _set("device", "gpu7"), "device"),
    ("early_stop without holdout", _set("early_stop", 5), "early_stop"),
    (
        "resume and finetune_from",
        _both(_set("resume", lambda t: str(t)), _set("finetune_from", lambda t: str(t))),
        "finetune_from",
    ),
    ("unknown normalization recipe", _set("normalization", 99), "normalization"),
    (
        "missing data folder",
        _set("loader.datafolder", lambda t: str(t / "nowhere")),
        "loader.datafolder",
    ),
    ("unwritable checkpoint_dir", _set("checkpoint_dir", _unwritable), "checkpoint_dir"),
    ("dangling symlink checkpoint_dir", _set("checkpoint_dir", _dangling), "checkpoint_dir"),
    ("looping symlink checkpoint_dir", _set("checkpoint_dir", _looping), "checkpoint_dir"),
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


# --------------------------------------------------------------------------- config files

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def _write(text: str | bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "hostile.yaml"
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    return make


def _folder(tmp: Path) -> Path:
    path = tmp / "a_folder.yaml"
    path.mkdir()
    return path


# (name, make the file, what the message says)
FILE_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("400-byte alias bomb", _write(ALIAS_BOMB), "expands to more than"),
    ("nested 600 deep", _write("a: " + "[" * 600 + "]" * 600 + "\n"), "nested more than"),
    ("5 MB of YAML", _write("# padding\n" * 500_000 + "epochs: 3\n"), "a config is a few KB"),
    ("duplicate key", _write("epochs: 3\nepochs: 400\n"), "appears twice"),
    ("top-level list", _write("- epochs\n- 3\n"), "must be a mapping"),
    ("top-level string", _write("just some words\n"), "must be a mapping"),
    ("not UTF-8", _write(b"epochs: \xff\xfe\n"), "cannot read config file"),
    (
        "python object tag",
        _write("epochs: !!python/object/apply:os.system [ls]\n"),
        "not valid YAML",
    ),
    ("a folder, not a file", _folder, "is a folder"),
]


def file_ids() -> list[str]:
    n = len(FILE_CASES)
    return [f"file {i:02d} of {n} - {name}" for i, (name, _, _) in enumerate(FILE_CASES, 1)]


# --------------------------------------------------------------------------- data folders


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


def _zero_cost(folder: Path) -> None:
    for cm in folder.glob("*_CM.ome.tif"):
        shape = tifffile.imread(cm).shape
        tifffile.imwrite(cm, np.zeros(shape, np.float32), ome=True, metadata={"axes": "ZYX"})


DATA_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    **{name: (make, file) for name, (make, file, _) in BROKEN.items()},
    "empty folder": (_empty, "no training images"),
    "every cost map zero": (_zero_cost, "cost map is 0 everywhere"),
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


# --------------------------------------------------------------------------- runs


def _occupied(cfg: config.TrainConfig, tmp: Path) -> None:
    folder = Path(cfg.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint_epoch_1.pytorch").write_bytes(b"an earlier run's weights")
    (folder / "metrics.csv").write_text("epoch,iteration,mean_loss\n1,2,0.5\n")


def _huge_buffer(cfg: config.TrainConfig, tmp: Path) -> None:
    cfg.loader.PatchPerBuffer = 100_000_000


# (name, change to a good config, what the message says)
RUN_CASES: list[tuple[str, Callable[[config.TrainConfig, Path], None], str]] = [
    ("checkpoint_dir holds another run", _occupied, "already holds a training run"),
    ("PatchPerBuffer needs more memory than there is", _huge_buffer, "PatchPerBuffer"),
]


def run_ids() -> list[str]:
    n = len(RUN_CASES)
    return [f"run {i:02d} of {n} - {name}" for i, (name, _, _) in enumerate(RUN_CASES, 1)]


# --------------------------------------------------------------------------- checkpoints


def _state() -> dict:
    torch.manual_seed(0)
    return build_model("unet_xy").state_dict()


def _payload(**changes) -> dict:
    cfg = config.template("unet_xy")
    cfg.size_in, cfg.size_out = [32, 100, 100], [4, 12, 12]
    payload = {
        "epoch": 1,
        "num_iterations": 2,
        "model_state_dict": _state(),
        "optimizer_state_dict": None,
        "device": "cpu",
        "config": cfg.to_dict(),
    }
    payload.update(changes)
    return payload


def _nan_weights() -> dict:
    state = _state()
    state["ec1.0.weight"] = torch.full_like(state["ec1.0.weight"], float("nan"))
    return _payload(model_state_dict=state)


def _bomb_config() -> dict:
    level = ["x"] * 9
    for _ in range(12):
        level = [level] * 9  # shared lists: tiny to pickle, 9^13 values to walk
    return _payload(config={"model": {"name": "unet_xy"}, "nested": level})


def _no_model_config() -> dict:
    payload = _payload()
    del payload["config"]["model"]
    payload["config"]["size_in"] = "big"
    return payload


# (name, make the payload saved with torch.save, what the message says)
CHECKPOINT_CASES: list[tuple[str, Callable[[], object], str]] = [
    ("model_state_dict a list", lambda: _payload(model_state_dict=[1, 2, 3]), "state dict"),
    ("int keys", lambda: _payload(model_state_dict={1: torch.zeros(1)}), "not text"),
    ("an int for a weight", lambda: _payload(model_state_dict={"w": 3}), "is not a tensor"),
    ("config without model", _no_model_config, "has no model section"),
    ("config of the wrong type", lambda: _payload(config=[1, 2]), "not a mapping"),
    ('epoch "many"', lambda: _payload(epoch="many"), "epoch must be a whole number"),
    ("NaN weights", _nan_weights, "NaN or infinite"),
    ("alias bomb in the config", _bomb_config, "too large or nested too deep"),
    ("not a checkpoint", lambda: "just a string", "not a checkpoint"),
]


def checkpoint_ids() -> list[str]:
    n = len(CHECKPOINT_CASES)
    return [f"checkpoint {i:02d} of {n} - {n_}" for i, (n_, _, _) in enumerate(CHECKPOINT_CASES, 1)]


def crafted_checkpoint(tmp: Path, case: int) -> tuple[Path, str]:
    _, make, message = CHECKPOINT_CASES[case]
    path = tmp / "crafted.pytorch"
    torch.save(make(), path)
    return path, message


# --------------------------------------------------------------------------- prediction


def image(path: Path, shape=(6, 30, 30), value: float | None = None) -> Path:
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    if value is not None:
        data[0, 0, 0] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX"})
    return path


def _pair(tmp: Path) -> list[str]:
    image(tmp / "in" / "a.tif")
    image(tmp / "in" / "a.ome.tif")
    return ["--input", str(tmp / "in"), "--output", str(tmp / "out")]


def _into_input(tmp: Path) -> list[str]:
    image(tmp / "in" / "a.tiff")
    return ["--input", str(tmp / "in"), "--output", str(tmp / "in")]


def _existing(tmp: Path) -> list[str]:
    image(tmp / "in" / "cells.tiff")
    (tmp / "out").mkdir()
    (tmp / "out" / "cells_struct_segmentation.tiff").write_bytes(b"an earlier result")
    return ["--input", str(tmp / "in" / "cells.tiff"), "--output", str(tmp / "out")]


def _single(*extra: str, value: float | None = None) -> Callable[[Path], list[str]]:
    def args(tmp: Path) -> list[str]:
        image(tmp / "in" / "cells.tiff", value=value)
        return ["--input", str(tmp / "in" / "cells.tiff"), "--output", str(tmp / "out"), *extra]

    return args


def _unwritable_out(tmp: Path) -> list[str]:
    (tmp / "blocker").write_text("a file")
    return _single()(tmp)[:-1] + [str(tmp / "blocker" / "out")]


# (name, the predict arguments after --checkpoint CK, what the message says)
PREDICT_CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("a.tif and a.ome.tif collide", _pair, "would both write a_struct_segmentation.tiff"),
    ("output into the input folder", _into_input, "is the input folder"),
    ("an existing result", _existing, "already exists"),
    ("--device garbage", _single("--device", "garbage"), "device"),
    ("--threshold nan", _single("--threshold", "nan"), "Threshold"),
    ("--threshold inf", _single("--threshold", "inf"), "Threshold"),
    ("--threshold 5", _single("--threshold", "5"), "Threshold"),
    ("huge ResizeRatio", _single("--set", "ResizeRatio=[1000, 1, 1]"), "ResizeRatio"),
    ("tiny ResizeRatio", _single("--set", "ResizeRatio=[0.0001, 1, 1]"), "ResizeRatio"),
    ("unwritable OutputDir", _unwritable_out, "OutputDir"),
    ("one NaN pixel", _single(value=float("nan")), "NaN"),
]


def predict_ids() -> list[str]:
    n = len(PREDICT_CASES)
    return [f"predict {i:02d} of {n} - {name}" for i, (name, _, _) in enumerate(PREDICT_CASES, 1)]


# --------------------------------------------------------------------------- files kept


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (not following links) and its bytes."""
    found = {}
    for root, _, names in os.walk(folder, followlinks=False):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def unchanged(before: dict[str, bytes], folder: Path) -> bool:
    """True when every file of ``before`` is still there with the same bytes."""
    after = snapshot(folder)
    return all(after.get(name) == data for name, data in before.items())
