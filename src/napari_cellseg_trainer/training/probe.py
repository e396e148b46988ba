"""Measuring real training steps: their peak memory (in a fresh process) and their speed.

The memory model of :mod:`..models.memory` is fitted to and checked against these measures;
both run :class:`.step.TrainingStep`, the step the loop runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import torch

from ..config import TrainConfig
from ..devices import resident_bytes
from ..models import geometry
from .step import TrainingStep


def step_config(
    model: str, size_in: Sequence[int], batch_size: int, zoom_ratio: int = 3
) -> TrainConfig:
    """A config for stepping ``model`` on random patches of ``size_in`` (no data, no files)."""
    cfg = TrainConfig()
    cfg.model.name, cfg.model.zoom_ratio = model, zoom_ratio
    cfg.size_in = [int(v) for v in size_in]
    cfg.size_out = list(geometry.size_out(model, cfg.size_in, zoom_ratio))
    cfg.loader.batch_size = int(batch_size)
    cfg.learning_rate = 1e-4
    return cfg


def random_batch(cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A batch of random raw patches, 0/1 labels and cost 1, shaped as ``cfg`` says."""
    n = cfg.loader.batch_size
    raw = torch.rand(n, cfg.nchannel, *cfg.size_in, device=device)
    label = torch.randint(0, 2, (n, *cfg.size_out), device=device)
    return raw, label, torch.ones(n, *cfg.size_out, device=device)


def measure_peak_bytes(
    model: str, size_in: Sequence[int], batch_size: int, device: str = "cpu", zoom_ratio: int = 3
) -> int:
    """Measured peak memory of two fp32 training steps, in a fresh process.

    On CPU (Linux): peak resident memory (VmHWM) minus the resident memory before the model
    was built; on CUDA: ``torch.cuda.max_memory_allocated``.
    """
    arg = json.dumps([model, [int(v) for v in size_in], batch_size, device, zoom_ratio])
    done = subprocess.run(
        [sys.executable, "-m", __name__, arg], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {model} {list(size_in)} failed: {done.stderr[-500:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1]))


def _peak_of_two_steps(
    model: str, size_in: list[int], batch: int, device_name: str, zoom_ratio: int
) -> int:
    """The child of :func:`measure_peak_bytes`."""
    device = torch.device(device_name)
    base = resident_bytes()
    cfg = step_config(model, size_in, batch, zoom_ratio)
    cfg.precision = "fp32"
    step = TrainingStep(cfg, device)
    batch_tensors = random_batch(cfg, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(2):  # the first step also creates Adam's state
        step(*batch_tensors, iteration=i + 1)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _high_water_mark() - base


def _high_water_mark() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    print(_peak_of_two_steps(*json.loads(sys.argv[1])))
