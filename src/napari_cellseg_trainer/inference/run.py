"""Prediction driven by a PredictConfig: files or folders in, OME-TIFF segmentations out."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import PredictConfig, TrainConfig
from ..distributed import rank_device, world_from_env
from ..models import build_model
from ..normalization import normalize
from .images import ImageReadError, read_image, write_ome_tiff
from .predict import postprocess, predict_volume, resize

Progress = Callable[[int, int], None]
_STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".czi", ".nd2", ".lif", ".zarr")


def load_model(
    cfg: PredictConfig | TrainConfig, checkpoint: str | Path, device: torch.device
) -> torch.nn.Module:
    """Build the config's model and load the checkpoint's weights (strict); eval mode."""
    model = build_model(cfg.model.name, cfg.nchannel, cfg.nclass, cfg.model.zoom_ratio)
    ckpt.load_model_weights(model, ckpt.load_checkpoint(checkpoint, map_location="cpu"))
    return model.to(device).eval()


def config_from_checkpoint(checkpoint: str | Path) -> PredictConfig:
    """A prediction config whose model settings come from a checkpoint that carries its config."""
    loaded = ckpt.load_checkpoint(checkpoint)
    if not loaded.config:
        raise ckpt.CheckpointError(
            f"{checkpoint}: carries no config (a checkpoint of the established trainer?); "
            "give the model settings with --config"
        )
    cfg = PredictConfig(model_path=str(checkpoint))
    train = loaded.config
    cfg.model.name = train["model"]["name"]
    cfg.model.zoom_ratio = train["model"].get("zoom_ratio", 3)
    for key in ("nchannel", "nclass", "size_in", "size_out"):
        setattr(cfg, key, train[key])
    cfg.InputCh = list(range(cfg.nchannel))
    return cfg


def input_files(cfg: PredictConfig) -> list[Path]:
    """The images a config asks to segment (file mode: one; folder mode: all of DataType)."""
    if not cfg.mode.is_folder:
        return [Path(cfg.mode.InputFile).expanduser()]
    folder = Path(cfg.mode.InputDir).expanduser()
    if not folder.is_dir():
        raise ImageReadError(f"mode.InputDir: folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(cfg.mode.DataType))
    if not files:
        raise ImageReadError(f"mode.InputDir: no {cfg.mode.DataType} files in {str(folder)!r}")
    return files


def output_paths(cfg: PredictConfig, source: Path, time_index: int | None = None) -> list[Path]:
    """``<stem>_struct_segmentation.tiff`` for one output pair, ``<stem>_seg_<i>.tiff`` for several."""
    stem = stem_of(source)
    if time_index is not None:
        stem = f"{stem}_T_{time_index:03d}"
    out = Path(cfg.OutputDir).expanduser()
    pairs = cfg.OutputCh[::2]
    if len(pairs) == 1:
        return [out / f"{stem}_struct_segmentation.tiff"]
    return [out / f"{stem}_seg_{index}.tiff" for index in pairs]


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in _STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def select_channels(image: np.ndarray, channels: list[int], source: str | Path) -> np.ndarray:
    """(C, Z, Y, X) float32 of the listed channels; -1 is the last one."""
    count = image.shape[0]
    bad = [c for c in channels if not -count <= c < count]
    if bad:
        raise ImageReadError(
            f"{source}: InputCh {channels} asks for channel {bad[0]}, but the image has {count}"
        )
    return np.stack([image[c] for c in channels]).astype(np.float32, copy=False)


def segment(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: PredictConfig,
    device: torch.device,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Normalise, resize, predict and post-process one (C, Z, Y, X) image: (n_pairs, Z, Y, X)."""
    normalised = normalize(image, cfg.Normalization)
    return segment_normalised(model, normalised, cfg, device, progress, should_cancel)


def segment_normalised(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: PredictConfig,
    device: torch.device,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    planes: tuple[int, int] | None = None,
) -> np.ndarray:
    """:func:`segment` for an image already normalised by ``cfg.Normalization``.

    ``planes`` (start, stop) limits the output to those z planes (needs ``ResizeRatio`` 1 in z).
    """
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
    pairs = tuple(zip(cfg.OutputCh[::2], cfg.OutputCh[1::2], strict=True))
    prob = predict_volume(
        model,
        image,
        cfg.size_in,
        cfg.size_out,
        output_pairs=pairs,
        tiling=cfg.tiling,
        overlap=cfg.overlap,
        batch_size=cfg.batch_size,
        runtime_aug=cfg.RuntimeAug,
        device=device,
        progress=progress,
        should_cancel=should_cancel,
        planes=planes,
    )
    if resized:
        prob = np.stack([resize(p, ratio, order=1, target_shape=shape) for p in prob])
    minmax = cfg.tiling == "established"  # the established tool rescales each output to [0, 1]
    return np.stack([postprocess(p, threshold=cfg.Threshold, minmax=minmax) for p in prob])


def plane_window(depth: int, center: int, cfg: PredictConfig) -> tuple[int, int]:
    """The output planes a quick preview computes around plane ``center``: one tile's depth."""
    planes = min(depth, cfg.size_out[0])
    start = min(max(0, center - planes // 2), depth - planes)
    return start, start + planes


def segment_planes(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: PredictConfig,
    device: torch.device,
    planes: tuple[int, int],
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Like :func:`segment`, for output planes ``planes`` (start, stop) only: (n_pairs, stop-start, Y, X).

    The image is normalised whole (the recipes' statistics are the volume's), then only the
    tiles covering those planes are predicted (the planes around them serve as z context), so a
    preview costs one layer of tiles. ``ResizeRatio`` must be 1 in z (a resized z axis has no
    plane-for-plane correspondence).
    """
    normalised = normalize(image, cfg.Normalization)
    return segment_normalised(model, normalised, cfg, device, progress, should_cancel, planes)


def run_prediction(
    cfg: PredictConfig,
    progress: Callable[[str, int, int], None] | None = None,
    files: list[Path] | None = None,
) -> list[Path]:
    """Segment every input of ``cfg``; return the paths written.

    Under torchrun (WORLD_SIZE > 1) each process segments its own share of the files, on its
    own GPU when there are several; no process group is needed.
    """
    world = world_from_env()
    device = rank_device(cfg.device, world)
    files = world.mine(files if files is not None else input_files(cfg))
    model = load_model(cfg, cfg.model_path, device)
    written: list[Path] = []
    for source in files:
        stack = read_image(source)
        if stack.shape[0] > 1 and not cfg.mode.timelapse:
            raise ImageReadError(
                f"{source}: has {stack.shape[0]} time points; set mode.timelapse: true to segment each"
            )
        for t, volume in enumerate(stack):
            label = f"{source.name}" + (f" T={t}" if cfg.mode.timelapse else "")
            report = functools.partial(progress, label) if progress else None
            result = segment(
                model, select_channels(volume, cfg.InputCh, source), cfg, device, report
            )
            paths = output_paths(cfg, source, t if cfg.mode.timelapse else None)
            written += [write_ome_tiff(p, r) for p, r in zip(paths, result, strict=True)]
    return written
