"""Starter models shipped with the package: a generalist start that a few minutes adapt.

``starter:nuclei`` (``unet_xy_zoom``, zoom 3) and ``starter:boundaries`` (``unet_xy``) are
pretrained on generated volumes (:mod:`..training.pretrain`). Each is a checkpoint in the
established format (``model_state_dict``, ``epoch``, ``num_iterations``, ...) with the config
it was trained with and, under ``extra``, its normalisation and how it was made. The weights
are stored in half precision to keep the package small and read back as float32.

Wherever a checkpoint file is accepted (``finetune_from``, ``predict --checkpoint``, the
panels), ``starter:NAME`` names one of these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..config import NetworkFields, Problem, TrainConfig
from ..config.starters import STARTER_PREFIX, STARTERS, Starter, fitting_starter, is_starter

__all__ = [
    "STARTERS",
    "STARTER_PREFIX",
    "Starter",
    "card",
    "check_fits",
    "config_problems",
    "export_starter",
    "fitting_starter",
    "is_starter",
    "load_starter",
    "starter",
]

REINSTALL = "pip install --force-reinstall napari-cellseg-trainer"
# The recipes a starter recorded with the key's takes for a fine-tune: the starters were
# pretrained on recipe 21's window with acquisition changes, and record 22 (21 with specks
# removed and the median brought to 0.25, images among those); 24 is 22 with bright stripes
# taken out first (the same images where a volume has none), 25 is 24 with the voxels at the
# volume's maximum kept bright (the same where they are), 26 is 25 where that maximum lies
# well above the window and 24 below; configs written with 21 go on.
TAKES = {22: (22, 24, 25, 26, 21)}


def starter(reference: str) -> Starter:
    """The starter ``starter:NAME`` (or ``NAME``) names; CheckpointError lists them if none."""
    name = reference.removeprefix(STARTER_PREFIX).strip()
    if name not in STARTERS:
        known = ", ".join(s.describe() for s in STARTERS.values())
        raise CheckpointError(f"unknown starter {reference!r}; the starters are {known}")
    return STARTERS[name]


def check_fits(reference: str, network: NetworkFields) -> Starter:
    """The starter, or CheckpointError naming the one that fits ``network`` (or saying none)."""
    chosen = starter(reference)
    if chosen.fits(network):
        return chosen
    other = fitting_starter(network)
    zoom = (
        f" (zoom_ratio {network.model.zoom_ratio})" if network.model.name == "unet_xy_zoom" else ""
    )
    have = (
        f"{network.model.name}{zoom}, {network.nchannel} channel(s), nclass {list(network.nclass)}"
    )
    hint = f"use {other.describe()}" if other else "no starter fits it; train from scratch"
    raise CheckpointError(f"{chosen.describe()} does not fit this config ({have}): {hint}")


def config_problems(cfg: TrainConfig) -> list[Problem]:
    """What is wrong with a config's ``finetune_from: starter:NAME``: an unknown name, a starter
    that does not fit the network, missing or damaged weights, another normalisation."""
    reference = cfg.finetune_from
    if not is_starter(reference):
        return []
    try:
        check_fits(reference, cfg)
        recipe = load_starter(reference).extra.get("normalization")
    except CheckpointError as err:
        return [Problem("finetune_from", str(err))]
    if recipe is not None and cfg.normalization not in TAKES.get(recipe, (recipe,)):
        return [
            Problem(
                "normalization",
                f"{reference} was trained on raw normalised with recipe {recipe}; set "
                f"normalization: {recipe} (it is {cfg.normalization})",
            )
        ]
    return []


def load_starter(reference: str, map_location: Any = "cpu") -> Checkpoint:
    """A starter as a Checkpoint with float32 weights; a missing or damaged file says reinstall."""
    chosen = starter(reference)
    if not chosen.file.is_file():
        raise CheckpointError(
            f"{chosen.describe()}: its weights file {chosen.file} is missing; reinstall the "
            f"package ({REINSTALL})"
        )
    try:
        loaded = load_checkpoint(chosen.file, map_location)
        network = loaded.network()
    except CheckpointError as err:
        raise CheckpointError(
            f"{chosen.describe()}: its weights file is damaged ({str(err)[:160]}); reinstall the "
            f"package ({REINSTALL})"
        ) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in loaded.model_state.items()}
    if not chosen.fits(network) or any(
        v.is_floating_point() and not torch.isfinite(v).all() for v in state.values()
    ):
        raise CheckpointError(
            f"{chosen.describe()}: its weights file is damaged (it does not hold the "
            f"{chosen.model} it should); reinstall the package ({REINSTALL})"
        )
    return replace(loaded, model_state=state, optimizer_state=None, name=chosen.describe())


def card(reference: str) -> dict:
    """How the starter was made (the ``extra.starter`` section of its file)."""
    info = load_starter(reference).extra.get("starter")
    return info if isinstance(info, dict) else {}


def export_starter(
    checkpoint: Checkpoint, name: str, dest: str | Path | None = None, card: Mapping | None = None
) -> Path:
    """Write ``checkpoint``'s weights (half precision) and config as starter ``name``'s file.

    The optimiser state is dropped; ``card`` (how it was made, its figures) goes under
    ``extra.starter``. ``dest`` defaults to the package's own file.
    """
    chosen = starter(name)
    network = checkpoint.network()
    if not chosen.fits(network):
        raise CheckpointError(
            f"{checkpoint.where}: a {network.model.name} cannot be {chosen.describe()}"
        )
    state = {k: v.half() if v.is_floating_point() else v for k, v in checkpoint.model_state.items()}
    small = [k for k, v in checkpoint.model_state.items() if v.is_floating_point()]
    overflow = [k for k in small if not torch.isfinite(state[k]).all()]
    if overflow:
        raise CheckpointError(f"{checkpoint.where}: {overflow[0]} does not fit half precision")
    extra = dict(checkpoint.extra)
    extra["starter"] = {"name": chosen.name, **dict(card or {})}
    return save_checkpoint(
        dest or chosen.file,
        model_state=state,
        optimizer_state=None,
        epoch=checkpoint.epoch or 0,
        num_iterations=checkpoint.num_iterations or 0,
        device="cpu",
        config=checkpoint.config,
        extra=extra,
    )


def size_mb(path: Path) -> float:
    return math.ceil(path.stat().st_size / 1e5) / 10
