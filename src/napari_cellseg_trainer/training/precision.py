"""Mixed precision, memory layout and compilation for the training step (speed options).

Weights, optimiser state and checkpoints stay float32 whatever the precision: autocast runs
the convolutions in bfloat16/float16 and keeps reductions in float32; float16 also needs loss
scaling (a GradScaler) against underflowing gradients. On a CPU, ``auto`` is bfloat16 only
where the processor multiplies it natively and a probe of real steps found it faster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..devices import native_cpu_bf16
from ..errors import UserInputError


class PrecisionError(UserInputError, RuntimeError):
    """The requested precision or compilation cannot run on this device."""


@dataclass(frozen=True)
class StepOptions:
    dtype: torch.dtype | None  # the autocast dtype; None: float32
    scaler: torch.amp.GradScaler | None
    channels_last: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


CpuPrecision = Callable[[TrainConfig, torch.device], str]  # "bf16" or "fp32" for an auto step


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def _auto_bf16(cfg: TrainConfig, device: torch.device, cpu_precision: CpuPrecision | None) -> bool:
    if device.type == "cuda":
        return _bf16_ok(device)
    if device.type != "cpu" or not native_cpu_bf16() or cpu_precision is None:
        return False  # emulated bfloat16 is slower than float32: nothing to probe
    return cpu_precision(cfg, device) == "bf16"


def step_options(
    cfg: TrainConfig, device: torch.device, cpu_precision: CpuPrecision | None = None
) -> StepOptions:
    """Resolve ``precision``: auto is bf16 on CUDA GPUs that support it, bf16 on CPUs that run
    it natively where ``cpu_precision`` (the probe of real steps, cached per machine:
    :func:`.probe.faster_cpu_precision`, given by the training run; the probe itself steps
    through this module and so is not imported here) says so, else fp32."""
    request = cfg.precision
    if request == "auto":
        dtype = torch.bfloat16 if _auto_bf16(cfg, device, cpu_precision) else None
    elif request == "fp32":
        dtype = None
    elif request == "bf16":
        if not _bf16_ok(device):
            raise PrecisionError(f"precision: bf16 is not supported on {device}; use fp16 or fp32")
        dtype = torch.bfloat16
    else:
        if device.type not in ("cuda", "cpu"):
            raise PrecisionError(f"precision: fp16 is not supported on {device}; use fp32")
        dtype = torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return StepOptions(dtype, scaler, bool(cfg.channels_last))


def maybe_compile(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.nn.Module:
    """``torch.compile(model)`` when asked (CUDA only), else the model."""
    if not cfg.compile:
        return model
    if device.type != "cuda":
        raise PrecisionError(f"compile: true needs a CUDA GPU (training runs on {device})")
    return torch.compile(model)
