"""Prediction of volumes larger than memory: OME-Zarr in, OME-Zarr out, block by block.

The output is cut into blocks (its zarr chunks). For each block the tiles of the whole-volume
plan (:class:`.tiling.TilePlan`: the same corners and blend weights as in memory) that reach
into it are run on windows read from the input (a zarr, dask or memory-mapped array), summed
into the block alone, and the finished block is written. Memory holds one block and one batch
of tiles, whatever the volume's size; the result equals the in-memory prediction (the same
tiles, weights and order). A block whose "done" flag is set is skipped, so an interrupted run
resumes where it stopped; under torchrun each rank takes its own blocks (round robin), and no
two ranks write the same chunk.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import PredictConfig
from ..data.images import ImageReadError, open_lazy
from ..data.intensity import saturation_warnings
from ..devices import keep_large_blocks_apart
from ..distributed import World
from ..files import writing
from ..normalization import normalised_channels, streamed_normalizer
from .precision import resolve
from .predict import PredictionCancelled, TileRunner
from .tile_choice import choose_tile, memory_budget
from .tiling import Corner, TilePlan, blend_window
from .zarr_store import ChunkedError, fingerprint, open_output, remove_prediction, wait_for_store

BLOCK = (64, 256, 256)  # z, y, x voxels of an output chunk


def predict_to_zarr(
    model: torch.nn.Module,
    source,
    output: str | Path,
    cfg: PredictConfig,
    size_in: Sequence[int],
    size_out: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    world: World | None = None,
    voxel_size: Sequence[float] | None = None,
    block: Sequence[int] = BLOCK,
    progress: Callable[[float, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    restart: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[int, int, int]]:
    """Predict a (C, Z, Y, X) array-like into the OME-Zarr ``output``; the blocks this rank wrote.

    ``output`` holds one image array ``0`` of shape (n_pairs, Z, Y, X): probabilities (float32)
    or, with ``Threshold > 0``, labels 0/255 (uint8), with the voxel size as its scale. An
    existing ``output`` is resumed only if the same weights and settings made it (a fingerprint
    in its attributes); ``restart`` deletes an earlier prediction of this tool and starts again.
    """
    _check(cfg)
    keep_large_blocks_apart()  # bounded address space over hours of blocks
    world = world or World()
    device = torch.device(device)
    pairs = tuple(zip(cfg.OutputCh[::2], cfg.OutputCh[1::2], strict=True))
    shape = tuple(int(v) for v in source.shape[1:])
    grid = getattr(model, "yx_grid", 1)
    plan = TilePlan.make(shape, size_in, size_out, cfg.tiling, cfg.overlap, grid=grid)
    image = _Normalised(source, cfg.Normalization)
    band = getattr(model, "intensity_band", None)
    if warn is not None and world.rank == 0:  # said once, before a block
        lines = saturation_warnings([t.sample for t in image.transforms])
        if band is not None:
            lines.append(band.shift(image.transforms[0].normalized_sample(), cfg.Normalization))
        for line in filter(None, lines):
            warn(line)
    made_by = fingerprint(model, cfg, size_in, size_out)
    with writing(output, f"writing-{world.rank}"):  # one live writer per rank and store
        array, done = _open_store(
            Path(output), world, restart, (len(pairs), *shape), block, cfg, voxel_size, made_by
        )
        blocks = itertools.product(
            *(range(math.ceil(n / b)) for n, b in zip(shape, block, strict=True))
        )
        mine = [b for b in world.mine(list(blocks)) if not done[b]]
        written = []
        cache = _TileCache()
        mode = resolve(cfg.precision, device, -(-len(plan.corners) // cfg.batch_size))
        with TileRunner(model, device, pairs, cfg.RuntimeAug, mode) as runner:
            for count, index in enumerate(mine):
                if should_cancel is not None and should_cancel():
                    raise PredictionCancelled
                region = tuple(
                    slice(i * b, min((i + 1) * b, n))
                    for i, b, n in zip(index, block, shape, strict=True)
                )
                values = _predict_block(
                    runner, plan, image, region, len(pairs), cfg.batch_size, cache
                )
                if cfg.Threshold > 0:
                    values = np.where(values > cfg.Threshold, np.uint8(255), np.uint8(0))
                array[(slice(None), *region)] = values
                done[index] = world.rank + 1  # after the data: skipped only once it is written
                written.append(index)
                if progress is not None:
                    progress(count + 1, len(mine))
    return written


def _open_store(output: Path, world: World, restart: bool, shape, block, cfg, voxel, made_by):
    """The output array and its done flags: rank 0 creates (or restarts) the store, the other
    ranks wait for it."""
    if world.rank > 0:
        wait_for_store(output)  # rank 0 creates it: no two ranks create the same array
    elif restart:
        remove_prediction(output)
    return open_output(output, shape, block, cfg.Threshold > 0, voxel, made_by)


def _check(cfg: PredictConfig) -> None:
    if cfg.tiling != "blend":
        raise ChunkedError(
            "tiling: the established tiling rescales the whole output to [0, 1]; use blend for "
            "OME-Zarr output"
        )
    if any(r != 1 for r in cfg.ResizeRatio):
        raise ChunkedError(
            "ResizeRatio: resizing needs the whole volume; give 1, 1, 1 for OME-Zarr"
        )


class _TileCache:
    """Tile outputs kept for the next blocks they reach into (least recently used go first).

    A tile that crosses a block border is computed once while the cache holds it: blocks are
    written in the plan's order, so its neighbours come soon after. Beyond ``budget`` bytes the
    oldest outputs are dropped (and computed again if a later block needs them): memory stays
    bounded whatever the volume.
    """

    def __init__(self, budget: int = 512 * 2**20) -> None:
        self.budget, self.used = budget, 0
        self.outputs: OrderedDict[Corner, np.ndarray] = OrderedDict()
        self.computed = 0  # tiles run through the network

    def get(self, corner: Corner) -> np.ndarray | None:
        found = self.outputs.get(corner)
        if found is not None:
            self.outputs.move_to_end(corner)
        return found

    def put(self, corner: Corner, output: np.ndarray) -> None:
        self.outputs[corner] = output
        self.used += output.nbytes
        while self.used > self.budget and len(self.outputs) > 1:
            _, dropped = self.outputs.popitem(last=False)
            self.used -= dropped.nbytes


def _predict_block(runner, plan: TilePlan, image, region, n_pairs, batch, cache) -> np.ndarray:
    """The blended probabilities of one output block: its tiles only, summed in the plan's order."""
    shape = tuple(r.stop - r.start for r in region)
    sums = np.zeros((n_pairs, *shape), np.float32)
    weight = np.zeros(shape, np.float32)
    window = blend_window(plan.size_out)
    corners = list(_corners_in(plan, region))
    missing = [c for c in corners if cache.get(c) is None]
    if missing:  # one read for the block's new tiles, not one per tile
        image = _Boxed(image, plan.input_box(missing))
    for start in range(0, len(missing), batch):
        chunk = missing[start : start + batch]
        tiles = torch.from_numpy(plan.cut(image, chunk)).to(runner.device)
        probs = runner.probs(tiles).cpu().numpy()
        for corner, prob in zip(chunk, probs, strict=True):
            cache.put(corner, prob * window)
        cache.computed += len(chunk)
    for corner in corners:
        weighted = cache.get(corner)
        if weighted is None:  # dropped already: the cache is smaller than one block's tiles
            tile = torch.from_numpy(plan.cut(image, [corner])).to(runner.device)
            prob = runner.probs(tile)
            weighted = prob.cpu().numpy()[0] * window
            cache.computed += 1
        inside, local = _overlap(corner, plan.size_out, region)
        sums[(slice(None), *local)] += weighted[(slice(None), *inside)]
        weight[local] += window[inside]
    return sums / weight


