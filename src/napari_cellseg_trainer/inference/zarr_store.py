"""The OME-Zarr store of a block-by-block prediction: created once, fingerprinted, resumed.

The image array ``0`` (n_pairs, Z, Y, X) with the voxel size as its scale, and ``done``: one
flag per block, each its own chunk (no write races), 0 or 1 + the writer's rank. The group's
attributes say which weights and settings made the blocks, so a resume never mixes two
predictions.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import PredictConfig
from ..data.images import require_zarr
from ..data.zarr_images import DONE, MADE_BY
from ..distributed import weights_digest
from ..errors import UserInputError


class ChunkedError(UserInputError, ValueError):
    """A prediction that cannot run block by block (a setting that needs the whole volume)."""


def wait_for_store(path: Path, seconds: float = 300.0) -> None:
    """Wait until rank 0 has created the output store (its done flags are made last)."""
    deadline = time.monotonic() + seconds
    while not (path / DONE / "zarr.json").exists():
        if time.monotonic() > deadline:
            raise ChunkedError(f"{path}: rank 0 did not create the output within {seconds:.0f} s")
        time.sleep(0.2)


def fingerprint(model: torch.nn.Module, cfg: PredictConfig, size_in, size_out) -> str:
    """What made a prediction: the weights (buffers too) and the settings that change it."""
    settings = [cfg.Normalization, cfg.Threshold, cfg.tiling, cfg.overlap, cfg.RuntimeAug]
    settings += [list(size_in), list(size_out), list(cfg.InputCh), list(cfg.OutputCh)]
    return weights_digest(model, buffers=True, extra=json.dumps(settings, default=str).encode())


def remove_prediction(path: Path) -> None:
    """Delete an earlier OME-Zarr prediction of this tool (never another folder)."""
    if not path.exists():
        return
    if not (path / DONE / "zarr.json").is_file():
        raise ChunkedError(
            f"{path} is not a prediction of this tool (no {DONE!r} flags): not deleted; choose "
            "another output"
        )
    shutil.rmtree(path)


def open_output(
    path: str | Path,
    shape: tuple[int, ...],
    block: Sequence[int],
    labels: bool,
    voxel_size: Sequence[float] | None,
    made_by: str = "",
):
    """The OME-Zarr image array at ``path`` (created, or reopened to resume) and its done flags."""
    zarr = require_zarr()
    try:
        from ome_zarr.format import CurrentFormat
        from ome_zarr.writer import write_multiscales_metadata
    except ImportError:
        raise ChunkedError(
            "writing OME-Zarr needs ome-zarr: pip install 'napari-cellseg-trainer[zarr]'"
        ) from None

    group = zarr.open_group(str(path), mode="a")
    dtype = np.uint8 if labels else np.float32
    chunks = (1, *block)
    if "0" in group:
        array = group["0"]
        if tuple(array.shape) != shape or array.dtype != dtype:
            raise ChunkedError(
                f"{path} holds a different prediction ({array.shape}, {array.dtype}): choose "
                "another output, or start again with --overwrite"
            )
        if group.attrs.get(MADE_BY) != made_by:
            raise ChunkedError(
                f"{path} was made by other weights or settings: resuming would mix two "
                "predictions; choose another output, or start again with --overwrite"
            )
    else:
        group.attrs[MADE_BY] = made_by
        array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
        scale = [1.0, *(voxel_size or (1.0, 1.0, 1.0))]
        axes = [
            {"name": "c", "type": "channel"},
            *({"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"),
        ]
        write_multiscales_metadata(
            group,
            [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
            fmt=CurrentFormat(),
            axes=axes,
        )
    grid = tuple(math.ceil(n / b) for n, b in zip(shape[1:], block, strict=True))
    done = group.require_array(DONE, shape=grid, chunks=(1, 1, 1), dtype=np.uint8, fill_value=0)
    return array, done
