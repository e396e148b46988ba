"""Size rules of the two models: the one place that knows which patch sizes are valid.

All convolutions are valid (unpadded); pooling and up-sampling act on y and x only.
- unet_xy: z_out = z_in - 28 (z_in >= 29); y/x: in = 4 (mod 8), in >= 92, out = in - 88.
- unet_xy_zoom(k): z_out = z_in - 32 (z_in >= 33); y/x: in = k * m with m valid for unet_xy,
  out = in - 88 k - 4.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

from ..errors import UserInputError

MODEL_NAMES = ("unet_xy", "unet_xy_zoom")
_Z_LOSS = {"unet_xy": 28, "unet_xy_zoom": 32}
_MIN_M = 92  # smallest valid unet_xy y/x input


class InvalidSizeError(UserInputError, ValueError):
    """A size_in the model cannot take; ``nearest`` holds the closest valid ones."""

    def __init__(self, message: str, nearest: list[tuple[int, int, int]]) -> None:
        super().__init__(message)
        self.nearest = nearest


def _check_model(model: str, zoom_ratio: int) -> None:
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODEL_NAMES)}")
    if model == "unet_xy_zoom" and (
        isinstance(zoom_ratio, bool) or not isinstance(zoom_ratio, int) or zoom_ratio < 2
    ):
        raise InvalidSizeError(f"zoom_ratio must be an integer >= 2, got {zoom_ratio!r}", [])


def _zoom(model: str, zoom_ratio: int) -> int:
    return zoom_ratio if model == "unet_xy_zoom" else 1


def yx_grid(model: str, zoom_ratio: int = 3) -> int:
    """The network's pooling stride in y and x: 8 (three poolings by 2), times zoom_ratio.

    Tiles whose corners lie on this grid pool the same voxels together, so their outputs agree
    voxel for voxel where they overlap.
    """
    _check_model(model, zoom_ratio)
    return 8 * _zoom(model, zoom_ratio)


def min_size_in(model: str, zoom_ratio: int = 3) -> tuple[int, int, int]:
    _check_model(model, zoom_ratio)
    k = _zoom(model, zoom_ratio)
    return (_Z_LOSS[model] + 1, _MIN_M * k, _MIN_M * k)


def _yx_valid(value: int, k: int) -> bool:
    return value % k == 0 and (value // k) % 8 == 4 and value // k >= _MIN_M


def _yx_out(value: int, model: str, k: int) -> int:
    return value - 88 if model == "unet_xy" else value - 88 * k - 4


def valid_yx(model: str, zoom_ratio: int = 3, lo: int = 0, hi: int = 2000) -> list[int]:
    """Every valid y/x input size in [lo, hi]."""
    _check_model(model, zoom_ratio)
    k = _zoom(model, zoom_ratio)
    return [v for v in range(max(lo, 1), hi + 1) if _yx_valid(v, k)]


def _nearest_yx(value: int, k: int) -> tuple[int, int]:
    """The closest valid y/x size at or below ``value`` (or the smallest) and above it."""
    step, first = 8 * k, _MIN_M * k
    if value <= first:
        return first, first
    below = first + (value - first) // step * step
    return below, below + step


def is_valid_size_in(model: str, size_in: Sequence[int], zoom_ratio: int = 3) -> bool:
    try:
        size_out(model, size_in, zoom_ratio)
    except InvalidSizeError:
        return False
    return True


def nearest_valid_size_in(
    model: str, size_in: Sequence[int], zoom_ratio: int = 3
) -> list[tuple[int, int, int]]:
    """Valid sizes closest to ``size_in``: each axis rounded down, then each rounded up."""
    _check_model(model, zoom_ratio)
    k = _zoom(model, zoom_ratio)
    z_min = _Z_LOSS[model] + 1
    z = max(int(size_in[0]), z_min)
    options = []
    for pick in (0, 1):
        yx = []
        for value in size_in[1:]:
            value = int(value)
            yx.append(value if _yx_valid(value, k) else _nearest_yx(value, k)[pick])
        options.append((z, yx[0], yx[1]))
    return list(dict.fromkeys(options))


def size_out(model: str, size_in: Sequence[int], zoom_ratio: int = 3) -> tuple[int, int, int]:
    """The output patch of ``model`` for input patch ``size_in`` (z, y, x)."""
    _check_model(model, zoom_ratio)
    size_in = list(size_in)
    if len(size_in) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in size_in):
        raise InvalidSizeError(f"size_in must be three integers [z, y, x], got {size_in}", [])
    k = _zoom(model, zoom_ratio)
    z, y, x = size_in
    reasons = []
    if z <= _Z_LOSS[model]:
        reasons.append(f"z must be at least {_Z_LOSS[model] + 1}")
    if not (_yx_valid(y, k) and _yx_valid(x, k)):
        if k == 1:
            reasons.append("y and x must be 4 more than a multiple of 8 and at least 92")
        else:
            reasons.append(
                f"y and x must be {k} x m with m 4 more than a multiple of 8 and m >= 92 "
                f"(zoom_ratio {k})"
            )
    if reasons:
        nearest = nearest_valid_size_in(model, size_in, zoom_ratio)
        offer = " or ".join(str(list(n)) for n in nearest)
        raise InvalidSizeError(
            f"size_in {size_in} is not valid for {model}: {'; '.join(reasons)}; nearest valid: {offer}",
            nearest,
        )
    return (z - _Z_LOSS[model], _yx_out(y, model, k), _yx_out(x, model, k))


def margin(model: str, size_in: Sequence[int], zoom_ratio: int = 3) -> tuple[int, int, int]:
    """(size_in - size_out) / 2 per axis: the context around the output patch."""
    return margin_of(size_in, size_out(model, size_in, zoom_ratio))


def margin_of(size_in: Sequence[int], size_out: Sequence[int]) -> tuple[int, int, int]:
    """``(size_in - size_out) / 2`` per axis; raises ValueError unless whole and >= 0."""
    if len(size_in) != 3 or len(size_out) != 3:
        raise ValueError(f"size_in {list(size_in)} and size_out {list(size_out)} must be [z, y, x]")
    margin = []
    for axis, a, b in zip("zyx", size_in, size_out, strict=True):
        if a < b or (a - b) % 2:
            raise ValueError(
                f"size_in {list(size_in)} and size_out {list(size_out)}: in {axis}, size_in - "
                "size_out must be even and >= 0 (the raw patch surrounds the output patch)"
            )
        margin.append((a - b) // 2)
    return margin[0], margin[1], margin[2]


def covering_size_in(
    model: str,
    size_in: Sequence[int],
    shape: Sequence[int],
    max_voxels: int,
    zoom_ratio: int = 3,
) -> tuple[int, int, int]:
    """The valid input size that predicts a volume of ``shape`` at the least cost.

    The networks are fully convolutional with valid convolutions, so any valid tile size
    predicts the whole volume (up to where tile borders fall relative to the y-x pooling grid,
    as with any tiling); bigger tiles waste less of each pass on the margin. Among tiles of
    at most ``max_voxels`` input voxels, never smaller than ``size_in``, this picks the one that
    minimises (number of tiles x input voxels per tile).
    """
    return _search_covering(
        model,
        tuple(int(v) for v in size_in),
        tuple(int(v) for v in shape),
        int(max_voxels),
        zoom_ratio,
    )


@functools.lru_cache(maxsize=256)
def _search_covering(
    model: str,
    size_in: Sequence[int],
    shape: Sequence[int],
    max_voxels: int,
    zoom_ratio: int,
) -> tuple[int, int, int]:
    """The search behind :func:`covering_size_in` (cached there: validation asks every epoch)."""
    k = _zoom(model, zoom_ratio)
    base = tuple(int(v) for v in size_in)
    base_out = size_out(model, base, zoom_ratio)

    def tile_for(axis: int, out: int) -> int:
        if axis == 0:
            return max(base[0], out + _Z_LOSS[model])
        wanted = out + base[axis] - base_out[axis]
        return max(base[axis], wanted if _yx_valid(wanted, k) else _nearest_yx(wanted, k)[1])

    options = []
    for axis, n in enumerate(shape):
        most = min(64, -(-int(n) // base_out[axis]))
        options.append({tile_for(axis, -(-int(n) // t)) for t in range(1, most + 1)})
    best, best_cost = base, None
    for candidate in itertools.product(*options):
        voxels = candidate[0] * candidate[1] * candidate[2]
        if voxels > max_voxels and candidate != base:
            continue
        out = size_out(model, candidate, zoom_ratio)
        tiles = math.prod(-(-int(n) // o) for n, o in zip(shape, out, strict=True))
        if best_cost is None or tiles * voxels < best_cost:
            best, best_cost = candidate, tiles * voxels
    return best
