"""Whole-volume prediction in tiles: the established layout, or overlapping tiles blended smoothly.

The padded input and one preallocated output (plus a weight volume in blend mode) are all the
memory a prediction takes beyond the input: about 2 x (input + output) in float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import zoom

TILINGS = ("blend", "established")
# The flips averaged by runtime augmentation (tensor dims of (N, C, Z, Y, X)): none, x, y, z.
RUNTIME_FLIPS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (2,))


class PredictionCancelled(Exception):
    """Raised between tiles when ``should_cancel()`` returns True."""


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


def pad_for_tiles(image: np.ndarray, size_in: Sequence[int], size_out: Sequence[int]) -> np.ndarray:
    """Pad (C, Z, Y, X) by the margin (z zeros, y/x mirror), and up to one tile if smaller."""
    pads = [(0, 0)]
    for axis, (i, o) in enumerate(zip(size_in, size_out, strict=True)):
        m = (i - o) // 2
        short = max(0, o - image.shape[axis + 1])
        pads.append((m, m + short))
    z_pad = [(0, 0), pads[1], (0, 0), (0, 0)]
    yx_pad = [(0, 0), (0, 0), pads[2], pads[3]]
    padded = np.pad(image, yx_pad, mode="symmetric")
    return np.pad(padded, z_pad, mode="constant")


def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray,
    size_in: Sequence[int],
    size_out: Sequence[int],
    *,
    output_pairs: Sequence[tuple[int, int]] = ((0, 1),),
    tiling: str = "blend",
    overlap: float = 0.25,
    batch_size: int = 4,
    runtime_aug: bool = False,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    out: np.ndarray | None = None,
    planes: tuple[int, int] | None = None,
) -> np.ndarray:
    """Probabilities (n_pairs, Z, Y, X) float32 for a (C, Z, Y, X) image.

    Parameters
    ----------
    output_pairs : (output index, class channel) pairs to return.
    tiling : ``blend`` (overlapping tiles, smooth weights, no seams) or ``established``
        (tiles of size_out side by side, the last one aligned to the volume's end).
    overlap : fraction of a tile shared with its neighbour in blend mode.
    runtime_aug : average over the flips in ``RUNTIME_FLIPS``.
    progress : called with (tiles done, tiles in all) after each batch.
    should_cancel : checked between batches; True raises PredictionCancelled.
    out : a preallocated (n_pairs, Z, Y, X) float32 array (e.g. a memmap) to fill.
    planes : (start, stop): predict only these output planes (the rest of the volume still
        serves as z context); the result is then (n_pairs, stop - start, Y, X).
    """
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
    if image.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {image.shape}")
    device = torch.device(device)
    size_in, size_out = tuple(size_in), tuple(size_out)
    depth = image.shape[1]
    asked = (0, depth) if planes is None else tuple(planes)
    if not 0 <= asked[0] < asked[1] <= depth:
        raise ValueError(f"planes must lie within 0..{depth}, got {planes}")
    # Compute at least one tile's depth of planes (all real data where the volume allows).
    need = min(depth, size_out[0])
    first = min(asked[0], depth - need)
    stop = max(asked[1], first + need)
    shape = (stop - first, *image.shape[2:])
    padded = pad_for_tiles(image.astype(np.float32, copy=False), size_in, size_out)
    full = tuple(max(s, o) for s, o in zip(shape, size_out, strict=True))
    if tiling == "blend":
        strides = [max(1, int(round(o * (1 - overlap)))) for o in size_out]
    else:
        strides = list(size_out)
    corners = list(
        itertools.product(
            *(tile_starts(n, o, s) for n, o, s in zip(full, size_out, strides, strict=True))
        )
    )

    exact = out is not None and out.shape[1:] == full and asked == (first, stop)
    acc = out if exact else np.zeros((len(output_pairs), *full), dtype=np.float32)
    if exact:
        acc[...] = 0
    weight = np.zeros(full, dtype=np.float32) if tiling == "blend" else None
    window = blend_window(size_out) if tiling == "blend" else None

    def cut(batch: Sequence[tuple[int, int, int]]) -> np.ndarray:
        z0, (dz, dy, dx) = first, size_in
        return np.stack(
            [padded[:, z0 + z : z0 + z + dz, y : y + dy, x : x + dx] for z, y, x in batch]
        )

    def add(begin: int, batch: Sequence[tuple[int, int, int]], probs: np.ndarray) -> None:
        for (z, y, x), prob in zip(batch, probs, strict=True):
            region = (
                slice(z, z + size_out[0]),
                slice(y, y + size_out[1]),
                slice(x, x + size_out[2]),
            )
            if weight is None:
                acc[(slice(None), *region)] = prob
            else:
                acc[(slice(None), *region)] += prob * window
                weight[region] += window
        if progress is not None:
            progress(min(begin + batch_size, len(corners)), len(corners))

    def finish(begin: int, batch, host: torch.Tensor, copied: torch.cuda.Event) -> None:
        copied.synchronize()  # the batch's copy from the GPU is complete
        add(begin, batch, host.numpy())

    # On a GPU the tiles' probabilities come back asynchronously (pinned memory, an event),
    # and the previous batch is blended on the CPU while the GPU computes the next one.
    overlap_gpu = device.type == "cuda"
    pending = None
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(corners), batch_size):
            if should_cancel is not None and should_cancel():
                raise PredictionCancelled
            batch = corners[begin : begin + batch_size]
            tiles = torch.from_numpy(cut(batch)).to(device)
            with torch.inference_mode():
                probs = _tile_probs(model, tiles, output_pairs, runtime_aug)
                if not overlap_gpu:
                    add(begin, batch, probs.cpu().numpy())
                    continue
                host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
                host.copy_(probs, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(torch.cuda.current_stream(device))
            if pending is not None:
                finish(*pending)
            pending = (begin, batch, host, copied)
        if pending is not None:
            finish(*pending)
    finally:
        model.train(was_training)
    if weight is not None:
        acc /= weight
    result = acc[:, asked[0] - first : asked[1] - first, : shape[1], : shape[2]]
    if out is not None and not exact:
        out[...] = result
        return out
    return result if exact or result.shape == acc.shape else np.ascontiguousarray(result)


def _tile_probs(
    model: torch.nn.Module, tiles: torch.Tensor, pairs: Sequence[tuple[int, int]], runtime_aug: bool
) -> torch.Tensor:
    """(n_tiles, n_pairs, *size_out) float32 probabilities on the model's device, averaged
    over flips if asked (call under ``torch.inference_mode``)."""
    flips = RUNTIME_FLIPS if runtime_aug else ((),)
    total = None
    for dims in flips:
        outputs = model(tiles.flip(dims) if dims else tiles)
        prob = torch.stack([outputs[i][:, c].exp() for i, c in pairs], dim=1)
        prob = prob.flip(dims) if dims else prob
        total = prob if total is None else total + prob
    return (total / len(flips)).float()


def postprocess(prob: np.ndarray, *, threshold: float, minmax: bool = False) -> np.ndarray:
    """Optionally rescale to [0, 1] (min-max); ``threshold > 0`` gives uint8 0/255, else float32."""
    prob = prob.astype(np.float32, copy=False)
    if minmax:
        lo, hi = float(prob.min()), float(prob.max())
        prob = (prob - lo) / (hi - lo) if hi > lo else np.zeros_like(prob)
    if threshold > 0:
        return np.where(prob > threshold, np.uint8(255), np.uint8(0))
    return prob


def resize(
    image: np.ndarray,
    ratio: Sequence[float],
    order: int = 1,
    target_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Zoom a (Z, Y, X) array by ``ratio``, or back to exactly ``target_shape``."""
    if target_shape is not None:
        ratio = [t / s for t, s in zip(target_shape, image.shape, strict=True)]
    result = zoom(image.astype(np.float32, copy=False), ratio, order=order)
    if target_shape is not None and result.shape != tuple(target_shape):
        # zoom rounds each axis; crop or edge-pad to the exact shape asked for.
        fixed = result[tuple(slice(0, t) for t in target_shape)]
        pads = [(0, t - s) for t, s in zip(target_shape, fixed.shape, strict=True)]
        result = np.pad(fixed, pads, mode="edge")
    return result
