"""Prediction driven by a PredictConfig: files or folders in, OME-TIFF segmentations out."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import PredictConfig, set_field
from ..distributed import rank_device, world_from_env
from ..normalization import normalize
from .images import ImageReadError, read_microscopy
from .outputs import check_outputs, is_result_file, output_paths, write_results
from .predict import postprocess, predict_volume, resize

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
    return config_from_network(ckpt.load_checkpoint(checkpoint).network(), checkpoint)


def _get(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def load_model(cfg: PredictConfig, device: torch.device) -> torch.nn.Module:
    """The model of ``cfg.model_path`` with the config's model settings (strict), eval mode."""
    model, _ = ckpt.model_from_checkpoint(cfg.model_path, device, network=cfg)
    return model


def input_files(cfg: PredictConfig) -> list[Path]:
    """The images a config asks to segment (file mode: one; folder mode: all of DataType).

    In folder mode, files that are results of this tool (``*_struct_segmentation.tiff``, ...)
    are left out: a second run never segments the first run's results.
    """
    if not cfg.mode.is_folder:
        return [Path(cfg.mode.InputFile).expanduser()]
    folder = Path(cfg.mode.InputDir).expanduser()
    if not folder.is_dir():
        raise ImageReadError(f"mode.InputDir: folder {str(folder)!r} does not exist")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith(cfg.mode.DataType) and not is_result_file(p)
    )
    if not files:
        raise ImageReadError(f"mode.InputDir: no {cfg.mode.DataType} files in {str(folder)!r}")
    return files


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
    planes: tuple[int, int] | None = None,
) -> np.ndarray:
    """Normalise, resize, predict and post-process one (C, Z, Y, X) image: (n_pairs, Z, Y, X).

    ``planes`` (start, stop) limits the output to those z planes: the image is normalised whole
    (the recipes' statistics are the volume's), then only the tiles covering those planes are
    predicted, the planes around them serving as z context. It needs ``ResizeRatio`` 1 in z (a
    resized z axis has no plane-for-plane correspondence).
    """
    image = normalize(image, cfg.Normalization)
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


def run_prediction(
    cfg: PredictConfig,
    progress: Callable[[str, int, int], None] | None = None,
    files: list[Path] | None = None,
    model: torch.nn.Module | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Segment every input of ``cfg``; return the paths written.

    Every output path is checked before the first tile is computed (:mod:`.outputs`). Under
    torchrun (WORLD_SIZE > 1) each process segments its own share of the files, on its own GPU
    when there are several; no process group is needed.
    """
    world = world_from_env()
    device = rank_device(cfg.device, world)
    sources = files if files is not None else input_files(cfg)
    planned = {s: _planned_outputs(cfg, s) for s in sources}
    check_outputs(cfg, sources, planned, overwrite)
    model = load_model(cfg, device) if model is None else model.to(device).eval()
    written: list[Path] = []
    for source in world.mine(sources):
        image = read_microscopy(source)
        for t, volume in enumerate(image.data):
            label = f"{source.name}" + (f" T={t}" if cfg.mode.timelapse else "")
            report = functools.partial(progress, label) if progress else None
            result = segment(
                model, select_channels(volume, cfg.InputCh, source), cfg, device, report
            )
            paths = output_paths(cfg, source, t if cfg.mode.timelapse else None)
            written += write_results(paths, result, image.voxel_size)
    return written


def _planned_outputs(cfg: PredictConfig, source: Path) -> list[Path]:
    """The files one input will write (all time points of a time-lapse)."""
    count = read_microscopy(source, header_only=True).shape[0]
    if not cfg.mode.timelapse:
        if count > 1:
            raise ImageReadError(
                f"{source}: has {count} time points; set mode.timelapse: true to segment each"
            )
        return output_paths(cfg, source)
    return [p for t in range(count) for p in output_paths(cfg, source, t)]
