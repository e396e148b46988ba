"""Several processes, one model: PyTorch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node N -m napari_cellseg_trainer train --config FILE`` starts N copies of
the command line; each reads its rank from the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT), joins the process group (NCCL on GPUs, gloo on CPUs) and trains
on its own share of the patches. DDP averages the gradients, so every rank holds the same
weights after every step; rank 0 alone writes checkpoints, metrics and the loss curve.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op: one process, as before.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .devices import select_device

T = TypeVar("T")
# Rank 0 validates and saves while the others wait at the next collective: allow for that.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> int:
        """Each rank's part of ``n`` items (rounded up, so every rank runs as many batches)."""
        return math.ceil(n / self.size)

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's items of a list split round-robin across ranks."""
        return list(items[self.rank :: self.size])


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process if it does not)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise RuntimeError(
            f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not integers: {err}"
        ) from err
    if size < 1 or not 0 <= rank < size:
        raise RuntimeError(f"RANK={rank} does not fit WORLD_SIZE={size}")
    return World(rank, size, local)


def current_world() -> World:
    """The joined process group's world, or one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), world_from_env().local_rank)
    return World()


def _wants_cuda(request: str) -> bool:
    return torch.cuda.is_available() and (request == "auto" or request.startswith("cuda"))


@contextmanager
def process_group(device_request: str = "auto") -> Iterator[World]:
    """Join torchrun's process group for the duration (NCCL for CUDA, gloo otherwise)."""
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        yield current_world()
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: run a single process")
    cuda = _wants_cuda(device_request)
    if cuda:
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def rank_device(request: str, world: World) -> torch.device:
    """The device for this rank: its own GPU (LOCAL_RANK) when on CUDA without an index."""
    device = select_device(request)
    if world.distributed and device.type == "cuda" and request in ("auto", "cuda"):
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return device


def wrap(model: torch.nn.Module, device: torch.device, world: World) -> torch.nn.Module:
    """DDP around ``model`` when distributed (BatchNorm synchronised on GPUs); else ``model``."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper (its state-dict keys are the checkpoint's)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is True on any (e.g. a stop request seen by one process)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_over_ranks(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves when alone)."""
    if not world.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mean_over_ranks(value: float, world: World, device: torch.device) -> float:
    """The mean of ``value`` over all ranks (the value itself when alone)."""
    return sum_over_ranks([value], world, device)[0] / world.size


def run_seed(seed: int | None, world: World, device: torch.device) -> int:
    """The run's seed: the configured one, or a fresh one (rank 0's, for every rank)."""
    if seed is not None:
        return seed
    fresh = int(np.random.SeedSequence().entropy % 2**31)
    if not world.distributed:
        return fresh
    return int(sum_over_ranks([fresh if world.main else 0], world, device)[0])


def rank_rng(shared: np.random.Generator, seed: int, world: World) -> np.random.Generator:
    """This rank's generator for drawing patches: each rank its own; one process, ``shared``.

    ``shared`` is the generator every rank holds alike (it splits off the validation images).
    Alone, the patches come from that same generator, as they always have: the same seed
    draws the same patches as in earlier versions.
    """
    return np.random.default_rng([seed, world.rank]) if world.distributed else shared


def weights_digest(model: torch.nn.Module, buffers: bool = False, extra: bytes = b"") -> str:
    """A short SHA-1 of the trainable weights in order: equal digests, equal weights.

    Buffers (BatchNorm's running statistics) are left out unless ``buffers``: without
    SyncBatchNorm (CPU, gloo) each rank updates them from its own batches, and rank 0's are
    the ones saved. ``extra`` (e.g. settings) goes into the digest after the tensors.
    """
    h = hashlib.sha1()
    net = unwrap(model)
    for key, value in net.state_dict().items() if buffers else net.named_parameters():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(extra)
    return h.hexdigest()[:16]
