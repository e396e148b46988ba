"""Measuring real training steps: their peak memory (in a fresh process) and their speed.

The memory model of :mod:`..models.memory` is fitted to and checked against these measures;
both run :class:`.step.TrainingStep`, the step the loop runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import TrainConfig
from ..devices import available_cores, describe_device, native_cpu_bf16, resident_bytes
from ..files import write_atomically
from ..models import geometry
from ..models.memory import layer_shapes
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


# --------------------------------------------------------------------------- step speed

REFERENCE = {"cpu": (32, 100, 100), "cuda": (48, 148, 148)}  # probed once per machine
FASTER = 0.95  # another setting replaces the default only when this much faster: not by noise


@dataclass(frozen=True)
class StepSpeed:
    """Seconds a training step takes per multiply-add of its forward pass, on one device."""

    device: str
    seconds_per_work: float
    reference: tuple[int, int, int]
    reference_seconds: float  # one step of the reference patch, batch 1
    precision: str = "fp32"
    channels_last: bool = False

    def step_seconds(self, model: str, size_in, batch: int, zoom_ratio: int = 3) -> float:
        work = float(layer_shapes(model, zoom_ratio).multiply_adds(*size_in))
        return self.seconds_per_work * work * batch

    @property
    def setting(self) -> str:
        """``fp32``, ``bf16``, with ``+cl`` for channels-last."""
        return self.precision + ("+cl" if self.channels_last else "")


def probe_step_speed(
    model: str,
    device: torch.device,
    zoom_ratio: int = 3,
    cache: Path | None = None,
    precision: str = "auto",
    channels_last: bool = False,
) -> StepSpeed:
    """The step speed of ``model`` here: two real steps of a reference patch, cached per machine.

    The time of a step follows its multiply-adds (measured: [32, 100, 100] to [64, 188, 132]
    on a CPU), so one reference patch tells the time of any other. ``precision`` and
    ``channels_last`` are the step's; ``auto`` is fp32 on a CPU (where the probes decide it:
    :func:`faster_cpu_precision`).
    """
    if precision == "auto" and device.type != "cuda":
        precision = "fp32"
    key = _speed_key(model, device, zoom_ratio, precision, channels_last)
    path = cache if cache is not None else _cache_file()
    known = _read_cache(path).get(key)
    if known:
        return StepSpeed(**{**known, "reference": tuple(known["reference"])})
    kind = "cuda" if device.type == "cuda" else "cpu"
    reference = REFERENCE[kind]
    if model == "unet_xy_zoom":
        reference = geometry.min_size_in(model, zoom_ratio)
    cfg = step_config(model, reference, 1, zoom_ratio)
    cfg.device, cfg.precision, cfg.channels_last = str(device), precision, channels_last
    step = TrainingStep(cfg, device)
    batch = random_batch(cfg, device)
    step(*batch, iteration=1)  # the first step also sets up Adam's state and the kernels
    times = []
    for i in range(2):
        started = time.perf_counter()
        step(*batch, iteration=i + 2)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    seconds = min(times)
    work = float(layer_shapes(model, zoom_ratio).multiply_adds(*reference))
    name = step.options.name  # what auto resolved to on a GPU
    speed = StepSpeed(
        describe_device(device), seconds / work, tuple(reference), seconds, name, channels_last
    )
    _write_cache(path, key, speed)
    return speed


def faster_cpu_precision(cfg: TrainConfig, device: torch.device, cache: Path | None = None) -> str:
    """``precision: auto`` on a CPU: ``bf16`` where it runs natively and its probe beats fp32's.

    Both probes (in ``cfg``'s layout) are cached per machine: the quick preset usually ran
    them already. Elsewhere ``fp32``, without a probe.
    """
    if device.type != "cpu" or not native_cpu_bf16():
        return "fp32"
    model, zoom, layout = cfg.model.name, cfg.model.zoom_ratio, bool(cfg.channels_last)
    fp32 = probe_step_speed(model, device, zoom, cache, "fp32", layout)
    bf16 = probe_step_speed(model, device, zoom, cache, "bf16", layout)
    return "bf16" if bf16.reference_seconds < FASTER * fp32.reference_seconds else "fp32"


@dataclass(frozen=True)
class CpuStep:
    """What the quick preset's probe found on a CPU: the fastest step setting and threads."""

    speed: StepSpeed  # the fastest setting's
    threads: int | None  # None: torch's default was as fast
    fp32_seconds: float  # the reference step in fp32 with torch's default threads
    native_bf16: bool

    def describe(self) -> str:
        """The setting in a few words, and why."""
        speed = self.speed
        if not self.native_bf16:
            text = "fp32 (no native bfloat16 on this CPU)"
        elif speed.precision == "bf16":
            layout = ", channels-last" if speed.channels_last else ""
            ratio = self.fp32_seconds / speed.reference_seconds
            text = f"bf16 mixed precision{layout} ({ratio:.2f}x fp32's speed here)"
        else:
            text = "fp32 (bf16 was not faster here)"
        if self.threads:
            text += f", {self.threads} threads"
        return text


def fastest_cpu_step(
    model: str, device: torch.device, zoom_ratio: int = 3, cache: Path | None = None
) -> CpuStep:
    """The quick preset's probe on a CPU: the fastest step setting here, and its thread count.

    Where the CPU multiplies bfloat16 natively, bf16 and bf16 with channels-last are timed
    against fp32; elsewhere emulated bfloat16 is tens of times slower (and channels-last in
    fp32 slower too, ``bench_train_step.py``), so nothing is raced. Then, where the process
    may use more logical cores than torch's default threads (one per physical core), the
    best setting is timed with all of them.
    """
    native = native_cpu_bf16()
    fp32 = best = probe_step_speed(model, device, zoom_ratio, cache)
    if native:
        for layout in (False, True):
            speed = probe_step_speed(model, device, zoom_ratio, cache, "bf16", layout)
            if speed.reference_seconds < FASTER * best.reference_seconds:
                best = speed
    threads = None
    default, cores = torch.get_num_threads(), available_cores()
    if cores > default:
        try:
            torch.set_num_threads(cores)
            more = probe_step_speed(
                model, device, zoom_ratio, cache, best.precision, best.channels_last
            )
        finally:
            torch.set_num_threads(default)
        if more.reference_seconds < FASTER * best.reference_seconds:
            best, threads = more, cores
    return CpuStep(best, threads, fp32.reference_seconds, native)


def _speed_key(
    model: str, device: torch.device, zoom_ratio: int, precision: str, channels_last: bool
) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    key = f"{describe_device(device)}|{threads}|torch {torch.__version__}|{model}|{zoom_ratio}"
    if precision not in ("auto", "fp32") or channels_last:  # the keys earlier versions cached
        key += f"|{precision}{'+cl' if channels_last else ''}"
    return key


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-cellseg-trainer" / "step_speed.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, speed: StepSpeed) -> None:
    data = _read_cache(path)
    data[key] = asdict(speed)
    try:
        write_atomically(path, json.dumps(data, indent=1).encode())
    except OSError:
        pass  # a cache that cannot be written only costs a probe next time


if __name__ == "__main__":
    print(_peak_of_two_steps(*json.loads(sys.argv[1])))
