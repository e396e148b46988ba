"""The training loop: events, falling loss, checkpoints, stop, resume, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.models import build_model
from napari_cellseg_trainer.training import (
    CheckpointSaved,
    EpochEnd,
    IterationEnd,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
    train,
)


def _run(cfg, stop=None):
    return list(train(cfg, stop=stop))


def _of(events, cls):
    return [e for e in events if isinstance(e, cls)]


@pytest.fixture
def short_run(tiny_config):
    return _run(tiny_config)


def test_short_run_yields_the_expected_events_and_checkpoints(short_run):
    events = short_run
    assert isinstance(events[0], TrainingStarted) and events[0].device.startswith("cpu")
    iters = _of(events, IterationEnd)
    assert [e.iteration for e in iters] == [1, 2, 3, 4]  # 2 patches / batch 1 * 2 epochs
    assert [e.epoch for e in _of(events, EpochEnd)] == [1, 2]
    previews = _of(events, PreviewPatch)
    assert len(previews) == 4
    p = previews[0]
    assert p.raw.shape == p.label.shape == p.probability.shape == (4, 12, 12)
    assert (
        p.probability.dtype == np.float32 and 0 <= p.probability.min() <= p.probability.max() <= 1
    )
    saved = _of(events, CheckpointSaved)
    assert [s.path.name for s in saved] == [
        "checkpoint_epoch_1.pytorch",
        "checkpoint_epoch_2.pytorch",
    ]
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.reason == "completed"
    assert finished.checkpoint == saved[-1].path


def test_checkpoint_rebuilds_its_own_model_and_matches_the_established_format(short_run):
    events = short_run
    path = _of(events, CheckpointSaved)[-1].path
    raw = torch.load(path, weights_only=True)
    assert {"epoch", "num_iterations", "model_state_dict", "optimizer_state_dict", "device"} <= set(
        raw
    )
    loaded = ckpt.load_checkpoint(path)
    cfg = loaded.config
    model = build_model(
        cfg["model"]["name"], cfg["nchannel"], cfg["nclass"], cfg["model"]["zoom_ratio"]
    )
    ckpt.load_model_weights(model, loaded)
    assert (loaded.epoch, loaded.num_iterations) == (2, 4)


def test_loss_falls_on_the_sample_data(tiny_config):
    cfg = tiny_config
    cfg.epochs, cfg.save_every_n_epoch = 6, 6
    cfg.loader.epoch_shuffle = 6  # the same patches every epoch: the loss must fall on them
    cfg.preview_every_n_iter = 0
    losses = [e.mean_loss for e in _run(cfg) if isinstance(e, EpochEnd)]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses


def test_stop_saves_a_checkpoint_and_resume_continues_the_count(tiny_config):
    cfg = tiny_config
    cfg.epochs = 3
    stop = threading.Event()
    events = []
    for event in train(cfg, stop=stop):
        events.append(event)
        if isinstance(event, IterationEnd) and event.iteration == 3:
            stop.set()  # in epoch 2, after its first batch (2 batches per epoch)
    finished = events[-1]
    assert finished.reason == "stopped" and finished.iteration == 3 and finished.epoch == 1
    assert finished.checkpoint.name == "checkpoint_epoch_1.pytorch"
    assert ckpt.load_checkpoint(finished.checkpoint).num_iterations == 3

    cfg.resume = cfg.checkpoint_dir  # a folder: its newest checkpoint
    resumed = _run(cfg)
    start = resumed[0]
    assert (start.start_epoch, start.start_iteration) == (1, 3)
    assert [e.epoch for e in _of(resumed, EpochEnd)] == [2, 3]
    assert _of(resumed, IterationEnd)[0].iteration == 4
    assert resumed[-1].reason == "completed" and resumed[-1].epoch == 3


def test_resume_restores_the_optimiser_state(tiny_config):
    cfg = tiny_config
    cfg.epochs = 1
    path = _of(_run(cfg), CheckpointSaved)[-1].path
    state = ckpt.load_checkpoint(path).optimizer_state
    assert state["state"], "Adam moments were saved"
    cfg.epochs, cfg.resume = 2, str(path)
    cfg.learning_rate = 0.0  # weights must then stay exactly as loaded
    events = _run(cfg)
    after = ckpt.load_checkpoint(_of(events, CheckpointSaved)[-1].path)
    before = ckpt.load_checkpoint(path)
    # Adam's step count continued from the checkpoint instead of restarting at 0.
    steps_before = float(before.optimizer_state["state"][0]["step"])
    assert float(after.optimizer_state["state"][0]["step"]) == steps_before + 2


def test_validation_reports_iou_per_output_pair(tiny_config, tmp_path):
    cfg = tiny_config
    # Small images: validation predicts each held-out image whole, tile by tile.
    write_sample_folder(tmp_path / "small", n_images=3, shape=(4, 24, 24), seed=1)
    cfg.loader.datafolder = str(tmp_path / "small")
    cfg.validation.metric = "default"
    cfg.validation.leaveout = [0]
    cfg.validation.validate_every_n_epoch = 1
    cfg.epochs = 1
    events = _run(cfg)
    assert events[0].n_train_images == 2 and events[0].n_validation_images == 1
    (val,) = _of(events, ValidationDone)
    assert val.pairs == ((0, 1), (1, 1), (2, 1))
    assert all(0.0 <= v <= 1.0 for v in val.iou)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_checkpoint(tiny_config):
    cfg = tiny_config
    cfg.epochs = 3
    cfg.learning_rate = 1e30  # blows the weights up within a few steps
    with pytest.raises(Exception, match=r"loss became (nan|inf) at iteration \d+"):
        _run(cfg)
