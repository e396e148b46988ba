"""Shared fixtures: tiny valid sizes and the embedded sample data, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.models import geometry
from napari_cellseg_trainer.training import CheckpointSaved, train

# pytest-xdist runs the files in several worker processes (scripts/test.sh: one per core): each
# worker's torch gets its share of the cores, so they do not oversubscribe them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

TINY_IN, TINY_OUT = [32, 100, 100], [4, 12, 12]


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample_data")
    write_sample_folder(folder, kind="filaments", n_images=3, seed=0)
    return folder


def make_tiny_config(sample_folder: Path, checkpoint_dir: Path) -> config.TrainConfig:
    """A config that trains in seconds on the sample data."""
    cfg = config.template("unet_xy")
    cfg.size_in, cfg.size_out = list(TINY_IN), list(TINY_OUT)
    cfg.loader.datafolder = str(sample_folder)
    # Batch 1 and 2 patches per epoch: one step of this network costs ~3 s on 2 cores.
    cfg.loader.batch_size = 1
    cfg.loader.PatchPerBuffer = 2
    cfg.loader.NumWorkers = 1
    cfg.checkpoint_dir = str(checkpoint_dir)
    cfg.epochs = 2
    cfg.save_every_n_epoch = 1
    cfg.learning_rate = 1e-3
    cfg.seed = 0
    cfg.device = "cpu"
    cfg.preview_every_n_iter = 1
    assert config.validate(cfg) == []
    return cfg


@pytest.fixture
def tiny_config(sample_folder, tmp_path) -> config.TrainConfig:
    """A config that trains in seconds on the sample data (checkpoints in the test's folder)."""
    return make_tiny_config(sample_folder, tmp_path / "checkpoints")


@pytest.fixture(scope="session")
def trained_checkpoint(sample_folder, tmp_path_factory) -> Path:
    """A unet_xy checkpoint (with its config) after one tiny training step on the sample data."""
    cfg = config.template("unet_xy")
    cfg.size_in, cfg.size_out = list(TINY_IN), list(TINY_OUT)
    cfg.loader.datafolder = str(sample_folder)
    cfg.loader.batch_size, cfg.loader.PatchPerBuffer = 1, 1
    cfg.checkpoint_dir = str(tmp_path_factory.mktemp("ck"))
    cfg.epochs = cfg.save_every_n_epoch = 1
    cfg.learning_rate, cfg.seed, cfg.device, cfg.preview_every_n_iter = 1e-3, 0, "cpu", 0
    return [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)][-1]


class StandInNet(torch.nn.Module):
    """The U-Net's interface at a fraction of its cost: a 1x1x1 convolution, cropped to size_out.

    For tests of what goes around the network (files, events, stop, resume): a step takes
    milliseconds instead of seconds. Its checkpoints load only into itself.
    """

    model_name = "unet_xy"

    def __init__(self, cfg) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(cfg.nchannel, 2, kernel_size=1)
        self.bn = torch.nn.BatchNorm3d(2)
        self.margin = [(i - o) // 2 for i, o in zip(cfg.size_in, cfg.size_out, strict=True)]

    def forward(self, x):
        y = self.bn(self.conv(x))
        mz, my, mx = self.margin
        z, h, w = y.shape[2:]
        y = torch.log_softmax(y[:, :, mz : z - mz, my : h - my, mx : w - mx], dim=1)
        return [y, y, y]


class Counting(torch.nn.Module):
    """A valid (5, 9, 9) convolution in the U-Net's interface, counting the tiles it runs.

    Its output depends on where a tile lies (unlike a 1x1x1 stand-in), so a tile placed or
    blended wrongly shows, at a fraction of the U-Net's cost.
    """

    yx_grid = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 2, (5, 9, 9))
        self.tiles = 0

    def forward(self, x):
        self.tiles += x.shape[0]
        y = torch.log_softmax(self.conv(x), dim=1)
        return [y, y, y]


@pytest.fixture
def stand_in_network(monkeypatch):
    """Train the stand-in network instead of unet_xy (see :class:`StandInNet`)."""
    from napari_cellseg_trainer.training import step

    monkeypatch.setattr(step, "build_network", StandInNet)


class StandInPredictor(torch.nn.Module):
    """The stand-in network (:class:`StandInNet`) for any tile: the U-Net's crop.

    A 1x1x1 convolution cropped to unet_xy's output size for the tile it is given, so the
    panels predict with it in milliseconds whatever tile they choose. Its state dict is
    StandInNet's: checkpoints trained with ``stand_in_network`` load into it.
    """

    model_name = "unet_xy"
    yx_grid = geometry.yx_grid("unet_xy", 3)

    def __init__(self, cfg) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(cfg.nchannel, 2, kernel_size=1)
        self.bn = torch.nn.BatchNorm3d(2)

    def forward(self, x):
        y = self.bn(self.conv(x))
        size_in = tuple(int(v) for v in x.shape[2:])
        z, h, w = geometry.size_out("unet_xy", size_in)
        mz, my, mx = ((i - o) // 2 for i, o in zip(size_in, (z, h, w), strict=True))
        y = torch.log_softmax(y[:, :, mz : mz + z, my : my + h, mx : mx + w], dim=1)
        return [y, y, y]


@pytest.fixture
def stand_in_predictor(monkeypatch):
    """Checkpoints rebuild :class:`StandInPredictor` instead of the U-Net (prediction, export)."""
    from napari_cellseg_trainer import checkpoint

    monkeypatch.setattr(checkpoint, "build_network", StandInPredictor)


# The files that take longest (real trainings, subprocesses) go first: with the files spread
# over pytest-xdist workers (scripts/test.sh), a long file started last would run alone at the
# end while the other workers wait.
_LONGEST_FIRST = (
    "test_distributed.py",
    "test_starters.py",
    "test_training.py",
    "test_memory.py",
    "test_cli.py",
    "test_bioimageio.py",
    "test_crash_safety.py",
    "test_zarr_inputs.py",
    "test_tile_choice.py",
    "test_chunked.py",
    "test_predict_cli.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the rest is kept
