"""The prediction dock widget: checkpoint + image layer in, probability and labels layers out.

A quick preview segments the planes around the current z; "Whole volume" segments everything.
Both run in a worker thread with progress and Cancel. The probabilities are kept, so the
threshold slider redraws the labels at once, without a new inference.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets
from napari.layers import Image
from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QVBoxLayout

from .. import config as config_mod
from ..config import ConfigError
from ..errors import UserInputError
from .config_form import ConfigForm
from .results import ResultTools
from .user_layers import PROBABILITY_SUFFIX, user_images
from .widgets import clock, push_button, scrolling
from .worker_panel import WorkerPanel

if TYPE_CHECKING:
    import napari
    import torch

# The model settings a checkpoint's own config supplies (checkpoint.MODEL_KEYS), and the
# channels that go with its nchannel. Listed here too because importing the checkpoint module
# (torch) would cost the panel seconds to open; a test checks the two lists agree.
FROM_CHECKPOINT = (
    "model.name",
    "model.zoom_ratio",
    "nchannel",
    "nclass",
    "size_in",
    "size_out",
    "InputCh",
)
# The prediction config's fields this panel edits (the image comes from a layer, not a file).
FIELDS = (
    "model_path",
    *FROM_CHECKPOINT,
    "Normalization",
    "OutputCh",
    "ResizeRatio",
    "RuntimeAug",
    "tiling",
    "overlap",
    "batch_size",
    "device",
    "OutputDir",
)
_NOT_NEEDED_TO_PREDICT = {"OutputDir"}  # only saving needs it
_STEPS = 1000  # the progress bar's resolution


class _Relay(QObject):
    """Carries progress and notes from the worker thread to the GUI thread (queued signals)."""

    progress = Signal(float, int)  # tiles done (fractions too), tiles in all
    note = Signal(str)  # e.g. the automatic tile chosen


@dataclass
class Result:
    """The probabilities of one image layer, filled plane by plane (previews) or whole."""

    layer_name: str
    probability: np.ndarray  # (Z, Y, X) or (n_pairs, Z, Y, X) float32
    done: np.ndarray  # (Z,) bool: planes predicted so far

    @property
    def complete(self) -> bool:
        return bool(self.done.all())


def _as_czyx(data: np.ndarray) -> np.ndarray:
    """A layer's data as (C, Z, Y, X): a 2-D image is one plane, a 3-D one one channel."""
    data = np.asarray(data)
    if data.ndim == 2:
        return data[None, None]
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4:
        return data
    raise ValueError(
        f"the image layer has {data.ndim} dimensions; expected (Z,) Y, X or C, Z, Y, X"
    )


def run_segmentation(
    cfg: config_mod.PredictConfig,
    image: np.ndarray,
    planes: tuple[int, int] | None,
    model_cache: dict,
    relay: _Relay,
    cancel: threading.Event,
) -> tuple[tuple[int, int], np.ndarray]:
    """Worker body: load (or reuse) the model, then segment ``planes`` or the whole volume."""
    from ..devices import release_freed_memory, select_device
    from ..inference.run import Callbacks, load_model, segment

    device = select_device(cfg.device)
    key = _model_key(cfg, device)
    model = model_cache.get(key)
    if model is None:
        model_cache.clear()
        model = model_cache[key] = load_model(cfg, device)
    probs = cfg.copy()
    probs.Threshold = -1.0  # keep probabilities; the slider makes the labels
    callbacks = Callbacks(relay.progress.emit, cancel.is_set, relay.note.emit)
    if planes is not None:  # a few planes: little to give back, and it runs often
        return planes, segment(model, image, probs, device, callbacks, planes)
    try:
        return (0, image.shape[1]), segment(model, image, probs, device, callbacks)
    finally:
        release_freed_memory()  # the padded volume and its tiles: napari lives on


def fine_tune(cfg: config_mod.TrainConfig, images: list):
    """The worker of Fine-tune: the training session's events, then the last checkpoint."""
    from ..training import events as ev
    from ..training.session import recorded_training

    last = None
    for event in recorded_training(cfg, images=images, beside_gui=True):
        if isinstance(event, ev.CheckpointSaved):
            last = event.path
        yield event
    return last


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


