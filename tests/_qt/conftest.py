"""Fixtures shared by the GUI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import StandInPredictor, make_tiny_config


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


@pytest.fixture(scope="session")
def stand_in_checkpoint(sample_folder, tmp_path_factory) -> Path:
    """A checkpoint (carrying a unet_xy config) of the stand-in network after one tiny run."""
    from napari_cellseg_trainer.training import CheckpointSaved, step, train

    cfg = make_tiny_config(sample_folder, tmp_path_factory.mktemp("stand_in"))
    cfg.epochs, cfg.preview_every_n_iter = 1, 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, "build_network", StandInPredictor)
        return [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)][-1]
