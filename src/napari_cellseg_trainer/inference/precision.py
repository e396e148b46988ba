"""Prediction in bfloat16 on CPUs that multiply it natively, where it is faster and agrees.

``precision: auto`` on such a CPU runs the first batch of tiles in both precisions: bf16
predicts the rest only if it was faster there and no probability moved by more than
:data:`MAX_DIFFERENCE`; the first batch's float32 result is what is kept. The trial costs one
batch in bf16, so it is made only when enough batches follow to win that back. Elsewhere
(emulated bfloat16 is tens of times slower; GPUs) auto is float32, as before.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..devices import native_cpu_bf16

PRECISIONS = ("auto", "fp32", "bf16")
MAX_DIFFERENCE = 0.02  # of a probability: a voxel this far from the threshold keeps its class
FASTER = 0.95  # bf16 must take at most this share of fp32's time: not a win by noise
TRIAL_MIN_BATCHES = 4  # at 1.5x faster, three bf16 batches pay for the trial's extra one


@dataclass(frozen=True)
class PrecisionTrial:
    """The first batch in both precisions: their seconds and largest probability difference."""

    fp32_seconds: float
    bf16_seconds: float
    max_difference: float

    @property
    def bf16_wins(self) -> bool:
        faster = self.bf16_seconds < FASTER * self.fp32_seconds
        return faster and self.max_difference <= MAX_DIFFERENCE

    def __str__(self) -> str:
        ratio = self.fp32_seconds / self.bf16_seconds
        verdict = "bf16 predicts" if self.bf16_wins else "fp32 predicts"
        return (
            f"precision trial on the first tiles: bf16 {ratio:.2f}x fp32's speed, probabilities "
            f"within {self.max_difference:.4f} (at most {MAX_DIFFERENCE} allowed): {verdict}"
        )


def resolve(request: str, device: torch.device, n_batches: int) -> str:
    """``fp32``, ``bf16`` or ``trial`` (auto on a CPU with native bfloat16 and enough batches)."""
    if request not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {request!r}")
    if request != "auto":
        return request
    worth_it = n_batches >= TRIAL_MIN_BATCHES
    return "trial" if device.type == "cpu" and worth_it and native_cpu_bf16() else "fp32"


def autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``bf16``, nothing otherwise."""
    if mode != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def run_trial(
    probs: Callable[[], torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, PrecisionTrial]:
    """The float32 probabilities of ``probs()`` and the trial against bf16.

    bf16 runs first: it pays the allocator's cold start, so a win is not a warm-up artefact.
    """
    started = time.perf_counter()
    with autocast("bf16", device):
        low = probs()
    middle = time.perf_counter()
    full = probs()
    ended = time.perf_counter()
    difference = float((low.float() - full).abs().max()) if full.numel() else 0.0
    return full, PrecisionTrial(ended - middle, middle - started, difference)
