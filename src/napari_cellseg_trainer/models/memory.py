"""How much memory a training step takes, and the patch and batch sizes that fit a budget.

The model: a training step holds the weights, their gradients and Adam's two moments
(16 bytes per parameter), plus the activations autograd keeps for the backward pass, which grow
with batch x (the sum of every layer's output size for one patch). The layer outputs are counted
exactly by running the network on PyTorch's "meta" device (shapes only, no memory, no time);
the bytes per counted element were measured (``bench/bench_memory.py``; see docs/patch_sizes.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import UserInputError
from . import build_model, geometry

# Fitted to peaks measured on CPU (fp32, unet_xy, batch 1, size_in [32|48, 100|148, 100|148];
# bench/bench_memory.py): 3.7 bytes per layer-output element (what autograd keeps for backward
# and the gradients alive at the backward peak; in-place ReLUs share their input's memory).
BYTES_PER_ELEMENT = 3.7
BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, Adam exp_avg and exp_avg_sq
FIXED_BYTES = 260 * 2**20  # runtime and allocator overhead, independent of the patch
# The established patch depth per model (the seed's sizes): the advisor grows y and x.
Z_IN = {"unet_xy": 48, "unet_xy_zoom": 52}
PREFERRED_BATCHES = (8, 4, 2, 1)
# Plan with this share of the budget: headroom for cuDNN workspaces and fragmentation.
USABLE_SHARE = 0.85


class MemoryBudgetError(UserInputError, ValueError):
    """A memory budget that is unreadable or too small for any patch."""


@dataclass(frozen=True)
class LayerShapes:
    """Every leaf layer's output of one network, as affine functions of the input size.

    Valid convolutions subtract constants and the poolings divide y and x exactly (for valid
    sizes), so each layer's output length along an axis is ``a * input + b``. Two forward
    passes on the meta device (shapes only) fix ``a`` and ``b``; after that the elements of
    every layer, for any valid size and any number of sizes at once, are a few multiplications.
    """

    channels: np.ndarray  # (n_layers,)
    slopes: np.ndarray  # (n_layers, 3)
    offsets: np.ndarray  # (n_layers, 3)
    work: np.ndarray  # (n_layers,) multiply-adds per output element (1 for non-convolutions)

    def elements(self, z, y, x) -> np.ndarray:
        """Elements of all layers' outputs for one patch; broadcasts over arrays of sizes."""
        return (self._per_layer(z, y, x) * self.channels).sum(axis=-1)

    def multiply_adds(self, z, y, x) -> np.ndarray:
        """Multiply-adds of a forward pass of one patch (what its time is proportional to)."""
        return (self._per_layer(z, y, x) * self.channels * self.work).sum(axis=-1)

    def _per_layer(self, z, y, x) -> np.ndarray:
        z, y, x = (np.asarray(v, dtype=np.float64)[..., None] for v in (z, y, x))
        a, b = self.slopes, self.offsets
        return (a[:, 0] * z + b[:, 0]) * (a[:, 1] * y + b[:, 1]) * (a[:, 2] * x + b[:, 2])


@lru_cache(maxsize=16)
def layer_shapes(model: str, zoom_ratio: int = 3, nchannel: int = 1) -> LayerShapes:
    """The :class:`LayerShapes` of a model, from forward passes at two valid sizes."""
    small = geometry.min_size_in(model, zoom_ratio)
    yx = geometry.valid_yx(model, zoom_ratio, lo=small[1] + 1, hi=small[1] * 3)
    large = (small[0] + 7, yx[1], yx[2])  # different steps per axis keep the axes apart
    first, second = (
        _leaf_shapes(model, small, zoom_ratio, nchannel),
        _leaf_shapes(model, large, zoom_ratio, nchannel),
    )
    channels = np.array([c for c, _, _ in first], dtype=np.float64)
    work = np.array([w for _, _, w in first], dtype=np.float64)
    lengths = [np.array([s for _, s, _ in shapes], dtype=np.float64) for shapes in (first, second)]
    slopes = (lengths[1] - lengths[0]) / (np.array(large) - np.array(small))
    offsets = lengths[0] - slopes * np.array(small)
    return LayerShapes(channels, slopes, offsets, work)


