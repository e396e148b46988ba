"""A training process killed at random moments leaves only complete, loadable checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer import config


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_only_complete_checkpoints(tiny_config, tmp_path):
    cfg = tiny_config
    cfg.epochs, cfg.save_every_n_epoch, cfg.preview_every_n_iter = 1000, 1, 0
    cfg.loader.PatchPerBuffer = 1  # one step per epoch: a save every step, kills often land in one
    cfg.size_in, cfg.size_out = [29, 92, 92], [1, 4, 4]  # the smallest patch: quick steps
    path = config.save_config(cfg, tmp_path / "train.yaml")
    out_dir = tmp_path / "checkpoints"
    rng = np.random.default_rng(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for _ in range(2):  # a kill, then a resume and a second kill
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "napari_cellseg_trainer",
                "train",
                "--config",
                str(path),
                "--set",
                f"resume={out_dir}" if ckpt.latest_checkpoint(out_dir) else "resume=null",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _wait_for_checkpoints(out_dir, at_least=1 + kills)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        files = sorted(out_dir.glob("checkpoint_epoch_*.pytorch"))
        assert files
        for file in files:
            ckpt.load_checkpoint(file)  # raises if truncated
    epochs = [ckpt.load_checkpoint(f).epoch for f in out_dir.glob("checkpoint_epoch_*.pytorch")]
    assert max(epochs) >= kills  # every restart resumed and went on


def _wait_for_checkpoints(folder, at_least: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("checkpoint_epoch_*.pytorch"))) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint appeared in {folder} within {timeout} s")
