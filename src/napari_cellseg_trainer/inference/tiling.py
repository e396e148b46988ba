"""Where the tiles of a prediction go (:class:`TilePlan`) and how they add up (:class:`Accumulator`).

A plan is pure arithmetic on shapes: the tile corners of the established layout (tiles of
``size_out`` side by side, the last one aligned to the end) or of overlapping tiles for smooth
blending, optionally restricted to a range of output planes. The accumulator sums each tile's
probabilities into one preallocated output (weighted by a smooth window when blending).
"""

from __future__ import annotations

import itertools
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
    planes ``first .. stop``, padded up to a whole tile where the volume is smaller than one.
    Corners are relative to plane ``first``; the input window of a corner starts at the same
    corner of the volume padded by the margin (see :func:`pad_for_tiles`).
    """

    shape: tuple[int, int, int]
    size_in: tuple[int, int, int]
    size_out: tuple[int, int, int]
    blend: bool
    asked: tuple[int, int]
    first: int
    stop: int
    corners: tuple[Corner, ...]

    @classmethod
    def make(
        cls,
        shape: Sequence[int],
        size_in: Sequence[int],
        size_out: Sequence[int],
        tiling: str = "blend",
        overlap: float = 0.25,
        planes: tuple[int, int] | None = None,
    ) -> TilePlan:
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
        full = tuple(max(s, o) for s, o in zip(region, size_out, strict=True))
        if tiling == "blend":
            strides = [max(1, int(round(o * (1 - overlap)))) for o in size_out]
        else:
            strides = list(size_out)
        starts = [tile_starts(n, o, s) for n, o, s in zip(full, size_out, strides, strict=True)]
        return cls(
            shape=(depth, int(shape[1]), int(shape[2])),
            size_in=tuple(int(v) for v in size_in),  # type: ignore[arg-type]
            size_out=size_out,  # type: ignore[arg-type]
            blend=tiling == "blend",
            asked=asked,
            first=first,
            stop=stop,
            corners=tuple(itertools.product(*starts)),  # type: ignore[arg-type]
        )

    @property
    def full(self) -> tuple[int, int, int]:
        """The computed region (planes first..stop), grown to one tile where it is smaller."""
        region = (self.stop - self.first, self.shape[1], self.shape[2])
        return tuple(max(s, o) for s, o in zip(region, self.size_out, strict=True))  # type: ignore[return-value]

    def batches(self, batch_size: int) -> Iterator[tuple[Corner, ...]]:
        for begin in range(0, len(self.corners), batch_size):
            yield self.corners[begin : begin + batch_size]

    def input_window(self, corner: Corner) -> tuple[slice, slice, slice]:
        """Where the input of the tile at ``corner`` lies in the padded volume."""
        z, y, x = corner
        dz, dy, dx = self.size_in
        z += self.first
        return slice(z, z + dz), slice(y, y + dy), slice(x, x + dx)

    def output_region(self, corner: Corner) -> tuple[slice, slice, slice]:
        """Where the output of the tile at ``corner`` lies in the computed region."""
        return tuple(slice(c, c + o) for c, o in zip(corner, self.size_out, strict=True))  # type: ignore[return-value]

    def cut(self, padded: np.ndarray, corners: Sequence[Corner]) -> np.ndarray:
        """The (N, C, *size_in) input tiles at ``corners`` of a padded (C, Z, Y, X) volume."""
        return np.stack([padded[(slice(None), *self.input_window(c))] for c in corners])


def pad_for_tiles(image: np.ndarray, size_in: Sequence[int], size_out: Sequence[int]) -> np.ndarray:
    """Pad (C, Z, Y, X) by the margin (z zeros, y/x mirror), and up to one tile if smaller."""
    margin = margin_of(size_in, size_out)
    pads = [
        (m, m + max(0, o - n)) for m, o, n in zip(margin, size_out, image.shape[1:], strict=True)
    ]
    padded = np.pad(image, [(0, 0), (0, 0), pads[1], pads[2]], mode="symmetric")
    return np.pad(padded, [(0, 0), pads[0], (0, 0), (0, 0)], mode="constant")


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
