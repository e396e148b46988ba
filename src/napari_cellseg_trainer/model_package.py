"""Model packages (bioimage.io zip files) exported by this plugin, read back as checkpoints.

A package holds the network's state dict (under ``PACKAGE_PREFIX``), the training config it was
made with, and a section of its description (``config: {PACKAGE_KEY: ...}``) with what the
checkpoint recorded (normalisation, voxel size, threshold). Reading needs no bioimageio library;
every file is size-checked before it is read, and YAML goes through the bounded parser.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import config as config_mod
from .checkpoint import Checkpoint, CheckpointError, state_dict_of

PACKAGE_PREFIX = "net."  # the network's keys inside the exported wrapper

PACKAGE_KEY = "napari-cellseg-trainer"  # the bioimage.io config section of our packages
PACKAGE_EXTRA = ("normalization", "voxel_size", "threshold", "intensity")  # checkpoint extras kept
PACKAGE_WEIGHTS = "weights_state_dict.pt"
PACKAGE_CONFIG = "training_config.yaml"
_PACKAGE_LIMIT = 4 * 2**30  # the weights of the largest model are a few hundred MB


def _is_torch_zip(path: Path) -> bool:
    """torch.save writes a zip too: one with a ``data.pkl`` inside."""
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("data.pkl") for n in archive.namelist())


def load_package(path: Path, map_location: Any = None) -> Checkpoint:
    """A bioimage.io package of this plugin as a Checkpoint (no bioimageio library needed)."""
    description, config, weights = _read_package(path)
    ours = (
        (description.get("config") or {}).get(PACKAGE_KEY)
        if isinstance(description, dict)
        else None
    )
    if not isinstance(ours, dict) or not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a model package exported by {PACKAGE_KEY}")
    prefix = str(ours.get("prefix", PACKAGE_PREFIX))
    try:
        state = torch.load(io.BytesIO(weights), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: its weights cannot be read ({str(err)[:120]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its weights are not a state dict")
    state = {k.removeprefix(prefix) if isinstance(k, str) else k: v for k, v in state.items()}
    extra = {k: ours.get(k) for k in PACKAGE_EXTRA if k in ours}
    config_mod.check_plain(config, str(path))
    return Checkpoint(model_state=state_dict_of(state, path), config=config, extra=extra, path=path)


def _read_package(path: Path) -> tuple[Any, Any, bytes]:
    """(the description, the training config, the weights' bytes) of a package, size-checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).name: n for n in archive.namelist()}
            rdf = next((names[n] for n in ("rdf.yaml", "bioimageio.yaml") if n in names), None)
            if rdf is None or PACKAGE_WEIGHTS not in names or PACKAGE_CONFIG not in names:
                raise CheckpointError(f"{path}: not a model package exported by {PACKAGE_KEY}")
            sizes = [archive.getinfo(names[n]).file_size for n in (rdf, PACKAGE_CONFIG)]
            weights_size = archive.getinfo(names[PACKAGE_WEIGHTS]).file_size
            if max(sizes) > 2**20 or weights_size > _PACKAGE_LIMIT:
                raise CheckpointError(f"{path}: refused: its files are far larger than a model's")
            description = config_mod.parse_yaml(archive.read(rdf).decode("utf-8"), str(path))
            config = config_mod.parse_yaml(archive.read(names[PACKAGE_CONFIG]).decode(), str(path))
            return description, config, archive.read(names[PACKAGE_WEIGHTS])
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable model package ({err})") from None


def is_package(path: Path) -> bool:
    """A zip file that is not a torch.save archive (those are zips too)."""
    return zipfile.is_zipfile(path) and not _is_torch_zip(path)
