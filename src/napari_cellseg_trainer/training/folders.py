"""Where a training run writes, so that two runs never mix and nothing is overwritten.

The rules:
- A fresh run (no ``resume``) writes into ``checkpoint_dir`` only if that folder holds no other
  run (no checkpoint, no ``metrics.csv``); otherwise it is refused before any work, with the
  ways out named: ``resume`` to continue that run, another folder, or ``run_subfolder``.
- With ``run_subfolder: true`` every run gets a new folder inside ``checkpoint_dir``, named by
  the time it started (the panel's presets work this way).
- A resumed run continues in the folder of the checkpoint it resumes when that folder lies in
  ``checkpoint_dir``; a stop inside an epoch is saved under its own name (checkpoint.py).
- The folder must have room for a few checkpoints before the run starts.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Problem, TrainConfig
from ..models.memory import parameter_count
from .metrics import CSV_NAME, PNG_NAME

RUN_PREFIX = "run-"
_CHECKPOINTS_OF_ROOM = 3  # free space asked for: this many checkpoints


def run_files(folder: Path) -> list[str]:
    """The files of a training run in ``folder`` (checkpoints, metrics), sorted."""
    if not folder.is_dir():
        return []
    names = ckpt.holds_checkpoints(folder)
    return names + [n for n in (CSV_NAME, PNG_NAME) if (folder / n).exists()]


def latest_run_checkpoint(folder: str | Path) -> Path | None:
    """The newest checkpoint in ``folder``, or in its newest run subfolder."""
    folder = Path(folder).expanduser()
    found = ckpt.latest_checkpoint(folder)
    if found is not None:
        return found
    runs = sorted(p for p in folder.glob(f"{RUN_PREFIX}*") if p.is_dir()) if folder.is_dir() else []
    for run in reversed(runs):
        found = ckpt.latest_checkpoint(run)
        if found is not None:
            return found
    return None


def resumed_checkpoint(cfg: TrainConfig) -> Path | None:
    """The checkpoint ``resume`` names (a file, or a folder's newest, run subfolders included)."""
    if not cfg.resume:
        return None
    path = Path(cfg.resume).expanduser()
    if path.is_dir():
        found = latest_run_checkpoint(path)
        if found is None:
            raise ckpt.CheckpointError(
                f"resume: no checkpoint_epoch_<N>.pytorch in {str(path)!r} or its run folders"
            )
        return found
    return path


def run_folder_problems(cfg: TrainConfig) -> list[Problem]:
    """Why the run of ``cfg`` may not write where it would (call before training)."""
    root = Path(cfg.checkpoint_dir).expanduser()
    try:
        resumed = resumed_checkpoint(cfg)
    except ckpt.CheckpointError as err:
        return [Problem("resume", str(err).removeprefix("resume: "))]
    if cfg.run_subfolder:
        folder = None
    else:
        folder = _continued(root, resumed) or root
    problems = []
    files = run_files(folder) if folder is not None else []
    if files and not (resumed is not None and resumed.parent.resolve() == folder.resolve()):
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        problems.append(
            Problem(
                "checkpoint_dir",
                f"{str(folder)!r} already holds a training run ({shown}): to continue it set "
                f"resume: {folder}; to keep it, choose another checkpoint_dir or set "
                "run_subfolder: true (each run in its own new folder)",
            )
        )
    need = _CHECKPOINTS_OF_ROOM * checkpoint_bytes(cfg)
    free = _free_bytes(root)
    if free is not None and free < need:
        problems.append(
            Problem(
                "checkpoint_dir",
                f"{str(root)!r} has {free / 2**20:.0f} MB free; a run needs about "
                f"{need / 2**20:.0f} MB (room for {_CHECKPOINTS_OF_ROOM} checkpoints)",
            )
        )
    return problems


def output_folder(cfg: TrainConfig, resumed: Path | None) -> Path:
    """The folder this run writes into (created later by the run, on rank 0)."""
    root = Path(cfg.checkpoint_dir).expanduser()
    continued = _continued(root, resumed)
    if continued is not None:
        return continued
    if not cfg.run_subfolder:
        return root
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = root / f"{RUN_PREFIX}{stamp}", 1
    while folder.exists():
        n += 1
        folder = root / f"{RUN_PREFIX}{stamp}-{n}"
    return folder


def checkpoint_bytes(cfg: TrainConfig) -> int:
    """About the size of one checkpoint: weights and Adam's two moments, in float32."""
    return 12 * parameter_count(cfg.model.name, cfg.model.zoom_ratio, cfg.nchannel) + 2**20


def _continued(root: Path, resumed: Path | None) -> Path | None:
    """The resumed checkpoint's folder when it is ``root`` or one of its run folders."""
    if resumed is None:
        return None
    parent = resumed.expanduser().resolve().parent
    root = root.resolve()
    if parent == root or (parent.parent == root and parent.name.startswith(RUN_PREFIX)):
        return parent
    return None


def _free_bytes(folder: Path) -> int | None:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None
