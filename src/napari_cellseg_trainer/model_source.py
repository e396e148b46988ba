"""Open whatever a user gave as a model: a checkpoint file, a bioimage.io package exported
here, or a starter (``starter:nuclei``). (A folder, for ``resume`` and ``finetune_from``, is
first resolved to its newest checkpoint by :func:`.checkpoint.resolve_resume`.) The one owner of that choice; the
formats live below it (:mod:`.checkpoint`, :mod:`.model_package`, :mod:`.starters`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from . import config as config_mod
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, model_for
from .model_package import is_package, load_package
from .starters import is_starter, load_starter

__all__ = ["CheckpointError", "exists", "model_from_checkpoint", "open_model"]


def open_model(reference: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """The Checkpoint ``reference`` names: ``starter:NAME``, a package ``.zip`` or a file."""
    if is_starter(str(reference)):
        return load_starter(str(reference), map_location)
    path = Path(reference).expanduser()
    if path.is_file() and is_package(path):
        return load_package(path, map_location)
    return load_checkpoint(path, map_location)


def exists(reference: str | os.PathLike) -> bool:
    """Whether ``reference`` names a starter or an existing file or folder."""
    return is_starter(str(reference)) or Path(reference).expanduser().exists()


def model_from_checkpoint(
    reference: str | os.PathLike,
    device: torch.device | str = "cpu",
    network: config_mod.NetworkFields | None = None,
) -> tuple[torch.nn.Module, config_mod.NetworkFields]:
    """The model a checkpoint rebuilds, its weights loaded (strict), in eval mode; one read.

    ``network`` gives the model settings for a checkpoint without an embedded config (the
    established trainer's); otherwise they come from the checkpoint, through the schema.
    """
    loaded = open_model(reference, map_location="cpu")
    settings = network if network is not None else loaded.network()
    return model_for(loaded, settings, device), settings
