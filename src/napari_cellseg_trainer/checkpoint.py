"""Checkpoint files: atomic saving, and safe loading of every format the established trainer wrote.

Formats read: the established dict (``epoch``, ``num_iterations``, ``model_state_dict``,
``optimizer_state_dict``, ``device``), a bare state dict, and either of those with the
``module.`` prefix DataParallel adds. Files are loaded with ``weights_only=True``: a
checkpoint from a stranger cannot run code.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserInputError

_NAME = re.compile(r"^checkpoint_epoch_(\d+)\.pytorch$")


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
) -> Path:
    """Write a checkpoint in the established format (plus ``config``), atomically.

    The data go to a temporary file in the same folder, are flushed to disk, and only then
    replace ``path``: a crash or a full disk never leaves a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": int(epoch),
        "num_iterations": int(num_iterations),
        "model_state_dict": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer_state_dict": _to_cpu(optimizer_state),
        "device": str(device),
        "config": config,
        "extra": extra or {},
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"could not write {path} ({err.strerror or err}); earlier checkpoint files are untouched"
            ) from err
        raise
    return path


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read any of the three checkpoint formats, refusing files that need code to unpickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
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
            f"code (only plain tensors and numbers are accepted). Detail: {blocked[0]}"
        ) from None
    # A truncated or foreign file surfaces as any of these (KeyError/IndexError: bad opcodes).
    except (RuntimeError, EOFError, OSError, ValueError, LookupError) as err:
        detail = str(err) or type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or not PyTorch?): {detail}"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(data).__name__})")
    if "model_state_dict" in data:
        return Checkpoint(
            model_state=_strip_module(data["model_state_dict"]),
            optimizer_state=data.get("optimizer_state_dict"),
            epoch=data.get("epoch"),
            num_iterations=data.get("num_iterations"),
            config=data.get("config"),
            extra=data.get("extra") or {},
            path=path,
        )
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return Checkpoint(model_state=_strip_module(data), path=path)
    raise CheckpointError(f"{path}: holds neither a model_state_dict nor a state dict")


def _strip_module(state: dict) -> dict:
    """Drop the ``module.`` prefix that DataParallel/DistributedDataParallel adds."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_model_weights(
    model: torch.nn.Module, checkpoint: Checkpoint | dict, strict: bool = True
) -> None:
    """Load weights into ``model``; a mismatch gives a readable summary instead of a traceback."""
    state = (
        checkpoint.model_state if isinstance(checkpoint, Checkpoint) else _strip_module(checkpoint)
    )
    where = f"{checkpoint.path}: " if isinstance(checkpoint, Checkpoint) and checkpoint.path else ""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if ((missing or unexpected) and strict) or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:2])}")
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(
            f"{where}checkpoint does not match the model ({name}, nclass/nchannel/zoom_ratio as "
            f"configured): {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=strict)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The ``checkpoint_epoch_<N>.pytorch`` with the largest N in ``folder`` (temp files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None