def _leaf_shapes(
    model: str, size_in: tuple[int, int, int], zoom_ratio: int, nchannel: int
) -> list[tuple[int, tuple[int, int, int], float]]:
    """(channels, (z, y, x), work) of every leaf layer's output for one patch (meta device)."""
    with torch.device("meta"):
        net = build_model(model, nchannel=nchannel, zoom_ratio=zoom_ratio)
    found: list[tuple[int, tuple[int, int, int], float]] = []

    def record(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        shape = tuple(int(v) for v in output.shape[2:])
        found.append((int(output.shape[1]), shape, _work_per_output(module)))

    hooks = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(torch.empty(1, nchannel, *size_in, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return found


def _work_per_output(module: torch.nn.Module) -> float:
    """Multiply-adds per output element: a convolution's inputs per output, else 1."""
    if isinstance(module, torch.nn.ConvTranspose3d):
        return module.in_channels * math.prod(module.kernel_size) / math.prod(module.stride)
    if isinstance(module, torch.nn.Conv3d):
        return module.in_channels * math.prod(module.kernel_size)
    return 1.0


def layer_elements(
    model: str, size_in: Sequence[int], zoom_ratio: int = 3, nchannel: int = 1
) -> int:
    """Elements of all leaf layers' outputs in a forward pass of one patch."""
    geometry.size_out(model, size_in, zoom_ratio)  # refuse invalid sizes with the usual message
    return int(round(float(layer_shapes(model, zoom_ratio, nchannel).elements(*size_in))))


@lru_cache(maxsize=8)
def parameter_count(model: str, zoom_ratio: int = 3, nchannel: int = 1) -> int:
    with torch.device("meta"):
        net = build_model(model, nchannel=nchannel, zoom_ratio=zoom_ratio)
    return sum(p.numel() for p in net.parameters())


def training_bytes(
    model: str, size_in: Sequence[int], batch_size: int, zoom_ratio: int = 3, nchannel: int = 1
) -> int:
    """Predicted peak memory of one fp32 training step (forward, backward, Adam)."""
    size = tuple(int(v) for v in size_in)
    acts = layer_elements(model, size, zoom_ratio, nchannel) * batch_size * BYTES_PER_ELEMENT
    params = parameter_count(model, zoom_ratio, nchannel) * BYTES_PER_PARAMETER
    return int(acts + params + FIXED_BYTES)


# Fitted to peaks measured on CPU in inference mode (unet_xy, batch 1 and 2, size_in from
# [29, 92, 92] to [128, 188, 188]; unet_xy_zoom(3) [40|52, 300|372, 300|372]; see
# docs/patch_sizes.md): 0.94-1.25 bytes per layer-output element at the peak, plus ~70 MB.
# Planned with 1.4 and 80 MB so that the prediction never exceeds the estimate.
INFERENCE_BYTES_PER_ELEMENT = 1.4
INFERENCE_FIXED_BYTES = 80 * 2**20


def inference_bytes(
    model: str, size_in: Sequence[int], batch_size: int, zoom_ratio: int = 3, nchannel: int = 1
) -> int:
    """Predicted peak memory of one forward pass in inference mode (no autograd), fp32."""
    acts = layer_elements(model, size_in, zoom_ratio, nchannel) * batch_size
    params = parameter_count(model, zoom_ratio, nchannel) * 4
    return int(acts * INFERENCE_BYTES_PER_ELEMENT + params + INFERENCE_FIXED_BYTES)


@dataclass(frozen=True)
class SizeAdvice:
    model: str
    zoom_ratio: int | None
    size_in: tuple[int, int, int]
    size_out: tuple[int, int, int]
    batch_size: int
    predicted_bytes: int
    budget_bytes: int

    def __str__(self) -> str:
        zoom = f" (zoom_ratio {self.zoom_ratio})" if self.zoom_ratio else ""
        return (
            f"{self.model}{zoom} in {self.budget_bytes / 2**30:.1f} GiB: "
            f"size_in {list(self.size_in)} -> size_out {list(self.size_out)}, "
            f"batch_size {self.batch_size} (predicted peak {self.predicted_bytes / 2**30:.2f} GiB)"
        )


def advise(model: str, budget_bytes: int, zoom_ratio: int = 3, nchannel: int = 1) -> SizeAdvice:
    """The largest valid square patch (the model's usual depth) and a batch that fit the budget.

    Plans with ``USABLE_SHARE`` of the budget. Batches of 8, then 4, then 2 are preferred while
    the patch stays at least as large in y-x as the smallest valid one plus two steps;
    otherwise the largest patch with batch 1. Raises ValueError when not even the smallest
    patch with batch 1 fits.
    """
    usable = budget_bytes * USABLE_SHARE
    k = zoom_ratio if model == "unet_xy_zoom" else 1
    z = Z_IN[model]
    candidates = geometry.valid_yx(model, zoom_ratio, hi=4000 * k)
    floor = candidates[min(2, len(candidates) - 1)]

    def largest(batch: int) -> int | None:
        # Memory grows with the patch: bisect the sorted candidates instead of trying all.
        lo, hi, best = 0, len(candidates) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            v = candidates[mid]
            if training_bytes(model, (z, v, v), batch, zoom_ratio, nchannel) <= usable:
                best, lo = v, mid + 1
            else:
                hi = mid - 1
        return best

    for batch in PREFERRED_BATCHES:
        yx = largest(batch)
        if yx is not None and (yx >= floor or batch == 1):
            size = (z, yx, yx)
            return SizeAdvice(
                model,
                zoom_ratio if model == "unet_xy_zoom" else None,
                size,
                geometry.size_out(model, size, zoom_ratio),
                batch,
                training_bytes(model, size, batch, zoom_ratio, nchannel),
                int(budget_bytes),
            )
    smallest = (z, candidates[0], candidates[0])
    need = training_bytes(model, smallest, 1, zoom_ratio, nchannel)
    raise MemoryBudgetError(
        f"{budget_bytes / 2**30:.1f} GiB is too little for {model}: the smallest patch "
        f"{list(smallest)} with batch 1 needs about {need / 2**30:.1f} GiB"
    )


def parse_memory(text: str) -> int:
    """'8GB', '8 GiB', '7.5G', '512MB' -> bytes (GB and GiB both mean 2**30 here)."""
    cleaned = text.strip().upper().replace(" ", "").removesuffix("B").removesuffix("I")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    scale = units.get(cleaned[-1:], None)
    number = cleaned[:-1] if scale else cleaned
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise MemoryBudgetError(
            f"memory {text!r}: expected a size like 8GB, 7.5G or 512MB"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise MemoryBudgetError(f"memory {text!r} must be positive")
    return int(value)


def detected_free_memory() -> int:
    """Free memory of the current CUDA GPU; MemoryBudgetError when there is none."""
    if not torch.cuda.is_available():
        raise MemoryBudgetError("no CUDA GPU detected here: give the budget as a number, e.g. 8GB")
    free, _total = torch.cuda.mem_get_info()
    return int(free)
