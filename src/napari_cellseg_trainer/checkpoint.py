"""Checkpoint files: naming, atomic saving, safe loading, and the model a checkpoint rebuilds.

Formats read: the established dict (``epoch``, ``num_iterations``, ``model_state_dict``,
``optimizer_state_dict``, ``device``), a bare state dict, and either of those with the
``module.`` prefix DataParallel adds. Files are loaded with ``weights_only=True``: a checkpoint
from a stranger cannot run code. Everything read from a file is checked before it is used (a
state dict of tensors, whole numbers for the counters, a config that passes the schema), so a
damaged or crafted file gives one clear message, never a traceback.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import config as config_mod
from .config.fields import from_dict
from .data.intensity import IntensityBand
from .errors import UserInputError
from .files import FileWriteError, write_atomically
from .models import build_model

# checkpoint_epoch_<epochs done>.pytorch, or ..._iter_<iterations done>.pytorch for a run
# stopped inside the next epoch: a stop never overwrites the clean checkpoint of an epoch.
_NAME = re.compile(r"^checkpoint_epoch_(\d+)(?:_iter_(\d+))?\.pytorch$")
# keep_best: the weights of the best held-out IoU so far; never taken for a resume
BEST_NAME = "checkpoint_best.pytorch"
# The fields that fix a network's weights, and with its patch sizes those a checkpoint's own
# config supplies to predict with it.
ARCHITECTURE_KEYS = ("model.name", "model.zoom_ratio", "nchannel", "nclass")
MODEL_KEYS = (*ARCHITECTURE_KEYS, "size_in", "size_out")


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be written or used; the message says which and why."""


@dataclass(frozen=True)
class Checkpoint:
    model_state: dict
    optimizer_state: dict | None = None
    epoch: int | None = None
    num_iterations: int | None = None
    config: dict | None = None
    extra: dict = field(default_factory=dict)
    path: Path | None = None
    name: str | None = None  # what the user called it, when not a path (``starter:nuclei``)

    @property
    def where(self) -> str:
        return self.name or (str(self.path) if self.path else "checkpoint")

    def network(self) -> config_mod.NetworkFields:
        """The network settings of the embedded config, read through the schema."""
        if not self.config:
            raise CheckpointError(
                f"{self.where}: carries no config (a checkpoint of the established trainer?); "
                "give the model settings (model.name, nclass, size_in, ...) with a config"
            )
        if not isinstance(self.config.get("model"), dict):
            raise CheckpointError(f"{self.where}: its embedded config has no model section")
        subset = {k: v for k, v in self.config.items() if k in _NETWORK_TOP_KEYS}
        try:
            return config_mod.from_mapping(config_mod.NetworkFields, subset, self.where)
        except config_mod.ConfigError as err:
            problems = "; ".join(str(p) for p in err.problems)
            raise CheckpointError(
                f"{self.where}: its embedded config is unusable: {problems}"
            ) from None

    def train_config(self) -> config_mod.TrainConfig | None:
        """The embedded training config as far as it reads (unknown or bad keys dropped)."""
        if not self.config:
            return None
        problems: list = []
        return from_dict(config_mod.TrainConfig, self.config, problems)


_NETWORK_TOP_KEYS = {"model", "nchannel", "nclass", "size_in", "size_out"}


# --------------------------------------------------------------------------- names


def checkpoint_path(folder: str | Path, epoch: int, iteration: int | None = None) -> Path:
    """``checkpoint_epoch_<epoch>.pytorch``; with ``iteration``, a run stopped inside an epoch."""
    tail = f"_iter_{iteration}" if iteration is not None else ""
    return Path(folder).expanduser() / f"checkpoint_epoch_{epoch}{tail}.pytorch"


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder``: the most epochs, then the most iterations.

    A stopped run's ``checkpoint_epoch_3_iter_50`` (inside epoch 4) is newer than
    ``checkpoint_epoch_3`` and older than ``checkpoint_epoch_4``. Temporary files are ignored.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            epochs, iterations = int(match.group(1)), int(match.group(2) or 0)
            found.append(((epochs, iterations), path))
    return max(found)[1] if found else None