class PredictWidget(WorkerPanel):
    """Dock widget: segment an image layer with a checkpoint, tune the threshold, save."""

    failed = "prediction failed"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.result: Result | None = None
        self._models: dict = {}
        self._cancel = threading.Event()
        self._relay = _Relay()
        self._relay.progress.connect(self._on_progress)
        self._relay.note.connect(self._on_note)
        self._started_at = 0.0
        self._fine_tune_minutes: float | None = None

        self.form = ConfigForm(
            config_mod.PredictConfig,
            groups=("model", "patch size", "input", "output", "runtime"),
            collapsed=("runtime",),
            keys=FIELDS,
        )
        self.form.editors["model_path"].widget.changed.connect(self._checkpoint_chosen)
        self.form.changed.connect(self.update_controls)
        self.image_box = widgets.ComboBox(label="image layer", choices=self._image_layers)
        self.image_box.tooltip = "The image to segment (an Image layer of the viewer)."
        self.threshold = widgets.FloatSlider(
            label="threshold", min=0.0, max=1.0, step=0.01, value=0.5
        )
        self.threshold.tooltip = (
            "Probability above which a voxel is labelled; moves the labels at once."
        )
        self.threshold.changed.connect(self._update_labels)
        self.save_probability = widgets.CheckBox(text="also save the probabilities", value=False)
        top = widgets.Container(widgets=[self.image_box], labels=True)
        bottom = widgets.Container(widgets=[self.threshold, self.save_probability], labels=True)

        self.preview_button = push_button(
            self, "Preview (current z)", self.preview, "Segment the planes around the current z"
        )
        self.whole_button = push_button(
            self, "Whole volume", self.predict_whole, "Segment the whole volume"
        )
        self.cancel_button = push_button(
            self, "Cancel", self.cancel, "Stop after the current batch of tiles"
        )
        self.save_button = push_button(
            self, "Save…", self.save, "Write segmentation and prediction config to OutputDir"
        )
        self.progress = QProgressBar(self)
        self.tile_label = QLabel("tile: chosen when segmenting (size_in auto)", self)
        self.tile_label.setWordWrap(True)
        self.status.setText("choose a checkpoint and an image layer")

        run = QHBoxLayout()
        for b in (self.preview_button, self.whole_button, self.cancel_button):
            run.addWidget(b)
        self.results = ResultTools(self)
        items = [top.native, self.form, run, self.progress, self.tile_label, self.status]
        items += [bottom.native, self.save_button, self.results]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(scrolling(items, self))
        self._containers = (top, bottom)  # keep the magicgui containers alive
        self.image_box.changed.connect(self._image_chosen)
        self._model_voxel: tuple[float, float, float] | None = None
        napari_viewer.layers.events.inserted.connect(self._layers_changed)
        napari_viewer.layers.events.removed.connect(self._layers_changed)
        self.update_controls()

    # ------------------------------------------------------------------ inputs

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in user_images(self.viewer)]

    def _layers_changed(self, _event: Any = None) -> None:
        self.image_box.reset_choices()
        self.update_controls()

    def load_checkpoint(self, path: str | Path) -> bool:
        """Choose a checkpoint; its model settings fill the form when it carries them."""
        self.form.set_value("model_path", str(path))
        return self._checkpoint_chosen()

    def _checkpoint_chosen(self, *_: Any) -> bool:
        from ..checkpoint import load_checkpoint
        from ..inference.run import defaults_from_checkpoint

        path = self.form.cfg.model_path
        if not path or not Path(path).expanduser().is_file():
            return False
        try:
            defaults = defaults_from_checkpoint(load_checkpoint(path))
        except UserInputError as err:
            if "carries no config" in str(err):
                self.status.setText("this checkpoint carries no config: set the model fields below")
                return True
            show_error(str(err))
            return False
        cfg = self.form.cfg.copy()
        for key in (*FROM_CHECKPOINT, "Normalization"):
            config_mod.set_field(cfg, key, config_mod.get(defaults.config, key))
        self.form.set_config(cfg)  # size_in auto: the training patch is rarely the best tile
        self._model_voxel = defaults.voxel_size
        if defaults.threshold is not None:
            self.threshold.value = defaults.threshold
        self.results.use_model_defaults(cfg.model.name)
        self.status.setText(f"model settings read from {Path(path).name}; {defaults.note}")
        self._image_chosen()
        return True

    def set_image(self, layer: Image) -> None:
        self.image_box.value = layer

    def _image_chosen(self, *_: Any) -> None:
        """Match the model's voxel size: an image sampled differently is resized (ResizeRatio)."""
        from ..inference.run import resize_for
        from .layer_sets_panel import voxel_size_of

        layer = self.image_box.value
        if layer is None or self._model_voxel is None:
            return
        ratio = resize_for(voxel_size_of(layer), self._model_voxel)
        if ratio is not None and list(self.form.cfg.ResizeRatio) != ratio:
            self.form.set_value("ResizeRatio", ratio)
            voxel = "/".join(f"{v:g}" for v in voxel_size_of(layer))
            model = "/".join(f"{v:g}" for v in self._model_voxel)
            show_info(
                f"{layer.name}: voxel {voxel} µm, the model was trained at {model} µm: "
                f"ResizeRatio {ratio}"
            )

    # ------------------------------------------------------------------ running

    def _blocking_problems(self) -> list:
        return [p for p in self.form.problems() if p.key not in _NOT_NEEDED_TO_PREDICT]

    def update_controls(self) -> None:
        busy = self.busy
        ready = not busy and self.image_box.value is not None and not self._blocking_problems()
        self.preview_button.setEnabled(ready)
        self.whole_button.setEnabled(ready)
        self.cancel_button.setEnabled(busy)
        self.save_button.setEnabled(not busy and self.result is not None)
        self.form.setEnabled(not busy)

    def preview(self) -> WorkerBase | None:
        """Segment the planes around the viewer's current z of the chosen image."""
        layer = self.image_box.value
        if layer is None:
            return None
        from ..inference.run import plane_window

        depth = _as_czyx(layer.data).shape[1]
        z = (
            int(round(layer.world_to_data(self.viewer.dims.point)[-3]))
            if layer.data.ndim >= 3
            else 0
        )
        return self._start(plane_window(depth, min(max(z, 0), depth - 1), self.form.cfg))

    def predict_whole(self) -> WorkerBase | None:
        return self._start(None)

    def cancel(self) -> None:
        self._cancel.set()
        self.status.setText("cancelling after this batch of tiles…")

    def _start(self, planes: tuple[int, int] | None) -> WorkerBase | None:
        layer = self.image_box.value
        problems = self._blocking_problems()
        if layer is None or problems or self.worker is not None:
            if problems:
                show_error(str(ConfigError(problems, "cannot predict")))
            return None
        if planes is not None and self.form.cfg.ResizeRatio[0] != 1:
            planes = None  # a resized z axis has no plane-for-plane preview: do it all
        try:
            image = _as_czyx(layer.data)
            from ..inference.run import select_channels

            image = select_channels(image, self.form.cfg.InputCh, layer.name)
        except (ValueError, UserInputError) as err:
            show_error(str(err))
            return None
        self._cancel.clear()
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._started_at = time.monotonic()
        what = "whole volume" if planes is None else f"planes {planes[0]}–{planes[1] - 1}"
        self.status.setText(f"segmenting {layer.name}: {what}…")
        return self.start_worker(
            run_segmentation,
            self.form.cfg.copy(),
            image,
            planes,
            self._models,
            self._relay,
            self._cancel,
            on_return=functools.partial(self._on_result, layer.name),
        )

    def _on_progress(self, done: float, total: int) -> None:
        self.progress.setRange(0, _STEPS)
        fraction = min(1.0, done / max(total, 1))
        self.progress.setValue(int(fraction * _STEPS))
        elapsed = time.monotonic() - self._started_at
        eta = f" · ETA {clock(elapsed / fraction * (1 - fraction))}" if fraction > 0.02 else ""
        self.progress.setFormat(f"{done:.1f}/{total} tiles{eta}")

    def _on_note(self, line: str) -> None:
        self.tile_label.setText(line)

    def _on_result(self, layer_name: str, output: tuple[tuple[int, int], np.ndarray]) -> None:
        planes, prob = output
        source = self.viewer.layers[layer_name] if layer_name in self.viewer.layers else None
        shape = prob.shape[1:] if source is None else _as_czyx(source.data).shape[1:]
        n = prob.shape[0]
        if (
            self.result is None
            or self.result.layer_name != layer_name
            or self.result.done.shape[0] != shape[0]
        ):
            self.result = Result(
                layer_name, np.zeros((n, *shape), np.float32), np.zeros(shape[0], bool)
            )
        if self.result.probability.shape[0] != n:
            self.result = Result(
                layer_name, np.zeros((n, *shape), np.float32), np.zeros(shape[0], bool)
            )
        start, stop = planes
        self.result.probability[:, start:stop] = prob
        self.result.done[start:stop] = True
        self._show(source)
        done = int(self.result.done.sum())
        self.status.setText(f"{layer_name}: {done}/{shape[0]} planes segmented")

    def placement(self) -> dict:
        """The scale and translate of the segmented image, for layers made from its result."""
        result = self.result
        layers = self.viewer.layers
        source = layers[result.layer_name] if result and result.layer_name in layers else None
        if source is None:
            return {}
        placement = {"scale": source.scale[-3:], "translate": source.translate[-3:]}
        if result.probability.shape[0] > 1:  # (n_pairs, Z, Y, X): one more axis in front
            placement = {k: (1.0 if k == "scale" else 0.0, *v) for k, v in placement.items()}
        return placement

    def _show(self, source: Image | None) -> None:
        result = self.result
        assert result is not None
        prob = result.probability[0] if result.probability.shape[0] == 1 else result.probability
        placement = self.placement()
        prob_name, labels_name = self.layer_names()
        if prob_name in self.viewer.layers:
            self.viewer.layers[prob_name].data = prob
        else:
            self.viewer.add_image(
                prob,
                name=prob_name,
                colormap="magma",
                contrast_limits=(0, 1),
                blending="additive",
                **placement,
            )
        labels = self._labels(prob)
        if labels_name in self.viewer.layers:
            self.viewer.layers[labels_name].data = labels
        else:
            self.viewer.add_labels(labels, name=labels_name, opacity=0.5, **placement)

    def layer_names(self) -> tuple[str, str]:
        name = self.result.layer_name if self.result else ""
        return f"{name}{PROBABILITY_SUFFIX}", f"{name} segmentation"

    def _labels(self, prob: np.ndarray) -> np.ndarray:
        return (prob > self.threshold.value).astype(np.uint8)

    def _update_labels(self, *_: Any) -> None:
        """Threshold moved: labels from the stored probabilities (no new inference)."""
        if self.result is None:
            return
        _, labels_name = self.layer_names()
        if labels_name in self.viewer.layers:
            prob = self.viewer.layers[self.layer_names()[0]].data
            self.viewer.layers[labels_name].data = self._labels(np.asarray(prob))

    def start_fine_tune(self, cfg: config_mod.TrainConfig, sets: list) -> WorkerBase | None:
        """Fine-tune on corrected layers in a worker; then load the new weights and segment."""
        from ..data import DataError, images_from_layers

        recipe = 0 if cfg.normalization is None else cfg.normalization
        try:
            images = images_from_layers(sets, cfg.nchannel, min(cfg.nclass), cfg.size_out, recipe)
        except (ValueError, DataError) as err:
            show_error(str(err))
            return None
        self.status.setText(f"fine-tuning for {cfg.minutes:g} min on the corrected layer…")
        self._fine_tune_minutes = cfg.minutes
        self.progress.setRange(0, 1000)
        self._started_at = time.monotonic()
        return self.start_worker(
            fine_tune, cfg, images, on_yield=self._fine_tune_event, on_return=self._fine_tuned
        )

    def _fine_tune_event(self, event: Any) -> None:
        from ..training import events as ev

        if isinstance(event, ev.IterationEnd):
            elapsed = time.monotonic() - self._started_at
            cfg_minutes = self._fine_tune_minutes or 1
            self.progress.setValue(int(1000 * min(1.0, elapsed / (cfg_minutes * 60))))
            self.status.setText(f"fine-tuning: iteration {event.iteration}, loss {event.loss:.4g}")

    def _fine_tuned(self, checkpoint: Path | None) -> None:
        if checkpoint is None:
            show_error("fine-tuning saved no checkpoint")
            return
        show_info(f"fine-tuned: {checkpoint.name} (in {checkpoint.parent.name}); segmenting again")
        self.load_checkpoint(checkpoint)
        self.idle.connect(self._segment_after_fine_tune)

    def _segment_after_fine_tune(self) -> None:
        self.idle.disconnect(self._segment_after_fine_tune)
        self.predict_whole()

    def handle_error(self, err: BaseException) -> bool:
        from ..inference.predict import PredictionCancelled

        if not isinstance(err, PredictionCancelled):
            return False
        self.status.setText("cancelled; earlier results are kept")
        show_info("prediction cancelled")
        return True

    # ------------------------------------------------------------------ saving

    def save(self) -> list[Path]:
        """Write the segmentation (and probabilities) and a prediction YAML that reproduces it."""
        from ..inference.outputs import save_prediction

        result, cfg = self.result, self.form.cfg.copy()
        if result is None:
            return []
        if not result.complete:
            show_error("only some planes are segmented (a preview): run Whole volume before saving")
            return []
        if not cfg.OutputDir.strip():
            show_error("OutputDir: choose the folder to save into")
            return []
        layer = (
            self.viewer.layers[result.layer_name]
            if result.layer_name in self.viewer.layers
            else None
        )
        source_path = getattr(getattr(layer, "source", None), "path", None)
        try:
            written = save_prediction(
                cfg,
                result.probability,
                float(self.threshold.value),
                Path(source_path) if source_path else None,
                _as_czyx(layer.data) if layer is not None else None,
                result.layer_name,
                with_probability=self.save_probability.value,
            )
        except UserInputError as err:
            show_error(str(err))
            return []
        show_info("saved " + ", ".join(p.name for p in written))
        return written
