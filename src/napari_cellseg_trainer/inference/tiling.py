"""Where the tiles of a prediction go (:class:`TilePlan`) and how they add up (:class:`Accumulator`).

A plan is pure arithmetic on shapes: the tile corners of the established layout (tiles of
``size_out`` side by side, the last one aligned to the end) or of overlapping tiles for smooth
blending, optionally restricted to a range of output planes. The accumulator sums each tile's
probabilities into one preallocated output (weighted by a smooth window when blending).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..models.geometry import margin_of

TILINGS = ("blend", "established")
Corner = tuple[int, int, int]


def tile_starts(length: int, out: int, stride: int) -> list[int]:
    """Tile corners along one axis: every ``stride``, the last tile aligned to the end."""
    if length <= out:
        return [0]
    starts = list(range(0, length - out + 1, stride))
    if starts[-1] != length - out:
        starts.append(length - out)
    return starts


def axis_starts(
    length: int, out: int, tiling: str = "blend", overlap: float = 0.25, grid: int = 1
) -> list[int]:
    """Tile corners along one axis of ``length`` for outputs of ``out``.

    established: tiles side by side, the last one aligned to the end. blend: tiles overlapping
    by about ``overlap``, every corner on a multiple of ``grid``; the last tile may reach past
    the end (its window is padded there). ``grid`` is the network's pooling stride along the
    axis (8 in y and x for unet_xy): tiles on one grid pool the same voxels together, so each
    output voxel is the same whichever tile computes it, and any tile size gives the same map.
    """
    if tiling != "blend":
        return tile_starts(max(length, out), out, out)
    stride = max(1, int(round(out * (1 - overlap))))
    if grid > 1:
        stride = max(grid, stride // grid * grid)
    if grid == 1:
        return tile_starts(max(length, out), out, stride)
    count = 1 + max(0, math.ceil((length - out) / stride))
    return [i * stride for i in range(count)]


def blend_window(size_out: Sequence[int]) -> np.ndarray:
    """Separable raised-cosine weights for one tile, never reaching zero (float32)."""
    axes = []
    for n in size_out:
        ramp = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)
        axes.append(np.maximum(ramp, 1e-3).astype(np.float32))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


@dataclass(frozen=True)
class TilePlan:
    """The tiles that predict output planes ``asked`` of a (Z, Y, X) volume.

    At least one tile's depth of planes is computed (all real data where the volume allows):
    planes ``first .. stop``. Corners are relative to plane ``first``; ``full`` is the region
    the tiles cover, at least the computed one (it reaches past the volume where a tile does).
    The input window of a corner starts at the same corner of the volume :meth:`pad` returns.
    """

    shape: tuple[int, int, int]
    size_in: tuple[int, int, int]
    size_out: tuple[int, int, int]
    blend: bool
    asked: tuple[int, int]
    first: int
    stop: int
    corners: tuple[Corner, ...]
    full: tuple[int, int, int]

    @classmethod
    def make(
        cls,
        shape: Sequence[int],
        size_in: Sequence[int],
        size_out: Sequence[int],
        tiling: str = "blend",
        overlap: float = 0.25,
        planes: tuple[int, int] | None = None,
        grid: int = 1,
    ) -> TilePlan:
        """``grid``: the network's pooling stride in y and x (blend tiles start on it)."""
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
        depth = int(shape[0])
        asked = (0, depth) if planes is None else (int(planes[0]), int(planes[1]))
        if not 0 <= asked[0] < asked[1] <= depth:
            raise ValueError(f"planes must lie within 0..{depth}, got {planes}")
        size_out = tuple(int(v) for v in size_out)
        need = min(depth, size_out[0])
        first = min(asked[0], depth - need)
        stop = max(asked[1], first + need)
        region = (stop - first, int(shape[1]), int(shape[2]))
        starts = [
            axis_starts(n, o, tiling, overlap, g)
            for n, o, g in zip(region, size_out, (1, grid, grid), strict=True)
        ]
        full = tuple(max(n, s[-1] + o) for n, s, o in zip(region, starts, size_out, strict=True))
        return cls(
            shape=(depth, int(shape[1]), int(shape[2])),
            size_in=tuple(int(v) for v in size_in),  # type: ignore[arg-type]
            size_out=size_out,  # type: ignore[arg-type]
            blend=tiling == "blend",
            asked=asked,
            first=first,
            stop=stop,
            corners=tuple(itertools.product(*starts)),  # type: ignore[arg-type]
            full=full,  # type: ignore[arg-type]
        )

    def batches(self, batch_size: int) -> Iterator[tuple[Corner, ...]]:
        for begin in range(0, len(self.corners), batch_size):
            yield self.corners[begin : begin + batch_size]

    def output_region(self, corner: Corner) -> tuple[slice, slice, slice]:
        """Where the output of the tile at ``corner`` lies in the computed region."""
        return tuple(slice(c, c + o) for c, o in zip(corner, self.size_out, strict=True))  # type: ignore[return-value]

    def cut(self, image, corners: Sequence[Corner]) -> np.ndarray:
        """The (N, C, *size_in) float32 input tiles at ``corners`` of a (C, Z, Y, X) volume.

        Each tile reads only its own window of ``image`` (a numpy array, or any array that
        slices like one: a memory map, zarr, dask), padded where it reaches past the volume as
        the established tool pads the whole volume: by the margin, y and x mirrored
        (symmetric), z with zeros. No padded copy of the volume is ever made.
        """
        tiles = np.empty((len(corners), image.shape[0], *self.size_in), dtype=np.float32)
        for tile, corner in zip(tiles, corners, strict=True):
            self._fill(tile, image, corner)
        return tiles

    def input_start(self, corner: Corner) -> Corner:
        """Where the input window of the tile at ``corner`` starts in the volume (it may start
        before the volume, or reach past its end: :meth:`cut` pads there)."""
        margin = margin_of(self.size_in, self.size_out)
        return (corner[0] + self.first - margin[0], corner[1] - margin[1], corner[2] - margin[2])

    def input_box(self, corners: Sequence[Corner]) -> tuple[slice, slice, slice]:
        """The smallest box of the volume holding all that :meth:`cut` reads for ``corners``
        (mirrored padding included); read once, it serves their tiles."""
        lows, highs = np.array(self.shape), np.zeros(3, dtype=int)
        for corner in corners:
            for axis, (start, n) in enumerate(
                zip(self.input_start(corner), self.size_in, strict=True)
            ):
                index = np.arange(start, start + n)
                if axis == 0:
                    index = index[(index >= 0) & (index < self.shape[0])]
                else:
                    index = _mirrored(index, self.shape[axis])
                if index.size:
                    lows[axis] = min(lows[axis], index.min())
                    highs[axis] = max(highs[axis], index.max() + 1)
        return tuple(slice(int(lo), int(max(lo, hi))) for lo, hi in zip(lows, highs, strict=True))  # type: ignore[return-value]

    def _fill(self, tile: np.ndarray, image, corner: Corner) -> None:
        starts = self.input_start(corner)
        lengths = image.shape[1:]
        inside = all(
            0 <= s and s + n <= length
            for s, n, length in zip(starts, self.size_in, lengths, strict=True)
        )
        if inside:  # most tiles: one plain slice
            box = tuple(slice(s, s + n) for s, n in zip(starts, self.size_in, strict=True))
            tile[...] = image[(slice(None), *box)]
            return
        z = np.arange(starts[0], starts[0] + self.size_in[0])
        y, x = (
            _mirrored(np.arange(s, s + n), length)
            for s, n, length in zip(starts[1:], self.size_in[1:], lengths[1:], strict=True)
        )
        planes = (z >= 0) & (z < lengths[0])
        tile[:, ~planes] = 0
        if not planes.any():
            return
        zs = z[planes]
        # read the bounding box once (chunk-friendly for zarr), then pick within it
        block = image[:, zs[0] : zs[-1] + 1, y.min() : y.max() + 1, x.min() : x.max() + 1]
        picked = np.ix_(range(tile.shape[0]), zs - zs[0], y - y.min(), x - x.min())
        tile[:, planes] = np.asarray(block)[picked]


