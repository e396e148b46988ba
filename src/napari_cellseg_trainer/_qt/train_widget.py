"""The training dock widget: config form, YAML import/export, Train/Stop, progress and live views.

It shows and forwards only: the config lives in the form's schema object, the training is the
engine's event generator run in a napari worker thread, and each event is drawn here.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from .. import config as config_mod
from ..config import ConfigError, Problem
from ..config.fields import from_dict
from ..data import DataError, TrainingImage, ZoomAdvice, images_from_layers
from ..data.sample import ensure_sample_folder, sample_cache_folder
from ..training.events import (
    CheckpointSaved,
    EpochEnd,
    Event,
    IterationEnd,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .config_form import ConfigForm
from .layer_sets_panel import LayerSetsPanel
from .loss_plot import LossPlot
from .preview import PreviewLayers
from .widgets import push_button
from .worker_panel import WorkerPanel

if TYPE_CHECKING:
    import napari

    from ..models.memory import SizeAdvice

_CLOSE_WAIT_S = 120  # how long closing napari waits for the stop checkpoint


def run_training(
    cfg: config_mod.TrainConfig,
    stop: threading.Event,
    done: threading.Event,
    images: list[TrainingImage] | None = None,
) -> Iterator[Event]:
    """The worker's generator: the session every front end runs, beside napari.

    ``done`` is set in the worker thread when the run has ended (checkpoint written), so closing
    napari can wait for it without needing the GUI thread's event loop.
    """
    from ..training.session import recorded_training

    try:
        yield from recorded_training(cfg, stop, images, beside_gui=True)
    finally:
        done.set()


class TrainWidget(WorkerPanel):
    """Dock widget: edit the training config, train, watch the loss and the predicted patches."""

    failed = "training failed"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._started_at = 0.0
        self._first_iteration = 0
        self._total_iterations = 0
        self._iterations_per_epoch = 1
        self._epochs = 0
        self.last_checkpoint: Path | None = None
        self._watched_window: weakref.ref[QObject] = lambda: None  # type: ignore[assignment]

        self.form = ConfigForm(config_mod.TrainConfig)
        self.form.changed.connect(self.update_controls)
        self.plot = LossPlot()
        self.previews = PreviewLayers(napari_viewer)
        self.layer_data = LayerSetsPanel(napari_viewer, on_advice=self.apply_zoom_advice)
        self._build()
        self.update_controls()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.import_button = push_button(
            self, "Import YAML…", self._ask_import, "Fill the form from a training config file"
        )
        self.export_button = push_button(
            self, "Export YAML…", self._ask_export, "Save the form as a training config file"
        )
        self.reset_button = push_button(
            self, "Reset", self.reset, "Every field back to its default"
        )
        self.sample_button = push_button(
            self,
            "Sample preset",
            self.use_sample_preset,
            "Train on the embedded sample data with small patches that train visibly on a CPU",
        )
        self.preview_button = push_button(
            self,
            "Preview latest checkpoint",
            self.preview_latest_checkpoint,
            "Segment the planes around the current z of the selected image with the newest checkpoint",
        )
        self.advise_button = push_button(
            self,
            "Advise sizes",
            self.advise_sizes,
            "Set the largest size_in and a batch_size whose training step fits the memory "
            "(the GPU's free memory, or the number in the box)",
        )
        self.memory_box = QLineEdit(self)
        self.memory_box.setPlaceholderText("GPU free memory, or e.g. 8GB")
        self.memory_box.setToolTip("Memory budget for Advise sizes; empty: the GPU's free memory")
        self.train_button = push_button(
            self, "Train", self.start_training, "Start training with this config"
        )
        self.stop_button = push_button(
            self, "Stop", self.stop_training, "Stop after this batch and save a checkpoint"
        )
        self.progress = QProgressBar(self)
        self.progress.setFormat("%p%")
        self.status.setText("ready")
        self.device_label = QLabel("device: chosen when training starts (config: auto)", self)

        files = QHBoxLayout()
        for b in (self.import_button, self.export_button, self.reset_button, self.sample_button):
            files.addWidget(b)
        sizes = QHBoxLayout()
        sizes.addWidget(self.memory_box)
        sizes.addWidget(self.advise_button)
        run = QHBoxLayout()
        run.addWidget(self.train_button)
        run.addWidget(self.stop_button)
        run.addWidget(self.preview_button)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(files)
        top_layout.addWidget(scroll)
        data_box = QCollapsible("training data from layers", top)
        data_box.addWidget(self.layer_data)
        top_layout.addWidget(data_box)
        top_layout.addLayout(sizes)
        top_layout.addLayout(run)
        top_layout.addWidget(self.progress)
        top_layout.addWidget(self.status)
        top_layout.addWidget(self.device_label)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(top)
        splitter.addWidget(self.plot)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self.setMinimumWidth(420)

    @property
    def training(self) -> bool:
        return self.busy

    def update_controls(self) -> None:
        busy = self.busy
        self.train_button.setEnabled(not busy and not self.form.problems())
        self.stop_button.setEnabled(busy and not self._stop.is_set())
        for w in (
            self.form,
            self.import_button,
            self.reset_button,
            self.sample_button,
            self.advise_button,
            self.layer_data,
        ):
            w.setEnabled(not busy)

    # ------------------------------------------------------------------ config files

    def import_yaml(self, path: str | Path) -> list[Problem]:
        """Fill the form from ``path``; returns (and shows) the file's problems."""
        try:
            data = config_mod.read_yaml(path)
        except ConfigError as err:
            show_error(str(err))
            return err.problems
        problems: list[Problem] = []
        cfg = from_dict(config_mod.TrainConfig, data, problems)
        unread = {p.key for p in problems}
        # Values that were read but do not fit together (e.g. a size_out that does not match
        # size_in, which the form then computes) are reported too: nothing changes silently.
        problems += [p for p in config_mod.validate(cfg) if p.key not in unread]
        self.form.set_config(cfg)
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            show_warning(
                f"{path}: {len(problems)} problem(s); fields that could not be read keep their "
                f"defaults, size_out follows size_in:\n{lines}"
            )
        else:
            show_info(f"loaded {path}")
        return problems

    def export_yaml(self, path: str | Path) -> Path | None:
        """Save the form's config to ``path`` in the established layout (refused while it has problems)."""
        problems = self.form.problems()
        if problems:
            show_error(str(ConfigError(problems, "export refused")))
            return None
        try:
            saved = config_mod.save_config(self.form.cfg, path)
        except OSError as err:
            show_error(f"could not write {path}: {err.strerror or err}")
            return None
        show_info(f"saved {saved}")
        return saved

    def reset(self) -> None:
        self.form.set_config(config_mod.TrainConfig())

    def use_sample_preset(self) -> None:
        """The CPU demo preset on the sample folder (written to the user's cache if missing)."""
        folder = ensure_sample_folder("filaments")
        runs = sample_cache_folder("filaments").parent / "checkpoints"
        self.form.set_config(config_mod.demo_config(str(folder), str(runs)))

    def apply_zoom_advice(self, advice: ZoomAdvice) -> None:
        """Set the suggested model (and zoom ratio, with its starting patch size) in the form."""
        cfg = self.form.cfg.copy()
        if advice.model == cfg.model.name and advice.zoom_ratio in (None, cfg.model.zoom_ratio):
            return
        sizes = config_mod.template(advice.model, advice.zoom_ratio or cfg.model.zoom_ratio)
        cfg.model.name, cfg.model.zoom_ratio = sizes.model.name, sizes.model.zoom_ratio
        cfg.size_in, cfg.size_out = sizes.size_in, sizes.size_out
        self.form.set_config(cfg)

    def advise_sizes(self) -> SizeAdvice | None:
        """Fill size_in, size_out and batch_size from the memory advisor (notified)."""
        from ..models.memory import MemoryBudgetError, advise, detected_free_memory, parse_memory

        cfg = self.form.cfg.copy()
        text = self.memory_box.text().strip()
        try:
            budget = parse_memory(text) if text else detected_free_memory()
            advice = advise(cfg.model.name, budget, cfg.model.zoom_ratio, cfg.nchannel)
        except MemoryBudgetError as err:
            show_error(str(err))
            return None
        cfg.size_in, cfg.size_out = list(advice.size_in), list(advice.size_out)
        cfg.loader.batch_size = advice.batch_size
        self.form.set_config(cfg)
        show_info(f"advice: {advice}")
        return advice

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import training config", "", "YAML (*.yaml *.yml)"
        )
        if path:
            self.import_yaml(path)

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export training config", "train.yaml", "YAML (*.yaml)"
        )
        if path:
            self.export_yaml(path)

    # ------------------------------------------------------------------ training

    def start_training(self) -> GeneratorWorker | None:
        """Check the config and its folders, then train in a worker thread."""
        if self.training:
            return None
        cfg = self.form.cfg.copy()  # the run keeps its own config; the form may change later
        from_layers = self.layer_data.use_layers.value
        problems = self.form.problems() or config_mod.check_paths(cfg)
        if from_layers:  # the layers replace the data folder
            problems = [p for p in problems if p.key != "loader.datafolder"]
        if problems:
            show_error(str(ConfigError(problems, "cannot train")))
            return None
        images = None
        if from_layers:
            try:
                images = images_from_layers(
                    self.layer_data.sets(), cfg.nchannel, min(cfg.nclass), cfg.size_out
                )
            except (ValueError, DataError) as err:
                show_error(str(err))
                return None
        self._stop.clear()
        self._done.clear()
        self.plot.clear()
        if cfg.preview_every_n_iter:  # adding layers mid-run would freeze napari for a moment
            self.previews.prepare(tuple(cfg.size_out))
        self.last_checkpoint = None
        self.status.setText("starting: reading the data and drawing the first patch buffer…")
        self._watch_window()
        return self.start_worker(
            run_training, cfg, self._stop, self._done, images, on_yield=self._on_event
        )

    def stop_training(self) -> None:
        """Ask the run to stop after the current batch; it saves a checkpoint first."""
        if self.training:
            self._stop.set()
            self.status.setText("stopping after this batch (saving a checkpoint)…")
            self.update_controls()

    def shutdown(self, timeout: float = _CLOSE_WAIT_S) -> bool:
        """Stop a running training and wait for its checkpoint; True when it ended in time."""
        if not self.training:
            return True
        self._stop.set()
        return self._done.wait(timeout)

    def _on_event(self, event: Event) -> None:
        self.plot.add(event)
        if isinstance(event, TrainingStarted):
            self._started(event)
        elif isinstance(event, IterationEnd):
            self._progress(event)
        elif isinstance(event, PreviewPatch):
            self.previews.show(event)
        elif isinstance(event, EpochEnd):
            self.status.setText(
                f"epoch {event.epoch}/{self._epochs} done · mean loss {event.mean_loss:.4g}"
            )
        elif isinstance(event, ValidationDone):
            ious = ", ".join(f"{v:.3f}" for v in event.iou)
            show_info(f"validation after epoch {event.epoch}: IoU {ious}")
        elif isinstance(event, CheckpointSaved):
            self.last_checkpoint = event.path
            show_info(f"checkpoint saved: {event.path}")
        elif isinstance(event, TrainingFinished):
            self.plot.flush()
            self.status.setText(
                f"training {event.reason} after {event.epoch} epoch(s), {event.iteration} iterations"
            )

    def _started(self, event: TrainingStarted) -> None:
        self._started_at = time.monotonic()
        self._first_iteration = event.start_iteration
        self._epochs = event.epochs
        self._iterations_per_epoch = event.iterations_per_epoch
        self._total_iterations = event.epochs * event.iterations_per_epoch
        self.progress.setRange(0, max(1, self._total_iterations))
        self.progress.setValue(event.start_iteration)
        self.device_label.setText(f"device: {event.device} · {event.precision}")
        self.status.setText(
            f"training on {event.n_train_images} image(s)"
            + (f", validating on {event.n_validation_images}" if event.n_validation_images else "")
        )

    def _progress(self, event: IterationEnd) -> None:
        self.progress.setValue(min(event.iteration, self._total_iterations))
        done = event.iteration - self._first_iteration
        left = max(0, self._total_iterations - event.iteration)
        eta = (time.monotonic() - self._started_at) / max(done, 1) * left
        in_epoch = event.iteration - event.epoch * self._iterations_per_epoch
        self.status.setText(
            f"epoch {event.epoch + 1}/{self._epochs} · iteration {in_epoch}/{self._iterations_per_epoch}"
            f" · loss {event.loss:.4g} · ETA {_clock(eta)}"
        )

    def _worker_finished(self) -> None:
        super()._worker_finished()
        self.plot.flush()

    # ------------------------------------------------------------------ prediction

    def preview_latest_checkpoint(self):
        """Open the prediction panel on the newest checkpoint and preview the current image."""
        from ..checkpoint import latest_checkpoint
        from .user_layers import user_images

        folder = self.form.cfg.checkpoint_dir
        path = self.last_checkpoint or (latest_checkpoint(folder) if folder else None)
        if path is None:
            show_error(f"no checkpoint yet in {folder or 'checkpoint_dir (empty)'}: train first")
            return None
        images = user_images(self.viewer)
        active = self.viewer.layers.selection.active
        layer = active if active in images else (images[0] if images else None)
        if layer is None:
            show_error("open an image to preview the checkpoint on")
            return None
        _, panel = self.viewer.window.add_plugin_dock_widget(
            "napari-cellseg-trainer", "Predict with a model"
        )
        if not panel.load_checkpoint(path):
            return None
        panel.set_image(layer)
        return panel.preview()

    # ------------------------------------------------------------------ closing napari

    def _watch_window(self) -> None:
        """Watch napari's main window for Close (a weak reference: the window owns us, not we it)."""
        window = self.window()
        if window is not self and window is not self._watched_window():
            window.installEventFilter(self)
            self._watched_window = weakref.ref(window)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        watched = getattr(self, "_watched_window", None)  # missing while Qt tears the widget down
        if (
            watched is not None
            and obj is watched()
            and event.type() == QEvent.Type.Close
            and self.training
        ):
            self.status.setText("napari is closing: stopping training and saving a checkpoint…")
            self.shutdown()
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