def resolve_resume(resume: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest checkpoint in a folder."""
    path = Path(resume).expanduser()
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"resume: no checkpoint_epoch_<N>.pytorch in {str(path)!r}")
        return latest
    return path


def holds_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Names of the checkpoint files in ``folder`` (sorted), [] if none or no folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: dict | None,
    epoch: int,
    num_iterations: int,
    device: str,
    config: dict | None = None,
    extra: dict | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a checkpoint in the established format (plus ``config`` and ``extra``), atomically.

    A crash, a kill or a full disk never leaves a truncated checkpoint: either the old file or
    the new one. CheckpointError names the file and the reason when it cannot be written.
    """
    path = Path(path)
    payload = {
        "epoch": int(epoch),
        "num_iterations": int(num_iterations),
        "model_state_dict": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer_state_dict": _to_cpu(optimizer_state),
        "device": str(device),
        "config": config,
        "extra": extra or {},
    }
    try:
        return write_atomically(path, lambda fh: _torch_save(payload, fh), overwrite=overwrite)
    except FileWriteError as err:
        raise CheckpointError(f"{err}; earlier checkpoint files are untouched") from err


def _torch_save(payload: dict, fh: io.BufferedWriter) -> None:
    try:
        torch.save(payload, fh)
    except RuntimeError as err:  # torch's zip writer reports a failed write (full disk) so
        raise OSError(28, f"writing failed: {str(err).splitlines()[0][:200]}") from err


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


# --------------------------------------------------------------------------- loading


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint file of any of the three formats, refusing files that need code to
    unpickle. (Whatever a user gives as a model, a package or a starter too, opens through
    :func:`..model_source.open_model`.)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    data = _torch_load(path, map_location)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(data).__name__})")
    if "model_state_dict" not in data:
        return Checkpoint(model_state=state_dict_of(data, path), path=path)
    config = data.get("config")
    if config is not None:
        config_mod.check_plain(config, str(path))
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: its embedded config is not a mapping")
    extra = data.get("extra") or {}
    optimizer = data.get("optimizer_state_dict")
    if optimizer is not None and not isinstance(optimizer, dict):
        raise CheckpointError(f"{path}: optimizer_state_dict is not a mapping")
    return Checkpoint(
        model_state=state_dict_of(data["model_state_dict"], path),
        optimizer_state=optimizer,
        epoch=_count(data, "epoch", path),
        num_iterations=_count(data, "num_iterations", path),
        config=config,
        extra=extra if isinstance(extra, dict) else {},
        path=path,
    )


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the blocked callable on a "GLOBAL" line; other unpickling errors mean a
        # damaged or foreign file, not a dangerous one.
        blocked = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if not blocked:
            raise CheckpointError(
                f"{path}: not a readable checkpoint (truncated or not PyTorch?)"
            ) from None
        raise CheckpointError(
            f"{path}: refused: loading it would need to unpickle Python objects, which could run "
            f"code (only plain tensors and numbers are accepted). Detail: {blocked[0][:200]}"
        ) from None
    # A truncated or foreign file surfaces as any of these (KeyError/IndexError: bad opcodes).
    except (RuntimeError, EOFError, OSError, ValueError, LookupError, MemoryError) as err:
        detail = (str(err) or type(err).__name__).splitlines()[0][:200]
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or not PyTorch?): {detail}"
        ) from None


def state_dict_of(state: Any, path: Path) -> dict:
    """A mapping of text keys to tensors, without the ``module.`` prefix of DataParallel."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds neither a model_state_dict nor a state dict")
    bad = next((k for k, v in state.items() if not isinstance(k, str)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: its state dict has a key that is not text: {bad!r:.40}")
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: its state dict entry {bad[:60]!r} is not a tensor")
    if all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _count(data: dict, key: str, path: Path) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise CheckpointError(f"{path}: {key} must be a whole number >= 0, got {value!r:.40}")
    return value


# --------------------------------------------------------------------------- models


def load_model_weights(
    model: torch.nn.Module, checkpoint: Checkpoint | dict, strict: bool = True
) -> None:
    """Load weights into ``model``; a mismatch gives a readable summary instead of a traceback."""
    state = (
        checkpoint.model_state
        if isinstance(checkpoint, Checkpoint)
        else state_dict_of(checkpoint, Path("state dict"))
    )
    where = (
        f"{checkpoint.where}: "
        if isinstance(checkpoint, Checkpoint) and (checkpoint.path or checkpoint.name)
        else ""
    )
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    if missing and strict:
        parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
    if unexpected and strict:
        parts.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:2])}")
    if parts:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(
            f"{where}checkpoint does not match the model ({name}, nclass/nchannel/zoom_ratio as "
            f"configured): {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=strict)


def build_network(cfg: config_mod.NetworkFields) -> torch.nn.Module:
    """The (fresh) network a config describes."""
    return build_model(cfg.model.name, cfg.nchannel, cfg.nclass, cfg.model.zoom_ratio)


def model_for(
    loaded: Checkpoint, network: config_mod.NetworkFields, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """The network of ``network``'s settings with a read checkpoint's weights, in eval mode.

    Weights that hold NaN or infinite values (a diverged training) are refused here, before
    they turn a whole prediction into NaN. The intensities the model was trained on travel with
    it as ``model.intensity_band`` (an :class:`..data.intensity.IntensityBand`, or None for
    checkpoints that did not record them), so a prediction can warn about a shifted volume.
    """
    model = build_network(network)
    load_model_weights(model, loaded)
    broken = [
        k
        for k, v in loaded.model_state.items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if broken:
        raise CheckpointError(
            f"{loaded.where}: {len(broken)} weight tensor(s) hold NaN or infinite values (e.g. "
            f"{broken[0]}): the training that wrote it diverged; use an earlier checkpoint"
        )
    model.intensity_band = IntensityBand.from_extra(loaded.extra)
    return model.to(device).eval()


def restore_training_state(
    loaded: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, int]:
    """Weights and optimiser state of a checkpoint into a run; (epochs done, iterations done)."""
    load_model_weights(model, loaded)
    if loaded.optimizer_state is not None:
        try:
            optimizer.load_state_dict(loaded.optimizer_state)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as err:
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise CheckpointError(
                f"{loaded.where}: its optimiser state does not fit this model ({detail}); "
                "to start from its weights with a fresh optimiser use finetune_from instead"
            ) from None
    return loaded.epoch or 0, loaded.num_iterations or 0
