"""Cross-field rules of the configs and the folders a run will touch.

Types and bounds are checked field by field when a config is read (``fields.from_dict``); the
rules here need several fields at once, or the file system.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..models import geometry
from ..normalization import RECIPES
from .fields import Problem
from .network import NetworkFields
from .predict import PredictConfig
from .starters import is_starter
from .train import TrainConfig

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


def problems_of(cfg: NetworkFields) -> list[Problem]:
    """The cross-field problems of any config: training, prediction, or network settings alone."""
    if isinstance(cfg, TrainConfig):
        return validate(cfg)
    if isinstance(cfg, PredictConfig):
        return validate_predict(cfg)
    return _geometry_problems(cfg)


def validate(cfg: TrainConfig) -> list[Problem]:
    """Cross-field problems of a training config."""
    problems = _geometry_problems(cfg) + _device_problems(cfg.device)
    if not cfg.checkpoint_dir.strip():
        problems.append(Problem("checkpoint_dir", "is required: where should checkpoints go?"))
    if not cfg.loader.datafolder.strip():
        problems.append(Problem("loader.datafolder", "is required: the folder of training data"))
    if cfg.loss.ignore_index is not None and cfg.loss.ignore_index < max(cfg.nclass):
        # Labels equal to ignore_index must not be real classes of any output.
        problems.append(
            Problem(
                "loss.ignore_index",
                f"{cfg.loss.ignore_index} is a real class (nclass {cfg.nclass}); "
                f"use a value >= {max(cfg.nclass)} or null",
            )
        )
    if cfg.validation.metric is not None:
        problems += _output_pair_problems("validation.OutputCh", cfg.validation.OutputCh, cfg)
        problems += _leaveout_problems(cfg.validation.leaveout)
    if cfg.early_stop is not None and not cfg.holdout:
        problems.append(Problem("early_stop", "needs holdout > 0: it watches the held-out IoU"))
    if cfg.acquisition_augmentation and cfg.normalization is None:
        problems.append(
            Problem(
                "acquisition_augmentation",
                "needs normalization (e.g. 22): each changed image is normalised again",
            )
        )
    if cfg.acquisition_per_patch and not cfg.acquisition_augmentation:
        problems.append(Problem("acquisition_per_patch", "needs acquisition_augmentation: true"))
    if cfg.keep_best and not cfg.holdout:
        problems.append(Problem("keep_best", "needs holdout > 0: it keeps the best held-out IoU"))
    if cfg.resume and cfg.finetune_from:
        problems.append(
            Problem("finetune_from", "set resume (continue a run) or finetune_from, not both")
        )
    if cfg.normalization is not None and cfg.normalization not in RECIPES:
        problems.append(
            Problem(
                "normalization",
                f"unknown recipe {cfg.normalization}; valid ids: {', '.join(map(str, RECIPES))}",
            )
        )
    return problems


def validate_predict(cfg: PredictConfig) -> list[Problem]:
    """Cross-field problems of a prediction config."""
    problems = _geometry_problems(cfg) + _output_pair_problems("OutputCh", cfg.OutputCh, cfg)
    if not cfg.model_path.strip():
        problems.append(Problem("model_path", "is required: the checkpoint to predict with"))
    if not cfg.OutputDir.strip():
        problems.append(Problem("OutputDir", "is required: where to write the results"))
    if any(r <= 0 for r in cfg.ResizeRatio):
        problems.append(Problem("ResizeRatio", f"factors must be > 0, got {cfg.ResizeRatio}"))
    if len(cfg.InputCh) != cfg.nchannel:
        problems.append(
            Problem(
                "InputCh", f"lists {len(cfg.InputCh)} channel(s) but nchannel is {cfg.nchannel}"
            )
        )
    if cfg.mode.is_folder and not cfg.mode.InputDir:
        problems.append(Problem("mode.InputDir", "is required in folder mode"))
    if not cfg.mode.is_folder and not cfg.mode.InputFile:
        problems.append(Problem("mode.InputFile", "is required in file mode"))
    return problems + _device_problems(cfg.device)


def _geometry_problems(cfg: NetworkFields) -> list[Problem]:
    """size_in valid for the model, and size_out the one it gives (both auto, or neither)."""
    name = cfg.model.name
    if cfg.size_in == "auto" or cfg.size_out == "auto":
        if cfg.size_in == cfg.size_out:
            return []
        return [Problem("size_out", "must be auto when size_in is auto (and only then)")]
    try:
        expected = geometry.size_out(name, cfg.size_in, cfg.model.zoom_ratio)
    except geometry.InvalidSizeError as err:
        return [Problem("size_in", str(err))]
    if list(cfg.size_out) == list(expected):
        return []
    zoom = f" (zoom_ratio {cfg.model.zoom_ratio})" if name == "unet_xy_zoom" else ""
    return [
        Problem(
            "size_out",
            f"{list(cfg.size_out)} does not match size_in {list(cfg.size_in)} for {name}{zoom}: "
            f"it must be {list(expected)}",
        )
    ]


def _output_pair_problems(key: str, pairs: list, cfg: NetworkFields) -> list[Problem]:
    if len(pairs) % 2 or not pairs:
        return [Problem(key, f"must list (output index, class channel) pairs, got {pairs}")]
    problems = []
    for out_idx, ch in zip(pairs[::2], pairs[1::2], strict=True):
        if out_idx > 2:
            problems.append(Problem(key, f"output index {out_idx} does not exist (0, 1 or 2)"))
        elif ch >= cfg.nclass[out_idx]:
            problems.append(
                Problem(
                    key,
                    f"class channel {ch} of output {out_idx} does not exist "
                    f"(nclass[{out_idx}] = {cfg.nclass[out_idx]})",
                )
            )
    return problems


def _leaveout_problems(leave: list) -> list[Problem]:
    fraction = len(leave) == 1 and 0 < leave[0] < 1
    if leave and (fraction or all(float(v).is_integer() for v in leave)):
        return []
    return [
        Problem(
            "validation.leaveout",
            f"must be image indices (e.g. [0, 3]) or one fraction in (0, 1), got {leave}",
        )
    ]


def _device_problems(text: str) -> list[Problem]:
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda", "mps") or (head == "cuda" and index.isdigit()):
        return []
    return [Problem("device", f"must be {DEVICE_FORMS}, got {text[:40]!r}")]


def check_paths(cfg: TrainConfig) -> list[Problem]:
    """Problems with the folders and files a training run will touch (call before training)."""
    problems: list[Problem] = []
    data = Path(cfg.loader.datafolder).expanduser()
    if cfg.loader.datafolder and not data.is_dir():
        problems.append(Problem("loader.datafolder", f"folder {str(data)!r} does not exist"))
    if cfg.checkpoint_dir:
        problem = unwritable_dir(Path(cfg.checkpoint_dir).expanduser())
        if problem:
            problems.append(Problem("checkpoint_dir", problem))
    for key in ("resume", "finetune_from"):
        value = getattr(cfg, key)
        if value and not is_starter(value) and not Path(value).expanduser().exists():
            problems.append(Problem(key, f"{value!r} does not exist"))
    return problems


def unwritable_dir(folder: Path) -> str:
    """Why ``folder`` cannot be created or written to, or '' if it can."""
    probe = folder
    try:
        while not probe.exists():
            if probe.is_symlink():
                try:
                    probe.stat()
                except OSError as err:
                    if err.errno == errno.ELOOP:
                        return f"{str(probe)!r} is a symbolic link that loops back on itself"
                return f"{str(probe)!r} is a broken symbolic link (it points to nothing)"
            if probe.parent == probe:
                break
            probe = probe.parent
        probe.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # a symlink loop: ELOOP, or RuntimeError in resolve
        return (
            f"{str(probe)!r} cannot be used as a folder ({getattr(err, 'strerror', None) or err})"
        )
    if probe.exists() and not probe.is_dir():
        return f"{str(probe)!r} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"folder {str(probe)!r} is not writable"
    return ""