def _corners_in(plan: TilePlan, region) -> Iterator[Corner]:
    """The plan's corners whose output reaches into ``region``, in the plan's order."""
    per_axis = [sorted({c[a] for c in plan.corners}) for a in range(3)]
    wanted = [
        [s for s in starts if s < r.stop and s + o > r.start]
        for starts, r, o in zip(per_axis, region, plan.size_out, strict=True)
    ]
    yield from itertools.product(*wanted)


def _overlap(corner: Corner, size_out, region) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(the part of a tile's output inside ``region``, where it lies in the region's block)."""
    inside, local = [], []
    for c, o, r in zip(corner, size_out, region, strict=True):
        lo, hi = max(c, r.start), min(c + o, r.stop)
        inside.append(slice(lo - c, hi - c))
        local.append(slice(lo - r.start, hi - r.start))
    return tuple(inside), tuple(local)


class _Boxed:
    """A (C, Z, Y, X) array-like whose windows inside ``box`` come from one read of it.

    A lazy image (a TIFF read plane by plane, zarr chunks) is read and normalised once for a
    block's tiles instead of once per tile; a window outside the box is read from ``image``.
    """

    def __init__(self, image, box: tuple[slice, slice, slice]) -> None:
        self.image, self.shape = image, tuple(image.shape)
        self.origin = tuple(s.start for s in box)
        self.data = np.asarray(image[(slice(None), *box)])

    def __getitem__(self, key) -> np.ndarray:
        channels, *spans = key
        local = []
        for span, origin, size in zip(spans, self.origin, self.data.shape[1:], strict=True):
            start, stop = span.start - origin, span.stop - origin
            if span.step not in (None, 1) or start < 0 or stop > size:
                return self.image[key]
            local.append(slice(start, stop))
        return self.data[(channels, *local)]


class _Normalised:
    """A (C, Z, Y, X) array-like whose windows come normalised with whole-volume statistics."""

    def __init__(self, source, recipe) -> None:
        self.source = source
        self.shape = tuple(source.shape)
        self.transforms = [streamed_normalizer(recipe, source, c) for c in range(self.shape[0])]

    def __getitem__(self, key) -> np.ndarray:
        channels, *rest = key
        picked = range(self.shape[0])[channels]
        picked = [picked] if isinstance(picked, int) else picked
        return normalised_channels(self.source, picked, rest, self.transforms)


def predict_file_to_zarr(
    model: torch.nn.Module,
    source: Path,
    output: Path,
    cfg: PredictConfig,
    device: torch.device,
    world=None,
    progress: Callable[[str, int, int], None] | None = None,
    notes: Callable[[str, str], None] | None = None,
    restart: bool = False,
    time_point: int = 0,
) -> Path:
    """One image (OME-Zarr at ``cfg.level``, zarr array or TIFF, read lazily; one time point)
    predicted block by block into an OME-Zarr with the image's voxel size."""
    image, voxel = open_lazy(source, cfg.level)
    label = source.name + (f" T={time_point}" if cfg.mode.timelapse else "")
    with image:
        predict_lazy_to_zarr(
            model,
            image.at_time(time_point),
            output,
            cfg,
            device,
            voxel_size=voxel,
            world=world,
            progress=functools.partial(progress, label) if progress else None,
            note=functools.partial(notes, label) if notes else None,
            name=str(source),
            restart=restart,
        )
    return output


