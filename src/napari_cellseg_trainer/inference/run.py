"""Prediction driven by a PredictConfig: files or folders in, OME-TIFF segmentations out."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import PredictConfig, set_field
from ..data.images import ImageReadError, read_microscopy, require_zarr
from ..data.intensity import saturation_warnings
from ..devices import release_freed_memory
from ..distributed import rank_device, world_from_env
from ..model_source import model_from_checkpoint, open_model
from ..normalization import RECIPES, normalize
from .inputs import input_files, planned_outputs
from .outputs import OutputError, check_outputs, instance_paths, output_paths, write_results
from .predict import postprocess, predict_volume, resize
from .tile_choice import TileChoice, TileChoiceError, choose_tile, memory_budget

Progress = Callable[[int, int], None]


def config_from_network(network, model_path: str | Path = "") -> PredictConfig:
    """A prediction config with the model settings of ``network`` (a checkpoint's, usually)."""
    cfg = PredictConfig(model_path=str(model_path))
    for key in ckpt.MODEL_KEYS:
        set_field(cfg, key, _get(network, key))
    cfg.InputCh = list(range(cfg.nchannel))
    return cfg


def config_from_checkpoint(checkpoint: str | Path) -> PredictConfig:
    """A prediction config whose model settings come from a checkpoint that carries its config."""
    return defaults_from_checkpoint(open_model(checkpoint)).config


@dataclass(frozen=True)
class CheckpointDefaults:
    """What a checkpoint says about predicting with it."""

    config: PredictConfig  # its model settings, its normalisation, size_in auto
    voxel_size: tuple[float, float, float] | None  # of its training images, when recorded
    note: str  # how the normalisation was chosen, in words
    threshold: float | None = None  # the best threshold on the held-out slabs, when measured


def defaults_from_checkpoint(loaded: ckpt.Checkpoint) -> CheckpointDefaults:
    """The prediction settings that match how the model was trained.

    The normalisation is the recipe the training raw went through (recorded since this
    version); for raw used as given (a training folder, normalised by the user) it is min-max,
    which maps such files to [0, 1] again.
    """
    cfg = config_from_network(loaded.network(), loaded.path or "")
    cfg.size_in = cfg.size_out = "auto"
    recipe = loaded.extra.get("normalization")
    if isinstance(recipe, int) and not isinstance(recipe, bool) and recipe in RECIPES:
        cfg.Normalization = recipe
        note = f"normalisation as in training: recipe {recipe} ({RECIPES[recipe][0]})"
    else:
        cfg.Normalization = 0
        note = "the training raw was used as given: predicting with min-max to [0, 1] (recipe 0)"
    voxel = loaded.extra.get("voxel_size")
    if not (isinstance(voxel, list | tuple) and len(voxel) == 3):
        voxel = None
    threshold = loaded.extra.get("threshold")
    threshold = float(threshold) if isinstance(threshold, float) and 0 < threshold < 1 else None
    voxel = tuple(float(v) for v in voxel) if voxel else None
    return CheckpointDefaults(cfg, voxel, note, threshold)


def resize_for(image_voxel, model_voxel, tolerance: float = 0.1) -> list[float] | None:
    """ResizeRatio that brings an image to the model's voxel size, or None when they agree."""
    if image_voxel is None or model_voxel is None:
        return None
    ratio = [float(i) / float(m) for i, m in zip(image_voxel, model_voxel, strict=True)]
    if all(abs(r - 1) <= tolerance for r in ratio):
        return None
    return [round(r, 3) for r in ratio]


def _get(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def load_model(cfg: PredictConfig, device: torch.device) -> torch.nn.Module:
    """The model of ``cfg.model_path`` with the config's model settings (strict), eval mode."""
    model, _ = model_from_checkpoint(cfg.model_path, device, network=cfg)
    return model


def select_channels(image: np.ndarray, channels: list[int], source: str | Path) -> np.ndarray:
    """(C, Z, Y, X) float32 of the listed channels; -1 is the last one."""
    count = image.shape[0]
    bad = [c for c in channels if not -count <= c < count]
    if bad:
        raise ImageReadError(
            f"{source}: InputCh {channels} asks for channel {bad[0]}, but the image has {count}"
        )
    return np.stack([image[c] for c in channels]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Callbacks:
    """What a prediction reports while it runs, and how it is cancelled.

    progress : (tiles done, tiles in all), fractions included, as work finishes.
    should_cancel : checked between batches; True raises PredictionCancelled.
    note : one line about a choice made on the way (the tile chosen, a retry).
    warn : one line about a doubt on the result (a volume unlike the training data, or
        saturated).
    """

    progress: Progress | None = None
    should_cancel: Callable[[], bool] | None = None
    note: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None


def segment(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: PredictConfig,
    device: torch.device,
    callbacks: Callbacks | None = None,
    planes: tuple[int, int] | None = None,
) -> np.ndarray:
    """Normalise, resize, predict and post-process one (C, Z, Y, X) image: (n_pairs, Z, Y, X).

    ``planes`` (start, stop) limits the output to those z planes: the image is normalised whole
    (the recipes' statistics are the volume's), then only the tiles covering those planes are
    predicted, the planes around them serving as z context. It needs ``ResizeRatio`` 1 in z (a
    resized z axis has no plane-for-plane correspondence). With ``size_in: auto`` the tile is
    chosen for what is predicted (:func:`choose_tile_for`), and halved when it runs out of
    memory.
    """
    callbacks = callbacks or Callbacks()
    bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if bad:
        raise ImageReadError(
            f"the image holds {bad} NaN or infinite value(s): they would spread through the "
            "normalisation and the network; replace them first"
        )
    if callbacks.warn is not None:
        for line in saturation_warnings(image):
            callbacks.warn(line)
    image = normalize(image, cfg.Normalization)
    warn_if_shifted(model, image, cfg, callbacks)
    ratio = tuple(cfg.ResizeRatio)
    resized = any(r != 1 for r in ratio)
    if planes is not None and ratio[0] != 1:
        raise ValueError(
            "a preview of some planes needs ResizeRatio 1 in z; predict the whole volume"
        )
    if resized:
        shape = image.shape[1:]
        if planes is not None:
            shape = (planes[1] - planes[0], *shape[1:])
        image = np.stack([resize(ch, ratio, order=1) for ch in image])
    prob = _predict_with_retries(model, image, cfg, device, callbacks, planes)
    if not np.isfinite(prob).all():
        raise ImageReadError("the model's output holds NaN values (its weights are broken?)")
    if resized:
        prob = np.stack([resize(p, ratio, order=1, target_shape=shape) for p in prob])
    minmax = cfg.tiling == "established"  # the established tool rescales each output to [0, 1]
    return np.stack([postprocess(p, threshold=cfg.Threshold, minmax=minmax) for p in prob])


def warn_if_shifted(
    model: torch.nn.Module, normalized: np.ndarray, cfg: PredictConfig, callbacks: Callbacks
) -> str | None:
    """Say (``callbacks.warn``) when the normalised volume lies outside the intensities the
    model was trained on (its checkpoint's band); the line, or None."""
    band = getattr(model, "intensity_band", None)
    line = band.shift(normalized, cfg.Normalization) if band is not None else None
    if line and callbacks.warn is not None:
        callbacks.warn(line)
    return line


def choose_tile_for(
    cfg: PredictConfig,
    shape: tuple[int, ...],
    device: torch.device,
    planes: tuple[int, int] | None = None,
    max_voxels: int | None = None,
) -> TileChoice:
    """The automatic tile for a (Z, Y, X) volume (or some of its planes) on ``device``.

    The budget is the device's (:func:`.tile_choice.memory_budget`) less, on a CPU, the
    prediction's own arrays (about 3 x the volume and its output, in float32).
    """
    region = (planes[1] - planes[0], *shape[1:]) if planes is not None else tuple(shape)
    budget = memory_budget(device)
    if device.type != "cuda":
        budget -= 3 * 4 * math.prod(shape) * (cfg.nchannel + len(cfg.OutputCh) // 2)
    return choose_tile(
        cfg.model.name,
        region,
        budget,
        zoom_ratio=cfg.model.zoom_ratio,
        nchannel=cfg.nchannel,
        tiling=cfg.tiling,
        overlap=cfg.overlap,
        batch_size=cfg.batch_size,
        max_voxels=max_voxels,
    )


def _predict_with_retries(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: PredictConfig,
    device: torch.device,
    callbacks: Callbacks,
    planes: tuple[int, int] | None,
) -> np.ndarray:
    """predict_volume with the config's tile, or the automatic one (halved on out of memory)."""
    choice = None
    size_in, size_out, batch = cfg.size_in, cfg.size_out, cfg.batch_size
    if cfg.size_in == "auto":
        choice = choose_tile_for(cfg, image.shape[1:], device, planes)
        if callbacks.note is not None:
            callbacks.note(str(choice))
    while True:
        if choice is not None:
            size_in, size_out, batch = choice.size_in, choice.size_out, choice.batch_size
        try:
            return predict_volume(
                model,
                image,
                size_in,
                size_out,
                output_pairs=tuple(zip(cfg.OutputCh[::2], cfg.OutputCh[1::2], strict=True)),
                tiling=cfg.tiling,
                overlap=cfg.overlap,
                batch_size=batch,
                runtime_aug=cfg.RuntimeAug,
                device=device,
                progress=callbacks.progress,
                should_cancel=callbacks.should_cancel,
                planes=planes,
                precision=cfg.precision,
                note=callbacks.note,
            )
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if not _out_of_memory(err) or choice is None:
                raise
            half = math.prod(choice.size_in) // 2
            try:
                smaller = choose_tile_for(cfg, image.shape[1:], device, planes, half)
            except TileChoiceError:
                raise err from None  # already the smallest tile: the memory is not there
            if callbacks.note is not None:
                callbacks.note(f"out of memory with tile {list(size_in)}; retrying with {smaller}")
            choice = smaller
            release_freed_memory()


def _out_of_memory(err: BaseException) -> bool:
    """A failed allocation (CUDA, the CPU allocator or numpy), not another runtime error."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return "can't allocate memory" in text or "not enough memory" in text


PREVIEW_PLANES = 5  # with size_in auto: the plane in view and two on either side


def plane_window(depth: int, center: int, cfg: PredictConfig) -> tuple[int, int]:
    """The output planes a quick preview computes around plane ``center``.

    One tile's depth with an explicit tile; with ``size_in: auto`` a few planes, for which the
    cheapest tile is then chosen: one layer of tiles, a few slices thick.
    """
    planes = min(depth, PREVIEW_PLANES if cfg.size_in == "auto" else cfg.size_out[0])
    start = min(max(0, center - planes // 2), depth - planes)
    return start, start + planes


def run_prediction(
    cfg: PredictConfig,
    progress: Callable[[str, int, int], None] | None = None,
    files: list[Path] | None = None,
    model: torch.nn.Module | None = None,
    overwrite: bool = False,
    notes: Callable[[str, str], None] | None = None,
    instances=None,
) -> list[Path]:
    """Segment every input of ``cfg``; return the paths written.

    ``instances`` (:class:`..evaluation.instances.InstanceParams`) also writes instance labels,
    ``<stem>_instances.tiff`` beside each result, with the image's voxel size as spacing; for
    OME-Zarr results (connected components only) into the store's ``labels/instances``.

    ``progress`` is called with (image label, tiles done, tiles in all), ``notes`` with (image
    label, a line about a choice made, e.g. the automatic tile).

    Every output path is checked before the first tile is computed (:mod:`.outputs`). Under
    torchrun (WORLD_SIZE > 1) each process segments its own share of the files, on its own GPU
    when there are several; no process group is needed.
    """
    world = world_from_env()
    device = rank_device(cfg.device, world)
    sources = files if files is not None else input_files(cfg)
    zarr_out = cfg.output_format == "ome-zarr"
    if zarr_out:
        require_zarr()  # before any work: one line saying how to install it
        if instances is not None:
            _check_zarr_instances(instances, world)
    # instance labels go beside TIFF results, inside an OME-Zarr result (its labels/)
    planned = {s: planned_outputs(cfg, s, instances is not None and not zarr_out) for s in sources}
    # an OME-Zarr is resumed, not replaced: its blocks already written are skipped
    check_outputs(cfg, sources, planned, overwrite or zarr_out)
    model = load_model(cfg, device) if model is None else model.to(device).eval()
    if zarr_out:
        return _predict_to_stores(
            cfg, model, device, world, planned, progress, notes, overwrite, instances
        )
    written: list[Path] = []
    for source in world.mine(sources):
        image = read_microscopy(source, level=cfg.level)
        for t, volume in enumerate(image.data):
            label = f"{source.name}" + (f" T={t}" if cfg.mode.timelapse else "")
            callbacks = Callbacks(
                progress=functools.partial(progress, label) if progress else None,
                note=functools.partial(notes, label) if notes else None,
                warn=(lambda line, label=label: notes(label, f"warning: {line}"))
                if notes
                else None,
            )
            result = segment(
                model, select_channels(volume, cfg.InputCh, source), cfg, device, callbacks
            )
            paths = output_paths(cfg, source, t if cfg.mode.timelapse else None)
            written += write_results(paths, result, image.voxel_size)
            if instances is not None:
                labels = [_instances(r, instances, image.voxel_size) for r in result]
                written += write_results(instance_paths(paths), labels, image.voxel_size)
    return written


def _check_zarr_instances(params, world) -> None:
    """Instances of an OME-Zarr result are labelled block by block once it is finished: by
    connected components only, and by one process (the store must be complete)."""
    from .zarr_labels import refuse_whole_volume_method

    refuse_whole_volume_method(params)
    if world.distributed:
        raise OutputError(
            "instances: labelling needs the finished store, which several ranks share; run the "
            "same command in one process (the finished blocks are kept, then labelled)"
        )


def _predict_to_stores(cfg, model, device, world, planned, progress, notes, restart, instances):
    """Each input (each of its time points) into its OME-Zarr, then its labels when asked."""
    from .chunked import predict_file_to_zarr
    from .zarr_labels import label_store

    written = []
    for source, outputs in planned.items():
        for t, output in enumerate(outputs):
            predict_file_to_zarr(
                model, source, output, cfg, device, world, progress, notes, restart, t
            )
            written.append(output)
            if instances is not None:
                label = f"{output.name} instances"
                done = functools.partial(progress, label) if progress else None
                written += label_store(output, instances, done)
    return written


def _instances(result: np.ndarray, params, voxel_size) -> np.ndarray:
    """Instance labels of one result: probabilities, or a 0/255 mask (Threshold > 0)."""
    from dataclasses import replace

    from ..evaluation.instances import label_instances

    probability = result / 255.0 if result.dtype == np.uint8 else result
    if voxel_size is not None:
        params = replace(params, spacing=tuple(voxel_size))
    return label_instances(probability.astype(np.float32, copy=False), params)
