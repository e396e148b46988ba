"""Nothing lost: each way a careless or unlucky user lost files before, now kept safe."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile
import torch

import bad_inputs as cases
from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.training import CheckpointSaved, TrainingFinished, train
from napari_cellseg_trainer.training.events import Notice
from napari_cellseg_trainer.training.metrics import read_metrics


def test_folder_prediction_never_writes_into_the_input_folder(trained_checkpoint, tmp_path):
    images = tmp_path / "images"
    cases.image(images / "a.tiff", shape=(4, 20, 20))
    cases.image(images / "a_struct_segmentation.tiff", shape=(4, 20, 20))  # a user's own file
    before = cases.snapshot(images)
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(images)]
    assert main(args) == 0
    results = tmp_path / "images_segmentation"
    # beside the folder, never in it; a file named like a result is not taken as an input
    assert sorted(p.name for p in results.iterdir()) == ["a_struct_segmentation.tiff"]
    assert cases.snapshot(images) == before
    assert main(args) == 2  # a second run does not replace the first one's results silently
    assert main([*args, "--overwrite"]) == 0
    assert cases.snapshot(images) == before


def _run(cfg, stop=None):
    return list(train(cfg, stop=stop))


def _recorded(cfg):
    """A run as the CLI and the panel run it: metrics.csv and loss_curve.png recorded."""
    from napari_cellseg_trainer.training import recorded_training

    return list(recorded_training(cfg))


def test_a_second_run_into_the_same_folder_is_refused_and_run_subfolder_keeps_both(
    tiny_config, tmp_path, capsys, stand_in_network
):
    tiny_config.epochs = 1
    path = config.save_config(tiny_config, tmp_path / "train.yaml")
    assert main(["train", "--config", str(path)]) == 0
    folder = tmp_path / "checkpoints"
    before = cases.snapshot(folder)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "resume" in err and "run_subfolder" in err
    assert cases.snapshot(folder) == before
    # each run in its own folder: nothing of the first run changes, two curves, not one zig-zag
    for _ in range(2):
        assert main(["train", "--config", str(path), "--set", "run_subfolder=true"]) == 0
    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(runs) == 2 and cases.unchanged(before, folder)
    for run in runs:
        assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1"]
        assert (run / "checkpoint_epoch_1.pytorch").exists()


def test_a_resumed_run_keeps_one_row_per_epoch_and_moves_later_rows_aside(
    tiny_config, stand_in_network
):
    cfg = tiny_config
    cfg.epochs = 3
    _recorded(cfg)
    folder = cases.Path(cfg.checkpoint_dir)
    cfg.resume, cfg.epochs = str(folder / "checkpoint_epoch_1.pytorch"), 2  # back to epoch 1
    _recorded(cfg)
    rows = read_metrics(folder / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    (aside,) = folder.glob("metrics_superseded_*.csv")
    assert [r["epoch"] for r in read_metrics(aside)] == ["2", "3"]


def test_a_full_disk_at_a_save_warns_goes_on_and_the_last_save_is_rescued(
    tiny_config, tmp_path, monkeypatch, stand_in_network
):
    cfg = tiny_config
    cfg.epochs, cfg.save_every_n_epoch = 3, 1
    real = torch.save
    calls = []

    def full_at_first_two(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) in (1, 3):  # epoch 1's save and the last one
            raise RuntimeError("[enforce fail at inline_container.cc] file write failed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_first_two)
    events = _run(cfg)
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert any("could not write" in n and "training goes on" in n for n in notices)
    assert any("were saved to" in n for n in notices)
    saved = [e.path for e in events if isinstance(e, CheckpointSaved)]
    assert [p.name for p in saved] == ["checkpoint_epoch_2.pytorch", "checkpoint_epoch_3.pytorch"]
    assert saved[-1].parent != cases.Path(cfg.checkpoint_dir)  # the rescue folder
    assert ckpt.load_checkpoint(saved[-1]).epoch == 3
    assert events[-1].reason == "completed"
    # no temporary file is left behind by the failed saves
    assert not list(cases.Path(cfg.checkpoint_dir).glob(".*.part"))


def test_a_foreign_metrics_file_does_not_stop_the_run(tiny_config, stand_in_network):
    cfg = tiny_config
    cfg.epochs = 1
    _recorded(cfg)
    folder = cases.Path(cfg.checkpoint_dir)
    (folder / "metrics.csv").write_text("epoch,something\nmany,1\n")  # not ours
    (folder / "loss_curve.png").unlink()
    (folder / "loss_curve.png").mkdir()  # and the plot's name taken by a folder
    cfg.resume, cfg.epochs = str(folder), 2
    events = _recorded(cfg)
    assert events[-1].reason == "completed" and (folder / "checkpoint_epoch_2.pytorch").exists()
    assert any(isinstance(e, Notice) and "metrics.csv" in e.text for e in events)


def test_a_killed_writers_temporary_file_is_removed_and_a_live_ones_kept(
    tiny_config, stand_in_network
):
    folder = cases.Path(tiny_config.checkpoint_dir)
    folder.mkdir(parents=True)
    dead = folder / ".checkpoint_epoch_3.pytorch.999999999.part"  # no such process
    live = folder / f".checkpoint_epoch_3.pytorch.{os.getpid()}.part"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    tiny_config.epochs = 1
    _run(tiny_config)
    assert not dead.exists() and live.exists()


def test_checkpoints_and_results_follow_the_umask(tiny_config, stand_in_network):
    old = os.umask(0o022)
    try:
        tiny_config.epochs = 1
        path = [e.path for e in _run(tiny_config) if isinstance(e, CheckpointSaved)][-1]
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_ctrl_c_inside_an_epoch_keeps_the_clean_epoch_checkpoint(tiny_config, stand_in_network):
    import threading

    from napari_cellseg_trainer.training import IterationEnd

    cfg = tiny_config
    cfg.epochs = 3
    stop = threading.Event()
    clean = None
    for event in train(cfg, stop=stop):
        if isinstance(event, IterationEnd) and event.iteration == 3:
            clean = (cases.Path(cfg.checkpoint_dir) / "checkpoint_epoch_1.pytorch").read_bytes()
            stop.set()
        last = event
    assert isinstance(last, TrainingFinished) and last.checkpoint.name.endswith("_iter_3.pytorch")
    assert (cases.Path(cfg.checkpoint_dir) / "checkpoint_epoch_1.pytorch").read_bytes() == clean


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_pixel_is_refused_instead_of_a_flat_result(trained_checkpoint, tmp_path, bad, capsys):
    image = tmp_path / "cells.tiff"
    data = np.random.default_rng(0).random((4, 20, 20), dtype=np.float32)
    data[1, 2, 3] = bad
    tifffile.imwrite(image, data, ome=True, metadata={"axes": "ZYX"})
    args = ["predict", "--checkpoint", str(trained_checkpoint), "--input", str(image)]
    assert main(args) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    assert not list(tmp_path.glob("*_struct_segmentation.tiff"))