def predict_lazy_to_zarr(
    model: torch.nn.Module,
    image,
    output: str | Path,
    cfg: PredictConfig,
    device: torch.device,
    *,
    voxel_size: Sequence[float] | None = None,
    world: World | None = None,
    progress: Callable[[float, int], None] | None = None,
    note: Callable[[str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    name: str = "the image",
    restart: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[int, int, int]]:
    """A lazy (C, Z, Y, X) image (zarr, dask, memory map) into ``output``, block by block.

    Its ``InputCh`` channels are read; with ``size_in: auto`` the tile is chosen for the memory
    left beside one block (``note`` tells it). Returns the blocks this rank wrote
    (:func:`predict_to_zarr`); ``progress`` is called with (blocks done, blocks to do).
    ``warn`` (else ``note``, as "warning: ...") is told when the image's intensities lie outside
    the model's training band.
    """
    if image.shape[0] < max(cfg.InputCh) + 1:
        raise ImageReadError(
            f"{name}: InputCh {cfg.InputCh} asks for more channels than {image.shape[0]}"
        )
    size_in, size_out = cfg.size_in, cfg.size_out
    if cfg.size_in == "auto":
        block_bytes = 3 * 4 * math.prod(BLOCK) * (cfg.nchannel + len(cfg.OutputCh) // 2)
        choice = choose_tile(
            cfg.model.name,
            image.shape[1:],
            memory_budget(device) - block_bytes,
            zoom_ratio=cfg.model.zoom_ratio,
            nchannel=cfg.nchannel,
            batch_size=cfg.batch_size,
        )
        size_in, size_out = choice.size_in, choice.size_out
        if note is not None:
            note(str(choice))
    channels = [c % image.shape[0] for c in cfg.InputCh]
    source = image if channels == list(range(image.shape[0])) else _Channels(image, channels)
    written = predict_to_zarr(
        model,
        source,
        output,
        cfg,
        size_in,
        size_out,
        device=device,
        world=world,
        voxel_size=voxel_size,
        progress=progress,
        should_cancel=should_cancel,
        restart=restart,
        warn=warn or ((lambda line: note(f"warning: {line}")) if note is not None else None),
    )
    if note is not None and world is not None and world.distributed:
        note(f"rank {world.rank}/{world.size} wrote blocks {sorted(written)}")
    elif note is not None and not written:
        note(f"{output}: already complete, nothing to do (--overwrite starts again)")
    return written


class _Channels:
    """The InputCh channels of a lazy (C, Z, Y, X) image, still lazy."""

    def __init__(self, image, channels: list[int]) -> None:
        self.image, self.channels = image, [c % image.shape[0] for c in channels]
        self.shape = (len(self.channels), *image.shape[1:])

    def __getitem__(self, key):
        channels, *rest = key
        picked = (
            self.channels[channels] if isinstance(channels, slice) else [self.channels[channels]]
        )
        return np.stack([self.image[(c, *rest)] for c in picked])
