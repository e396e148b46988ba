"""What the Predict tab does with a prediction: instances, evaluation, correct and retrain.

Shows and forwards only: instances and scores come from :mod:`..evaluation`, the fine-tuning
from the core's training session. Everything works on the probabilities the panel keeps, so
changing an instance parameter or the ground truth never runs the network again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .layer_sets_panel import ground_truth_layers, voxel_size_of
from .predict_run import fine_tune
from .widgets import grid, push_buttons

if TYPE_CHECKING:
    from napari.layers import Image

    from .config_form import ConfigForm
    from .predict_layers import ResultLayers
    from .worker_panel import Runner

ERROR_COLORS = {1: "#ff3b30", 2: "#0a84ff"}  # false positive red, false negative blue
FINE_TUNE_MINUTES = 3.0
_STEPS = 1000  # the progress bar's resolution
_FINE_TUNE_TIP = (
    f"Continue training from the checkpoint on the corrected layer (~{FINE_TUNE_MINUTES:g} min, "
    "its own run folder), then segment again"
)


class ResultTools(QWidget):
    """Instances, "Evaluate against", and correct-and-retrain, under the prediction's results.

    Works on the result ``shown``; ``image`` gives the image layer chosen (its voxel size, and
    the image to fine-tune on); fine-tunes the ``form``'s checkpoint in the ``runner``'s worker
    and hands the new checkpoint to ``fine_tuned`` (the panel segments again with it).
    """

    def __init__(
        self,
        form: ConfigForm,
        shown: ResultLayers,
        image: Callable[[], Image | None],
        runner: Runner,
        fine_tuned: Callable[[Path], None],
    ) -> None:
        super().__init__()
        self.form, self.shown, self.runner = form, shown, runner
        self._image, self._then = image, fine_tuned
        self.method = widgets.ComboBox(label="instances", choices=["watershed", "components"])
        self.seeds = widgets.ComboBox(label="seeds from", choices=["distance", "probability"])
        self.min_distance = widgets.SpinBox(label="seed distance", min=1, max=200, value=5)
        self.min_size = widgets.SpinBox(label="min size", min=0, max=10**7, value=50)
        self.truth = widgets.ComboBox(label="evaluate against", choices=self._truths, nullable=True)
        self.show_errors = widgets.CheckBox(text="colour the errors", value=True)
        self.method.tooltip = "watershed splits touching round objects; components keeps them"
        self.min_distance.tooltip = "The smallest distance between two seeds (voxels)"
        self.min_size.tooltip = "Objects with fewer voxels are removed"
        self.truth.tooltip = "Ground truth (a Labels or integer Image layer) to score against"
        for w in (self.method, self.seeds, self.min_distance, self.min_size):
            w.changed.connect(self._instance_parameters_changed)
        self.params = widgets.Container(
            widgets=[
                self.method,
                self.seeds,
                self.min_distance,
                self.min_size,
                self.truth,
                self.show_errors,
            ],
            labels=True,
        )
        buttons = push_buttons(
            self,
            ("Instances", self.make_instances, "Split the segmentation into objects"),
            ("Evaluate", self.evaluate, "IoU, Dice and object scores against the ground truth"),
            ("Correct…", self.make_editable, "The segmentation as a Labels layer to paint on"),
            ("Fine-tune", self.fine_tune, _FINE_TUNE_TIP),
        )
        self.instances_button, self.evaluate_button, self.correct_button = buttons[:3]
        self.finetune_button = buttons[3]
        self.figures = QLabel("", self)
        self.figures.setWordWrap(True)
        self.before: list[str] = []  # the scores before the last fine-tuning
        self._fine_tune_started, self._fine_tune_minutes = 0.0, FINE_TUNE_MINUTES
        inner = QWidget(self)
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.params.native)
        inner_layout.addLayout(grid(buttons, 2))
        inner_layout.addWidget(self.figures)
        box = QCollapsible("Instances · evaluation · correct and retrain", self)
        box.setDuration(0)
        box.addWidget(inner)
        box.expand(animate=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)
        shown.viewer.layers.events.inserted.connect(lambda *_: self.truth.reset_choices())
        shown.viewer.layers.events.removed.connect(lambda *_: self.truth.reset_choices())

    # ------------------------------------------------------------------ inputs

    def _truths(self, _widget: Any = None) -> list[tuple[str, Any]]:
        named = self.shown.named
        mine = {*self.shown.names(), named("instances"), named("errors")}
        return [
            (layer.name, layer)
            for layer in ground_truth_layers(self.shown.viewer)
            if layer.name not in mine
        ]

    def _probability(self) -> np.ndarray | None:
        result = self.shown.result
        if result is None or not result.complete:
            show_error("segment the whole volume first")
            return None
        if not result.in_memory:
            show_error(
                f"{result.layer_name} was predicted block by block into {result.store.name}: "
                "instances, evaluation and correction work on a volume segmented in memory"
            )
            return None
        prob = result.probability
        return prob[0] if prob.ndim == 4 else prob

    def params_now(self):
        from ..evaluation import InstanceParams

        layer = self._image()
        return InstanceParams(
            threshold=self.shown.threshold(),
            method=self.method.value,
            seeds=self.seeds.value,
            min_distance=int(self.min_distance.value),
            min_size=int(self.min_size.value),
            spacing=voxel_size_of(layer) or (1.0, 1.0, 1.0)
            if layer is not None
            else (1.0, 1.0, 1.0),
        )

    def use_model_defaults(self, model_name: str) -> None:
        """The instance recipe that suits the model (watershed for nuclei, components else)."""
        from ..evaluation import default_params

        params = default_params(model_name)
        self.method.value, self.seeds.value = params.method, params.seeds
        self.min_distance.value, self.min_size.value = params.min_distance, params.min_size

    # ------------------------------------------------------------------ instances

    def make_instances(self) -> np.ndarray | None:
        """Instance labels from the kept probabilities, into the "<image> instances" layer."""
        from ..evaluation import label_instances

        prob = self._probability()
        if prob is None:
            return None
        labels = label_instances(prob, self.params_now())
        self.shown.put_labels(self.shown.named("instances"), labels)
        show_info(f"{int(labels.max())} objects")
        return labels

    def _instance_parameters_changed(self, *_: Any) -> None:
        if self.shown.named("instances") in self.shown.viewer.layers:
            self.make_instances()  # no new inference: the probabilities are kept

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> Any:
        """Scores against the chosen ground truth; the errors as a layer when asked."""
        from ..evaluation import error_map, evaluate

        prob, truth_layer = self._probability(), self.truth.value
        if prob is None:
            return None
        if truth_layer is None:
            show_error("choose the ground truth to evaluate against")
            return None
        truth = np.asarray(truth_layer.data)
        layers, instances = self.shown.viewer.layers, self.shown.named("instances")
        prediction = np.asarray(layers[instances].data) if instances in layers else prob
        try:
            result = evaluate(prediction, truth, threshold=self.shown.threshold())
        except ValueError as err:
            show_error(str(err))
            return None
        lines = result.lines()
        compare = f" (before: {'; '.join(self.before[:2])})" if self.before else ""
        self.figures.setText("; ".join(lines) + compare)
        if self.show_errors.value:
            errors = error_map(prob > self.shown.threshold(), truth > 0)
            colors = {None: "transparent", 0: "transparent", **ERROR_COLORS}
            layer = self.shown.put_labels(self.shown.named("errors"), errors, opacity=0.7)
            layer.colormap = colors
        return result

    # ------------------------------------------------------------------ correct and retrain

    def make_editable(self) -> Any:
        """The current segmentation as "<image> corrected", a Labels layer to paint on."""
        prob = self._probability()
        if prob is None:
            return None
        labels = (prob > self.shown.threshold()).astype(np.uint8)
        layer = self.shown.put_labels(self.shown.named("corrected"), labels, opacity=0.6)
        self.shown.viewer.layers.selection.active = layer
        layer.mode = "paint"
        show_info(f"paint structure as 1 and erase errors in {layer.name!r}, then Fine-tune")
        return layer

    def fine_tune(self):
        """Train on from the checkpoint on the corrected layer, then segment again (a worker)."""
        name = self.shown.named("corrected")
        image = self._image()
        viewer = self.shown.viewer
        if name not in viewer.layers or image is None:
            show_error("make the corrected layer first (Correct…) and paint on it")
            return None
        from ..errors import UserInputError
        from ..training.quick import fine_tune_preset

        try:
            cfg = fine_tune_preset(Path(self.form.cfg.model_path), FINE_TUNE_MINUTES)
        except UserInputError as err:
            show_error(str(err))
            return None
        from ..data import DataError, images_from_layers

        sets = [_layer_set(image, viewer.layers[name])]
        recipe = 0 if cfg.normalization is None else cfg.normalization
        try:
            images = images_from_layers(sets, cfg.nchannel, min(cfg.nclass), cfg.size_out, recipe)
        except (ValueError, DataError) as err:
            show_error(str(err))
            return None
        evaluated = self.figures.text()
        self.before = [evaluated] if evaluated else []
        runner = self.runner
        runner.status.setText(f"fine-tuning for {cfg.minutes:g} min on the corrected layer…")
        runner.progress.setRange(0, _STEPS)
        self._fine_tune_started = time.monotonic()
        self._fine_tune_minutes = cfg.minutes or 1.0
        return runner.start_worker(
            fine_tune, cfg, images, on_yield=self._fine_tune_event, on_return=self._fine_tuned
        )

    def _fine_tune_event(self, event: Any) -> None:
        from ..training import events as ev

        if isinstance(event, ev.IterationEnd):
            elapsed = time.monotonic() - self._fine_tune_started
            share = min(1.0, elapsed / (self._fine_tune_minutes * 60))
            self.runner.progress.setValue(int(_STEPS * share))
            self.runner.status.setText(
                f"fine-tuning: iteration {event.iteration}, loss {event.loss:.4g}"
            )

    def _fine_tuned(self, checkpoint: Path | None) -> None:
        if checkpoint is None:
            show_error("fine-tuning saved no checkpoint")
            return
        show_info(f"fine-tuned: {checkpoint.name} (in {checkpoint.parent.name}); segmenting again")
        self._then(checkpoint)


def _layer_set(image, labels):
    from ..data.layer_sets import LayerSet

    return LayerSet(
        image.name, image.data, np.asarray(labels.data), voxel_size=voxel_size_of(image)
    )
