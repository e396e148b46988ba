"""Training on several processes with torchrun (gloo on CPU), and the pieces it rests on."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config
from napari_cellseg_trainer.distributed import World, weights_digest, world_from_env
from napari_cellseg_trainer.models import build_model
from napari_cellseg_trainer.training import EpochEnd, TrainingFinished, train


def test_world_splits_work_round_robin_and_rounds_shares_up():
    world = World(rank=1, size=3)
    assert world.mine(list("abcdefg")) == ["b", "e"]
    assert World(0, 3).share(10) == World(2, 3).share(10) == 4
    assert World().mine([1, 2]) == [1, 2] and World().share(5) == 5
    assert not world.main and World().main and not World().distributed


def test_world_from_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert world_from_env() == World(rank=2, size=4, local_rank=0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RuntimeError, match="RANK=4 does not fit WORLD_SIZE=4"):
        world_from_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert world_from_env() == World()


def test_weights_digest_tells_weights_apart():
    a, b = build_model("unet_xy"), build_model("unet_xy")
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    next(b.parameters()).data[0] += 1e-6
    assert weights_digest(a) != weights_digest(b)


def torchrun(n: int, config_path, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node n -m napari_cellseg_trainer train ...``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # two ranks share this machine's two cores
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={n}", "-m", "napari_cellseg_trainer", "train"]
    cmd += ["--config", str(config_path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.fixture(scope="module")
def two_rank_run(sample_folder, tmp_path_factory):
    """Four epochs on 2 ranks (gloo), 1 patch per rank per epoch, the same patches throughout."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = config.template("unet_xy")
    cfg.size_in, cfg.size_out = [29, 92, 92], [1, 4, 4]  # the smallest patch: quick steps
    cfg.loader.datafolder = str(sample_folder)
    cfg.loader.batch_size, cfg.loader.PatchPerBuffer, cfg.loader.epoch_shuffle = 1, 2, 4
    cfg.checkpoint_dir = str(tmp / "checkpoints")
    cfg.epochs, cfg.save_every_n_epoch = 4, 2
    cfg.learning_rate, cfg.seed, cfg.device, cfg.preview_every_n_iter = 1e-3, 0, "cpu", 0
    path = config.save_config(cfg, tmp / "train.yaml")
    result = torchrun(2, path, tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return cfg, result


def test_two_ranks_write_one_set_of_checkpoints_and_metrics(two_rank_run):
    cfg, _ = two_rank_run
    folder = Path(cfg.checkpoint_dir)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "checkpoint_epoch_2.pytorch",
        "checkpoint_epoch_4.pytorch",
        "loss_curve.png",
        "metrics.csv",
    ]
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # written once, by rank 0
    losses = [float(r["mean_loss"]) for r in rows]
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], losses
    loaded = ckpt.load_checkpoint(folder / "checkpoint_epoch_4.pytorch")
    # 2 patches per epoch, 1 per rank, batch 1: 1 step per epoch over both ranks' batches.
    assert (loaded.epoch, loaded.num_iterations) == (4, 4)


def test_ranks_hold_identical_weights_equal_to_the_checkpoint(two_rank_run):
    cfg, result = two_rank_run
    found = dict(
        re.findall(r"rank (\d)/2: completed at epoch 4, iteration 4, weights (\w+)", result.stderr)
    )
    assert set(found) == {"0", "1"}, result.stderr[-2000:]
    assert found["0"] == found["1"]
    model = build_model("unet_xy")
    loaded = ckpt.load_checkpoint(f"{cfg.checkpoint_dir}/checkpoint_epoch_4.pytorch")
    ckpt.load_model_weights(model, loaded)  # strict, single process: the keys are unchanged
    assert weights_digest(model) == found["0"]


def test_a_two_rank_checkpoint_resumes_in_one_process(two_rank_run, tmp_path):
    cfg, _ = two_rank_run
    single = config.from_mapping(config.TrainConfig, yaml.safe_load(config.dump_config(cfg)))
    single.resume = cfg.checkpoint_dir  # the newest checkpoint in the folder
    single.checkpoint_dir = str(tmp_path / "more")
    single.epochs = 5
    events = list(train(single))
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [5]
    finished = events[-1]
    # Alone, one process takes the whole buffer of 2 patches: 2 steps in epoch 5.
    assert isinstance(finished, TrainingFinished)
    assert (finished.epoch, finished.iteration) == (5, 6)
