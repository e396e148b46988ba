"""What the prediction panel runs in its worker thread, and the result it keeps.

The work is the core's: :func:`..inference.run.segment` for an image in memory,
:func:`..inference.chunked.predict_lazy_to_zarr` for a zarr- or dask-backed one (block by
block, into an OME-Zarr, never the whole volume in memory), the training session for
fine-tuning. These functions only load (or reuse) the model and pass progress back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from .. import config as config_mod

if TYPE_CHECKING:
    import torch


class Relay(QObject):
    """Carries progress and notes from the worker thread to the GUI thread (queued signals)."""

    progress = Signal(float, int)  # tiles (or blocks) done, fractions too; how many in all
    note = Signal(str)  # e.g. the automatic tile chosen
    warn = Signal(str)  # a doubt on the result: the volume is unlike the training data


@dataclass
class Result:
    """The probabilities of one image layer, filled plane by plane (previews) or whole.

    ``store`` is the OME-Zarr a lazy image was predicted into; ``probability`` is then a dask
    array over it, read only where napari shows it.
    """

    layer_name: str
    probability: Any  # (n_pairs, Z, Y, X) float32: numpy, or dask over ``store``
    done: np.ndarray  # (Z,) bool: planes predicted so far
    store: Path | None = None

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def in_memory(self) -> bool:
        return self.store is None


def layer_array(layer: Any) -> Any:
    """A layer's data, the full-resolution level of a multiscale one."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def is_lazy(data: Any) -> bool:
    """Backed by a zarr, dask or other array that reads on demand (not a numpy array)."""
    return not isinstance(data, np.ndarray)


def czyx_shape(data: Any) -> tuple[int, int, int, int]:
    """The (C, Z, Y, X) shape :func:`as_czyx` gives, without reading the data."""
    shape = tuple(int(v) for v in data.shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(
            f"the image layer has {len(shape)} dimensions; expected (Z,) Y, X or C, Z, Y, X"
        )
    return (1,) * (4 - len(shape)) + shape  # type: ignore[return-value]


def as_czyx(data: Any) -> np.ndarray:
    """A layer's data as (C, Z, Y, X) in memory: a 2-D image is one plane, a 3-D one a channel."""
    shape = czyx_shape(data)
    return np.asarray(data).reshape(shape)


def lazy_czyx(data: Any) -> Any:
    """A lazy layer's data as a (C, Z, Y, X) dask array; nothing is read."""
    import dask.array as da

    array = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    return array.reshape(czyx_shape(array))


def merge(
    previous: Result | None, name: str, shape: tuple[int, ...], planes: tuple[int, int], prob
) -> Result:
    """``previous`` with the planes just predicted, or a new result where they do not fit."""
    n = prob.shape[0]
    fits = (
        previous is not None
        and previous.in_memory
        and previous.layer_name == name
        and previous.probability.shape == (n, *shape)
    )
    result = (
        previous
        if fits
        else Result(name, np.zeros((n, *shape), np.float32), np.zeros(shape[0], bool))
    )
    start, stop = planes
    result.probability[:, start:stop] = prob
    result.done[start:stop] = True
    return result


def _model(cfg: config_mod.PredictConfig, device: torch.device, cache: dict):
    """The checkpoint's model, loaded once while the checkpoint and model settings stay."""
    from ..inference.run import load_model

    key = _model_key(cfg, device)
    model = cache.get(key)
    if model is None:
        cache.clear()
        model = cache[key] = load_model(cfg, device)
    return model


def _model_key(cfg: config_mod.PredictConfig, device: torch.device) -> tuple:
    path = Path(cfg.model_path).expanduser()
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    return (
        str(path),
        stamp,
        cfg.model.name,
        cfg.model.zoom_ratio,
        cfg.nchannel,
        tuple(cfg.nclass),
        str(device),
    )


def _probabilities(cfg: config_mod.PredictConfig) -> config_mod.PredictConfig:
    probs = cfg.copy()
    probs.Threshold = -1.0  # keep probabilities; the slider makes the labels
    return probs


def run_segmentation(
    cfg: config_mod.PredictConfig,
    image: np.ndarray,
    planes: tuple[int, int] | None,
    model_cache: dict,
    relay: Relay,
    cancel: threading.Event,
) -> tuple[tuple[int, int], np.ndarray]:
    """Worker body: load (or reuse) the model, then segment ``planes`` or the whole volume."""
    from ..devices import release_freed_memory, select_device
    from ..inference.run import Callbacks, segment

    device = select_device(cfg.device)
    model = _model(cfg, device, model_cache)
    callbacks = Callbacks(relay.progress.emit, cancel.is_set, relay.note.emit, relay.warn.emit)
    if planes is not None:  # a few planes: little to give back, and it runs often
        return planes, segment(model, image, _probabilities(cfg), device, callbacks, planes)
    try:
        return (0, image.shape[1]), segment(model, image, _probabilities(cfg), device, callbacks)
    finally:
        release_freed_memory()  # the padded volume and its tiles: napari lives on


def run_blocks(
    cfg: config_mod.PredictConfig,
    image: Any,
    output: Path,
    voxel_size: tuple[float, float, float] | None,
    model_cache: dict,
    relay: Relay,
    cancel: threading.Event,
) -> Path:
    """Worker body: a lazy (C, Z, Y, X) image into the OME-Zarr ``output``, block by block."""
    from ..devices import release_freed_memory, select_device
    from ..inference.chunked import predict_lazy_to_zarr

    device = select_device(cfg.device)
    model = _model(cfg, device, model_cache)
    try:
        predict_lazy_to_zarr(
            model,
            image,
            output,
            _probabilities(cfg),
            device,
            voxel_size=voxel_size,
            progress=relay.progress.emit,
            note=relay.note.emit,
            should_cancel=cancel.is_set,
            warn=relay.warn.emit,
        )
    finally:
        release_freed_memory()
    return output


def open_store(path: Path) -> Any:
    """The probabilities of an OME-Zarr the panel wrote, as a dask array (nothing read)."""
    import dask.array as da
    import zarr

    return da.from_zarr(zarr.open_array(str(path), path="0", mode="r"))


def fine_tune(cfg: config_mod.TrainConfig, images: list):
    """The worker of Fine-tune: the training session's events, then the last checkpoint."""
    from ..training import events as ev
    from ..training.session import recorded_training

    last = None
    for event in recorded_training(cfg, images=images, beside_gui=True):
        if isinstance(event, ev.CheckpointSaved) and not event.best:
            last = event.path
        yield event
    return last
