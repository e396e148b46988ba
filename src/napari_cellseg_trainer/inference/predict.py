"""Whole-volume prediction in tiles: the established layout, or overlapping tiles blended smoothly.

A :class:`.tiling.TilePlan` says where the tiles go, a :class:`TileRunner` runs the model on
batches of them, an :class:`.tiling.Accumulator` adds them up. The padded input and one
preallocated output (plus a weight volume in blend mode) are all the memory a prediction takes
beyond the input: about 2 x (input + output) in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from scipy.ndimage import zoom

from . import precision as arithmetic
from .progress import LayerProgress
from .tiling import TILINGS, Accumulator, Corner, TilePlan, blend_window, tile_starts

__all__ = [
    "RUNTIME_FLIPS",
    "TILINGS",
    "PredictionCancelled",
    "TileRunner",
    "blend_window",
    "postprocess",
    "predict_volume",
    "resize",
    "tile_starts",
]

# The flips averaged by runtime augmentation (tensor dims of (N, C, Z, Y, X)): none, x, y, z.
RUNTIME_FLIPS: tuple[tuple[int, ...], ...] = ((), (4,), (3,), (2,))


class PredictionCancelled(Exception):
    """Raised between tiles when ``should_cancel()`` returns True."""


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
    precision: str = "fp32",
    note: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Probabilities (n_pairs, Z, Y, X) float32 for a (C, Z, Y, X) image.

    Parameters
    ----------
    output_pairs : (output index, class channel) pairs to return.
    tiling : ``blend`` (overlapping tiles, smooth weights, no seams) or ``established``
        (tiles of size_out side by side, the last one aligned to the volume's end).
    overlap : fraction of a tile shared with its neighbour in blend mode.
    runtime_aug : average over the flips in ``RUNTIME_FLIPS``.
    progress : called with (tiles done, tiles in all) after each batch, and, for this
        project's networks, with fractions of tiles as each layer of a pass finishes.
    should_cancel : checked between batches; True raises PredictionCancelled.
    out : a preallocated (n_pairs, Z, Y, X) float32 array (e.g. a memmap) to fill.
    planes : (start, stop): predict only these output planes (the rest of the volume still
        serves as z context); the result is then (n_pairs, stop - start, Y, X).
    precision : ``fp32``, ``bf16`` (autocast) or ``auto`` (:mod:`.precision`: bf16 where the
        CPU runs it natively, faster and agreeing on the first batch).
    note : called with the precision trial's outcome, when one was made.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (C, Z, Y, X), got shape {image.shape}")
    grid = getattr(model, "yx_grid", 1)  # our networks' pooling stride in y and x
    plan = TilePlan.make(image.shape[1:], size_in, size_out, tiling, overlap, planes, grid)
    accumulator = Accumulator(plan, len(output_pairs), out)
    device = torch.device(device)
    mode = arithmetic.resolve(precision, device, -(-len(plan.corners) // batch_size))
    runner = TileRunner(model, device, output_pairs, runtime_aug, mode)
    tracker = _TileCounter(len(plan.corners), batch_size, progress, model, plan, runtime_aug)
    with runner, tracker:
        for corners, probabilities in runner.run(plan, image, batch_size, should_cancel):
            accumulator.add(corners, probabilities)
            tracker.batch_done(len(corners))
    if runner.trial is not None and note is not None:
        note(str(runner.trial))
    return accumulator.result()


class _TileCounter:
    """Tiles done, reported after each batch and (our networks) during each pass."""

    def __init__(
        self,
        total: int,
        batch_size: int,
        progress: Callable[[float, int], None] | None,
        model: torch.nn.Module,
        plan: TilePlan,
        runtime_aug: bool,
    ) -> None:
        self.total, self.progress, self.size_in = total, progress, plan.size_in
        self.done = 0
        self.batch = batch_size  # tiles in a pass (the last one may hold fewer)
        self.passes = len(RUNTIME_FLIPS) if runtime_aug else 1
        self.layers = LayerProgress(model, self._inside_pass) if progress else None
        self._pass = 0
        self._last = 0.0

    def __enter__(self) -> _TileCounter:
        if self.layers is not None:
            self.layers.start(self.size_in)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.layers is not None:
            self.layers.stop()

    def batch_done(self, tiles: int) -> None:
        self.done += tiles
        self._pass, self._last = 0, 0.0
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _inside_pass(self, fraction: float) -> None:
        if fraction < self._last:  # a new pass began (runtime augmentation's flips)
            self._pass += 1
        self._last = fraction
        part = min(1.0, (self._pass + fraction) / self.passes)
        self.progress(self.done + part * min(self.batch, self.total - self.done), self.total)


class TileRunner:
    """Runs a model on batches of tiles in eval mode (its training mode restored afterwards).

    On a GPU the tiles' probabilities come back asynchronously (pinned memory and an event), and
    :meth:`run` hands over the previous batch while the GPU computes the next one, so the CPU's
    blending overlaps the GPU's work. ``mode`` is ``fp32``, ``bf16`` or ``trial``
    (:func:`.precision.resolve`): a trial on the first batch then settles it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        pairs: Sequence[tuple[int, int]],
        runtime_aug: bool = False,
        mode: str = "fp32",
    ) -> None:
        self.model, self.device = model, device
        self.pairs, self.runtime_aug = tuple(pairs), runtime_aug
        self._was_training = model.training
        self.mode = mode
        self.trial: arithmetic.PrecisionTrial | None = None

    def __enter__(self) -> TileRunner:
        self._was_training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.train(self._was_training)

    def run(
        self,
        plan: TilePlan,
        image: np.ndarray,
        batch_size: int,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[tuple[Corner, ...], np.ndarray]]:
        """(corners, (N, n_pairs, *size_out) probabilities) for every batch of the plan."""
        pending = None
        for corners in plan.batches(batch_size):
            if should_cancel is not None and should_cancel():
                raise PredictionCancelled
            tiles = torch.from_numpy(plan.cut(image, corners)).to(self.device)
            probs = self.probs(tiles)
            if self.device.type != "cuda":
                yield corners, probs.cpu().numpy()
                continue
            copy = _start_copy(probs, self.device)
            if pending is not None:
                yield pending[0], _finish_copy(*pending[1])
            pending = (corners, copy)
        if pending is not None:
            yield pending[0], _finish_copy(*pending[1])

    def probs(self, tiles: torch.Tensor) -> torch.Tensor:
        """(n_tiles, n_pairs, *size_out) float32 probabilities of a batch, on the device."""

        def compute() -> torch.Tensor:
            return _tile_probs(self.model, tiles, self.pairs, self.runtime_aug)

        with torch.inference_mode():
            if self.mode != "trial":
                with arithmetic.autocast(self.mode, self.device):
                    return compute()
            probs, self.trial = arithmetic.run_trial(compute, self.device)
        self.mode = "bf16" if self.trial.bf16_wins else "fp32"
        return probs


def _start_copy(probs: torch.Tensor, device: torch.device) -> tuple:
    """Start copying GPU probabilities into pinned host memory; (host tensor, done event)."""
    with torch.inference_mode():
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(device))
    return host, copied


def _finish_copy(host: torch.Tensor, copied: torch.cuda.Event) -> np.ndarray:
    copied.synchronize()  # the batch's copy from the GPU is complete
    return host.numpy()


def _tile_probs(
    model: torch.nn.Module, tiles: torch.Tensor, pairs: Sequence[tuple[int, int]], runtime_aug: bool
) -> torch.Tensor:
    """(n_tiles, n_pairs, *size_out) float32 probabilities on the model's device, averaged
    over flips if asked (call under ``torch.inference_mode``)."""
    flips = RUNTIME_FLIPS if runtime_aug else ((),)
    total = None
    for dims in flips:
        outputs = model(tiles.flip(dims) if dims else tiles)
        prob = torch.stack([outputs[i][:, c].float().exp() for i, c in pairs], dim=1)
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
