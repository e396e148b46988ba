"""Choosing the tile size of a prediction: the cheapest valid tile that fits the memory budget.

The networks are fully convolutional with valid convolutions, so any valid tile size predicts
the same volume; what changes is the cost. Each tile recomputes its margin (44 voxels a side in
y and x for unet_xy), so the training patch ``[32, 100, 100] -> [4, 12, 12]`` spends 99.8% of
every pass on context and needs ~4,000 passes for a 100^3 volume, where one tile of
``[128, 188, 188]`` predicts it in one. The cost of a tiling is its number of tiles times the
work of one pass; :func:`choose_tile` minimises it over the
valid sizes whose forward pass fits the budget (:func:`..models.memory.inference_bytes`), and
never picks a tile larger than the volume needs. The cost counted is the multiply-adds of all
the passes (:meth:`..models.memory.LayerShapes.multiply_adds`), which the time follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..devices import available_ram
from ..errors import UserInputError
from ..models import geometry
from ..models.memory import INFERENCE_BYTES_PER_ELEMENT as PER_ELEMENT
from ..models.memory import INFERENCE_FIXED_BYTES as FIXED
from ..models.memory import inference_bytes, layer_shapes, parameter_count
from .tiling import axis_starts

# On a CPU the prediction shares the RAM with napari and the volume itself: plan the tile with
# this share of the memory available now. On a GPU: of its free memory.
CPU_SHARE = 0.4
GPU_SHARE = 0.8
_MAX_CANDIDATES = 400  # tile counts per axis considered (a 2,000-plane stack has ~130)


class TileChoiceError(UserInputError, ValueError):
    """Not even the smallest tile fits the memory budget."""


@dataclass(frozen=True)
class TileChoice:
    size_in: tuple[int, int, int]
    size_out: tuple[int, int, int]
    n_tiles: int
    batch_size: int
    predicted_bytes: int  # one forward pass of batch_size tiles
    budget_bytes: int

    @property
    def passes(self) -> int:
        return math.ceil(self.n_tiles / self.batch_size)

    def __str__(self) -> str:
        tiles = f"{self.n_tiles} tile{'s' if self.n_tiles != 1 else ''}"
        return (
            f"tile {list(self.size_in)} -> {list(self.size_out)}: {tiles} in {self.passes} "
            f"pass{'es' if self.passes != 1 else ''} (about {self.predicted_bytes / 2**30:.1f} "
            f"of {self.budget_bytes / 2**30:.1f} GiB)"
        )


def memory_budget(device: torch.device) -> int:
    """Bytes a prediction may plan for: a share of the GPU's free memory or of available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE)
    return int(available_ram() * CPU_SHARE)


def count_tiles(length: int, out: int, tiling: str, overlap: float, grid: int = 1) -> int:
    """Tiles along one axis of ``length`` (as :class:`.tiling.TilePlan` places them)."""
    return len(axis_starts(length, out, tiling, overlap, grid))


def choose_tile(
    model: str,
    shape: Sequence[int],
    budget_bytes: int,
    *,
    zoom_ratio: int = 3,
    nchannel: int = 1,
    tiling: str = "blend",
    overlap: float = 0.25,
    batch_size: int = 4,
    max_voxels: int | None = None,
) -> TileChoice:
    """The valid tile that predicts a (Z, Y, X) region at the least cost within the budget.

    ``batch_size`` is the most tiles per forward pass; fewer are used when a batch of the
    chosen tile would not fit (one tile always must). ``max_voxels`` caps a tile's input
    voxels (a retry after running out of memory asks for at most half the failed tile).
    """
    axes = [
        _candidates(model, zoom_ratio, axis, int(n), tiling, overlap)
        for axis, n in enumerate(shape)
    ]
    shapes = layer_shapes(model, zoom_ratio, nchannel)
    z, y, x = np.meshgrid(*(np.array([c[0] for c in a]) for a in axes), indexing="ij")
    counts = np.multiply.outer(
        np.multiply.outer([c[1] for c in axes[0]], [c[1] for c in axes[1]]),
        [c[1] for c in axes[2]],
    )
    fixed = parameter_count(model, zoom_ratio, nchannel) * 4 + FIXED
    need = shapes.elements(z, y, x) * PER_ELEMENT + fixed
    fits = need <= budget_bytes
    if max_voxels is not None:
        fits &= z * y * x <= max_voxels
    cost = np.where(fits, counts * shapes.multiply_adds(z, y, x), np.inf)
    if not np.isfinite(cost).any():
        smallest = geometry.min_size_in(model, zoom_ratio)
        if max_voxels is not None and max_voxels < math.prod(smallest):
            raise TileChoiceError(f"no valid tile of {model} has at most {max_voxels} voxels")
        raise TileChoiceError(
            f"{budget_bytes / 2**30:.2f} GiB is too little to predict with {model}: its smallest "
            f"tile {list(smallest)} needs about "
            f"{inference_bytes(model, smallest, 1, zoom_ratio, nchannel) / 2**30:.2f} GiB"
        )
    # the least cost; among equal costs the fewest tiles (less blending, fewer passes)
    best = np.unravel_index(np.lexsort((counts.ravel(), cost.ravel()))[0], cost.shape)
    size_in = (int(z[best]), int(y[best]), int(x[best]))
    per_tile = int(need[best]) - fixed
    batch = max(1, min(batch_size, int(counts[best]), (budget_bytes - fixed) // max(per_tile, 1)))
    return TileChoice(
        size_in=size_in,
        size_out=geometry.size_out(model, size_in, zoom_ratio),
        n_tiles=int(counts[best]),
        batch_size=batch,
        predicted_bytes=inference_bytes(model, size_in, batch, zoom_ratio, nchannel),
        budget_bytes=int(budget_bytes),
    )


def _candidates(
    model: str, zoom_ratio: int, axis: int, length: int, tiling: str, overlap: float
) -> list[tuple[int, int]]:
    """(input size, tiles along the axis): for each number of tiles, the smallest valid size.

    A larger size with as many tiles costs more and needs more memory, so only these can be
    the best. The valid sizes are walked from the smallest up to one tile for the whole axis.
    """
    smallest = geometry.min_size_in(model, zoom_ratio)
    loss = smallest[axis] - geometry.size_out(model, smallest, zoom_ratio)[axis]
    step = 1 if axis == 0 else geometry.yx_grid(model, zoom_ratio)
    grid = 1 if axis == 0 else step
    found: list[tuple[int, int]] = []
    size = smallest[axis]
    while True:
        tiles = count_tiles(length, size - loss, tiling, overlap, grid)
        if not found or tiles < found[-1][1]:
            found.append((size, tiles))
        if tiles == 1 or len(found) > _MAX_CANDIDATES:
            return found
        size += step
