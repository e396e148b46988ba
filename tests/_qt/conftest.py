"""Fixtures shared by the GUI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_cellseg_trainer.models import geometry


@pytest.fixture
def notes():
    """Every napari notification shown during the test, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(n) -> None:
        seen.append((str(n.severity), n.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


class StandInPredictor(torch.nn.Module):
    """The stand-in network (tests/conftest.py's StandInNet) for any tile: the U-Net's crop.

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


@pytest.fixture(scope="session")
def stand_in_checkpoint(sample_folder, tmp_path_factory) -> Path:
    """A checkpoint (carrying a unet_xy config) of the stand-in network after one tiny run."""
    from conftest import make_tiny_config
    from napari_cellseg_trainer.training import CheckpointSaved, step, train

    cfg = make_tiny_config(sample_folder, tmp_path_factory.mktemp("stand_in"))
    cfg.epochs, cfg.preview_every_n_iter = 1, 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "build_network", StandInPredictor)
        return [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)][-1]


@pytest.fixture
def stand_in_predictor(monkeypatch):
    """Checkpoints rebuild :class:`StandInPredictor` instead of the U-Net (prediction, export)."""
    from napari_cellseg_trainer import checkpoint

    monkeypatch.setattr(checkpoint, "build_network", StandInPredictor)
