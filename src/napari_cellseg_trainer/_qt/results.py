"""What the Predict tab does with a prediction: instances, evaluation, correct and retrain.

Shows and forwards only: instances and scores come from :mod:`..evaluation`, the fine-tuning
from the core's training session. Everything works on the probabilities the panel keeps, so
changing an instance parameter or the ground truth never runs the network again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .layer_sets_panel import ground_truth_layers, voxel_size_of
from .predict_run import fine_tune
from .widgets import push_button

if TYPE_CHECKING:
    from .predict_widget import PredictWidget

ERROR_COLORS = {1: "#ff3b30", 2: "#0a84ff"}  # false positive red, false negative blue
FINE_TUNE_MINUTES = 3.0
_STEPS = 1000  # the progress bar's resolution


class ResultTools(QWidget):
    """Instances, "Evaluate against", and correct-and-retrain, under the prediction's results."""

    def __init__(self, panel: PredictWidget) -> None:
        super().__init__(panel)
        self.panel = panel
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
        self.instances_button = push_button(
            self, "Instances", self.make_instances, "Split the segmentation into objects"
        )
        self.evaluate_button = push_button(
            self, "Evaluate", self.evaluate, "IoU, Dice and object scores against the ground truth"
        )
        self.correct_button = push_button(
            self, "Correct…", self.make_editable, "The segmentation as a Labels layer to paint on"
        )
        self.finetune_button = push_button(
            self,
            "Fine-tune",
            self.fine_tune,
            f"Continue training from the checkpoint on the corrected layer (~{FINE_TUNE_MINUTES:g} "
            "min, its own run folder), then segment again",
        )
        self.figures = QLabel("", self)
        self.figures.setWordWrap(True)
        self.before: list[str] = []  # the scores before the last fine-tuning
        self._fine_tune_started, self._fine_tune_minutes = 0.0, FINE_TUNE_MINUTES
        grid = QGridLayout()
        for i, b in enumerate(
            (self.instances_button, self.evaluate_button, self.correct_button, self.finetune_button)
        ):
            grid.addWidget(b, i // 2, i % 2)
        inner = QWidget(self)
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.params.native)
        inner_layout.addLayout(grid)
        inner_layout.addWidget(self.figures)
        box = QCollapsible("Instances · evaluation · correct and retrain", self)
        box.setDuration(0)
        box.addWidget(inner)
        box.expand(animate=False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)
        panel.viewer.layers.events.inserted.connect(lambda *_: self.truth.reset_choices())
        panel.viewer.layers.events.removed.connect(lambda *_: self.truth.reset_choices())

    # ------------------------------------------------------------------ inputs

    def _truths(self, _widget: Any = None) -> list[tuple[str, Any]]:
        mine = set(self.panel.layer_names()) | {self._name("instances"), self._name("errors")}
        return [
            (layer.name, layer)
            for layer in ground_truth_layers(self.panel.viewer)
            if layer.name not in mine
        ]

    def _name(self, what: str) -> str:
        result = self.panel.result
        return f"{result.layer_name} {what}" if result is not None else what

    def _probability(self) -> np.ndarray | None:
        result = self.panel.result
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

        layer = self.panel.image_box.value
        return InstanceParams(
            threshold=float(self.panel.threshold.value),
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
        self._put_labels(self._name("instances"), labels)
        show_info(f"{int(labels.max())} objects")
        return labels

    def _instance_parameters_changed(self, *_: Any) -> None:
        if self._name("instances") in self.panel.viewer.layers:
            self.make_instances()  # no new inference: the probabilities are kept

    def _put_labels(self, name: str, labels: np.ndarray, **kwargs) -> Any:
        viewer = self.panel.viewer
        if name in viewer.layers:
            viewer.layers[name].data = labels
            return viewer.layers[name]
        return viewer.add_labels(labels, name=name, **self.panel.placement(), **kwargs)

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
        instances = self._name("instances")
        prediction = (
            np.asarray(self.panel.viewer.layers[instances].data)
            if instances in self.panel.viewer.layers
            else prob
        )
        try:
            result = evaluate(prediction, truth, threshold=float(self.panel.threshold.value))
        except ValueError as err:
            show_error(str(err))
            return None
        lines = result.lines()
        compare = f" (before: {'; '.join(self.before[:2])})" if self.before else ""
        self.figures.setText("; ".join(lines) + compare)
        if self.show_errors.value:
            errors = error_map(prob > self.panel.threshold.value, truth > 0)
            colors = {None: "transparent", 0: "transparent", **ERROR_COLORS}
            layer = self._put_labels(self._name("errors"), errors, opacity=0.7)
            layer.colormap = colors
        return result

    # ------------------------------------------------------------------ correct and retrain

    def make_editable(self) -> Any:
        """The current segmentation as "<image> corrected", a Labels layer to paint on."""
        prob = self._probability()
        if prob is None:
            return None
        labels = (prob > self.panel.threshold.value).astype(np.uint8)
        layer = self._put_labels(self._name("corrected"), labels, opacity=0.6)
        self.panel.viewer.layers.selection.active = layer
        layer.mode = "paint"
        show_info(f"paint structure as 1 and erase errors in {layer.name!r}, then Fine-tune")
        return layer

    def fine_tune(self):
        """Train on from the checkpoint on the corrected layer, then segment again (a worker)."""
        name = self._name("corrected")
        image = self.panel.image_box.value
        viewer = self.panel.viewer
        if name not in viewer.layers or image is None:
            show_error("make the corrected layer first (Correct…) and paint on it")
            return None
        from ..errors import UserInputError
        from ..training.quick import fine_tune_preset

        try:
            cfg = fine_tune_preset(Path(self.panel.form.cfg.model_path), FINE_TUNE_MINUTES)
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
        panel = self.panel
        panel.status.setText(f"fine-tuning for {cfg.minutes:g} min on the corrected layer…")
        panel.progress.setRange(0, _STEPS)
        self._fine_tune_started = time.monotonic()
        self._fine_tune_minutes = cfg.minutes or 1.0
        return panel.start_worker(
            fine_tune, cfg, images, on_yield=self._fine_tune_event, on_return=self._fine_tuned
        )

    def _fine_tune_event(self, event: Any) -> None:
        from ..training import events as ev

        if isinstance(event, ev.IterationEnd):
            elapsed = time.monotonic() - self._fine_tune_started
            share = min(1.0, elapsed / (self._fine_tune_minutes * 60))
            self.panel.progress.setValue(int(_STEPS * share))
            self.panel.status.setText(
                f"fine-tuning: iteration {event.iteration}, loss {event.loss:.4g}"
            )

    def _fine_tuned(self, checkpoint: Path | None) -> None:
        if checkpoint is None:
            show_error("fine-tuning saved no checkpoint")
            return
        show_info(f"fine-tuned: {checkpoint.name} (in {checkpoint.parent.name}); segmenting again")
        self.panel.load_checkpoint(checkpoint)
        self.panel.idle.connect(self._segment_after_fine_tune)

    def _segment_after_fine_tune(self) -> None:
        self.panel.idle.disconnect(self._segment_after_fine_tune)
        self.panel.predict_whole()


def _layer_set(image, labels):
    from ..data.layer_sets import LayerSet

    return LayerSet(
        image.name, image.data, np.asarray(labels.data), voxel_size=voxel_size_of(image)
    )