def _mirrored(index: np.ndarray, length: int) -> np.ndarray:
    """Indices reflected into 0..length-1 as numpy's "symmetric" padding reflects them."""
    period = 2 * length
    index = np.mod(index, period)
    return np.where(index < length, index, period - 1 - index)


class Accumulator:
    """The output of a plan, tile by tile: placed (established) or blended with smooth weights.

    ``out`` is a preallocated (n_outputs, planes, Y, X) float32 array to fill (e.g. a memmap);
    it is written in place when its shape is the computed region's, else copied at the end.
    """

    def __init__(self, plan: TilePlan, n_outputs: int, out: np.ndarray | None = None) -> None:
        self.plan = plan
        self.out = out
        exact = (
            out is not None and out.shape[1:] == plan.full and plan.asked == (plan.first, plan.stop)
        )
        self.sums = out if exact else np.zeros((n_outputs, *plan.full), dtype=np.float32)
        if exact:
            self.sums[...] = 0
        self.in_place = exact
        self.weight = np.zeros(plan.full, dtype=np.float32) if plan.blend else None
        self.window = blend_window(plan.size_out) if plan.blend else None

    def add(self, corners: Sequence[Corner], probabilities: np.ndarray) -> None:
        """Take in the (N, n_outputs, *size_out) probabilities of the tiles at ``corners``."""
        for corner, prob in zip(corners, probabilities, strict=True):
            region = self.plan.output_region(corner)
            if self.weight is None:
                self.sums[(slice(None), *region)] = prob
            else:
                self.sums[(slice(None), *region)] += prob * self.window
                self.weight[region] += self.window

    def result(self) -> np.ndarray:
        """The asked planes, cropped to the volume: (n_outputs, planes, Y, X) float32."""
        plan = self.plan
        if self.weight is not None:
            self.sums /= self.weight
        z0 = plan.asked[0] - plan.first
        region = (slice(None), slice(z0, z0 + plan.asked[1] - plan.asked[0]))
        result = self.sums[(*region, slice(0, plan.shape[1]), slice(0, plan.shape[2]))]
        if self.out is not None and not self.in_place:
            self.out[...] = result
            return self.out
        if self.in_place or result.shape == self.sums.shape:
            return result
        return np.ascontiguousarray(result)
