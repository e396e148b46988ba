"""The prediction dock widget: checkpoint + image layer in, probability and labels layers out.

A quick preview segments the planes around the current z; "Whole volume" segments everything:
in memory, or, for a zarr- or dask-backed layer, block by block into
``<OutputDir>/<layer>_struct_segmentation.ome.zarr``, shown straight from that store. Both run
in a worker thread with progress and Cancel. The probabilities are kept, so the threshold
slider redraws the labels at once, without a new inference.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets
from napari.layers import Image
from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QLabel, QVBoxLayout

from .. import config as config_mod
from ..config import ConfigError
from ..config.starters import STARTERS, is_starter
from ..errors import UserInputError
from . import predict_run as run
from .config_form import ConfigForm
from .predict_layers import ResultLayers
from .predict_output import OutputTools
from .results import ResultTools
from .user_layers import user_images
from .widgets import clock, grid, push_buttons, scrolling
from .worker_panel import WorkerPanel

if TYPE_CHECKING:
    import napari

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
_NOT_NEEDED_TO_PREDICT = {"OutputDir"}  # only saving needs it (and a lazy image's whole volume)
_WHOLE_TIP = (
    "Segment the whole volume (a zarr- or dask-backed layer block by block into an OME-Zarr in "
    "OutputDir)"
)
_STEPS = 1000  # the progress bar's resolution


def _tip(starter) -> str:
    return f"Predict with {starter.describe()}, a pretrained model of {starter.summary}, as it is"


class PredictWidget(WorkerPanel):
    """Dock widget: segment an image layer with a checkpoint, tune the threshold, save."""

    failed = "prediction failed"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self._models: dict = {}
        self._cancel = threading.Event()
        self._relay = run.Relay()
        self._relay.progress.connect(self._on_progress)
        self._relay.note.connect(self._on_note)
        self._relay.warn.connect(self._on_warn)
        self._started_at = 0.0
        self._unit = "tiles"

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
        self.shown = ResultLayers(napari_viewer, lambda: float(self.threshold.value))
        self.threshold.changed.connect(lambda *_: self.shown.relabel())
        top = widgets.Container(widgets=[self.image_box], labels=True)
        bottom = widgets.Container(widgets=[self.threshold], labels=True)

        buttons = push_buttons(
            self,
            ("Preview (current z)", self.preview, "Segment the planes around the current z"),
            ("Whole volume", self.predict_whole, _WHOLE_TIP),
            ("Cancel", self.cancel, "Stop after the current batch of tiles"),
        )
        self.preview_button, self.whole_button, self.cancel_button = buttons
        self.tile_label = QLabel("tile: chosen when segmenting (size_in auto)", self)
        self.tile_label.setWordWrap(True)
        self.shift_label = QLabel("", self)  # the intensity-shift warning, beside the preview
        self.shift_label.setWordWrap(True)
        self.shift_label.setStyleSheet("color: #e8a33d")
        self.shift_label.setVisible(False)
        starters = push_buttons(
            self,
            *(
                (
                    f"Starter: {s.name}",
                    functools.partial(self.load_checkpoint, s.reference),
                    _tip(s),
                )
                for s in STARTERS.values()
            ),
        )
        self.status.setText("choose a checkpoint and an image layer")

        self.outputs = OutputTools(self.form, self.shown, self)
        self.results = ResultTools(self.form, self.shown, self.image, self, self.use_fine_tuned)
        items = [top.native, grid(starters), self.form, grid(buttons), self.progress]
        items += [self.tile_label, self.shift_label, self.status]
        items += [bottom.native, self.outputs, self.results]
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
        from ..inference.run import defaults_from_checkpoint
        from ..model_source import open_model

        path = self.form.cfg.model_path
        if not path or not (is_starter(path) or Path(path).expanduser().is_file()):
            return False
        try:
            defaults = defaults_from_checkpoint(open_model(path))
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

    def image(self) -> Image | None:
        """The image layer chosen."""
        return self.image_box.value

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
        self.outputs.update_controls(busy)
        self.form.setEnabled(not busy)

    def preview(self) -> WorkerBase | None:
        """Segment the planes around the viewer's current z of the chosen image."""
        layer = self.image_box.value
        if layer is None:
            return None
        from ..inference.run import plane_window

        depth = run.czyx_shape(run.layer_array(layer))[1]
        z = int(round(layer.world_to_data(self.viewer.dims.point)[-3])) if layer.ndim >= 3 else 0
        return self._start(plane_window(depth, min(max(z, 0), depth - 1), self.form.cfg))

    def predict_whole(self) -> WorkerBase | None:
        """Segment the whole volume: in memory, or block by block for a lazy layer."""
        layer = self.image_box.value
        if layer is not None and run.is_lazy(run.layer_array(layer)):
            return self._start_blocks(layer)
        return self._start(None)

    def cancel(self) -> None:
        self._cancel.set()
        self.status.setText(f"cancelling after this batch of {self._unit}…")

    def _start(self, planes: tuple[int, int] | None) -> WorkerBase | None:
        layer = self.image_box.value
        problems = self._blocking_problems()
        if layer is None or problems or self.busy:
            if problems:
                show_error(str(ConfigError(problems, "cannot predict")))
            return None
        if planes is not None and self.form.cfg.ResizeRatio[0] != 1:
            planes = None  # a resized z axis has no plane-for-plane preview: do it all
        try:
            from ..inference.run import select_channels

            image = run.as_czyx(run.layer_array(layer))
            image = select_channels(image, self.form.cfg.InputCh, layer.name)
        except (ValueError, UserInputError) as err:
            show_error(str(err))
            return None
        what = "whole volume" if planes is None else f"planes {planes[0]}–{planes[1] - 1}"
        self._begin(f"segmenting {layer.name}: {what}…", "tiles")
        return self.start_worker(
            run.run_segmentation,
            self.form.cfg.copy(),
            image,
            planes,
            self._models,
            self._relay,
            self._cancel,
            on_return=functools.partial(self._on_result, layer.name),
        )

    def _start_blocks(self, layer: Image) -> WorkerBase | None:
        """A zarr- or dask-backed layer, block by block into an OME-Zarr in OutputDir."""
        from ..data.layer_sets import safe_name
        from ..inference.outputs import check_outputs, output_paths
        from .layer_sets_panel import voxel_size_of

        problems = self.form.problems()
        if problems or self.busy:
            if problems:
                why = "cannot predict (a lazy image is written to an OME-Zarr in OutputDir)"
                show_error(str(ConfigError(problems, why)))
            return None
        cfg = self.form.cfg.copy()
        cfg.output_format = "ome-zarr"
        source = getattr(layer.source, "path", None)
        named = Path(cfg.OutputDir) / f"{safe_name(layer.name)}.ome.tif"
        (output,) = output_paths(cfg, named)
        try:
            # the CLI's output rules: never onto the input; an existing store is resumed when
            # these weights and settings made it, else refused (the core's fingerprint)
            inputs = [Path(source)] if source else []
            check_outputs(cfg, inputs, {Path(source) if source else named: [output]}, True)
            image = run.lazy_czyx(run.layer_array(layer))
            output.parent.mkdir(parents=True, exist_ok=True)
        except (ValueError, OSError) as err:  # OutputError is a ValueError
            show_error(f"{layer.name}: {getattr(err, 'strerror', None) or err}")
            return None
        self._begin(f"segmenting {layer.name} block by block into {output.name}…", "blocks")
        return self.start_worker(
            run.run_blocks,
            cfg,
            image,
            output,
            voxel_size_of(layer),
            self._models,
            self._relay,
            self._cancel,
            on_return=functools.partial(self._on_store, layer.name),
        )

    def _begin(self, line: str, unit: str) -> None:
        self._cancel.clear()
        self.shift_label.setVisible(False)
        self._unit = unit
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._started_at = time.monotonic()
        self.status.setText(line)

    def _on_progress(self, done: float, total: int) -> None:
        self.progress.setRange(0, _STEPS)
        fraction = min(1.0, done / max(total, 1))
        self.progress.setValue(int(fraction * _STEPS))
        elapsed = time.monotonic() - self._started_at
        eta = f" · ETA {clock(elapsed / fraction * (1 - fraction))}" if fraction > 0.02 else ""
        self.progress.setFormat(f"{done:.1f}/{total} {self._unit}{eta}")

    def _on_note(self, line: str) -> None:
        self.tile_label.setText(line)

    def _on_warn(self, line: str) -> None:
        """The volume is unlike the model's training data, or saturated: said beside the preview
        (under what this prediction said before), and once as a notification."""
        before = "" if self.shift_label.isHidden() else self.shift_label.text() + "\n"
        self.shift_label.setText(f"{before}⚠ {line}")
        self.shift_label.setVisible(True)
        show_warning(line)

    def _on_result(self, layer_name: str, output: tuple[tuple[int, int], np.ndarray]) -> None:
        planes, prob = output
        layers = self.viewer.layers
        source = layers[layer_name] if layer_name in layers else None
        shape = prob.shape[1:] if source is None else run.czyx_shape(run.layer_array(source))[1:]
        self.shown.show(run.merge(self.result, layer_name, shape, planes, prob))
        done = int(self.result.done.sum())
        self.status.setText(f"{layer_name}: {done}/{shape[0]} planes segmented")

    def _on_store(self, layer_name: str, store: Path) -> None:
        prob = run.open_store(store)
        self.shown.show(run.Result(layer_name, prob, np.ones(prob.shape[1], bool), store))
        self.status.setText(f"{layer_name}: whole volume segmented into {store}")
        show_info(f"{layer_name}: segmented block by block into {store.name}")

    @property
    def result(self) -> run.Result | None:
        """The prediction shown (kept by its layers)."""
        return self.shown.result

    def layer_names(self) -> tuple[str, str]:
        """The names of the probability and the segmentation layer."""
        return self.shown.names()

    def use_fine_tuned(self, checkpoint: Path) -> None:
        """Load a fine-tuned checkpoint, and segment the whole volume with it once idle."""
        self.load_checkpoint(checkpoint)
        self.idle.connect(self._segment_again)

    def _segment_again(self) -> None:
        self.idle.disconnect(self._segment_again)
        self.predict_whole()

    def handle_error(self, err: BaseException) -> bool:
        from ..inference.predict import PredictionCancelled

        if not isinstance(err, PredictionCancelled):
            return False
        resume = " (Whole volume resumes the OME-Zarr)" if self._unit == "blocks" else ""
        self.status.setText(f"cancelled; earlier results are kept{resume}")
        show_info("prediction cancelled")
        return True
