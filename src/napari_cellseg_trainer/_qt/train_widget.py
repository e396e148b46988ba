"""The training panel: config form, presets, Train/Stop, progress, the loss curve, live previews.

It shows and forwards only: the config lives in the form's schema object, the training is the
core's session (``training.session``) run in a napari worker thread, and each event is drawn
here. Everything scrolls vertically inside its tab, so the panel never widens the window.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
)
from superqt import QCollapsible

from .. import config as config_mod
from ..config import ConfigError, Problem
from ..data import DataError, TrainingImage, ZoomAdvice, images_from_layers
from ..training import events as ev
from . import train_config
from .config_form import ConfigForm
from .layer_sets_panel import LayerSetsPanel
from .loss_plot import LossPlot
from .preview import PreviewLayers
from .widgets import clock, push_button, scrolling
from .worker_panel import WorkerPanel

if TYPE_CHECKING:
    import napari

_CLOSE_WAIT_S = 120  # how long closing napari waits for the stop checkpoint


def run_training(
    cfg: config_mod.TrainConfig,
    stop: threading.Event,
    done: threading.Event,
    images: list[TrainingImage] | None = None,
) -> Iterator[ev.Event]:
    """The worker's generator: the session every front end runs, beside napari.

    ``done`` is set in the worker thread when the run has ended (checkpoint written), so closing
    napari can wait for it without needing the GUI thread's event loop.
    """
    from ..training.session import recorded_training

    try:
        yield from recorded_training(cfg, stop, images, beside_gui=True)
    finally:
        done.set()


def run_checks(cfg: config_mod.TrainConfig) -> list[Problem]:
    """What must hold before a run: its folders and free space (the CLI's checks)."""
    from ..training.folders import run_folder_problems

    return config_mod.check_paths(cfg) + run_folder_problems(cfg)


class TrainWidget(WorkerPanel):
    """Edit the training config, train, watch the loss and the predicted patches."""

    failed = "training failed"
    preview_requested = Signal(object, object)  # (checkpoint path, image layer)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._started_at = 0.0
        self._start_event: ev.TrainingStarted | None = None
        self.last_checkpoint: Path | None = None
        self._watched_window: weakref.ref[QObject] = lambda: None  # type: ignore[assignment]

        self.form = ConfigForm(config_mod.TrainConfig)
        self.form.changed.connect(self.update_controls)
        self.plot = LossPlot()
        self.previews = PreviewLayers(napari_viewer)
        self.layer_data = LayerSetsPanel(napari_viewer, on_advice=self.apply_zoom_advice)
        self._build()
        self._show = {
            ev.TrainingStarted: self._started,
            ev.IterationEnd: self._progress,
            ev.PreviewPatch: self.previews.show,
            ev.EpochEnd: self._epoch,
            ev.ValidationDone: self._validation,
            ev.HoldoutScore: self._holdout,
            ev.Notice: self._notice,
            ev.CheckpointSaved: self._saved,
            ev.TrainingFinished: self._finished,
        }
        napari_viewer.layers.events.inserted.connect(self.update_controls)
        napari_viewer.layers.events.removed.connect(self.update_controls)
        self.update_controls()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        b = push_button
        self.import_button = b(self, "Import…", self._ask_import, "Fill the form from a YAML")
        self.export_button = b(self, "Export…", self._ask_export, "Save the form as a YAML")
        self.reset_button = b(self, "Reset", self.reset, "Every field back to its default")
        self.sample_button = b(
            self,
            "Sample preset",
            self.use_sample_preset,
            "Train on the embedded sample data with small patches that train visibly on a CPU",
        )
        self.quick_button = b(
            self,
            "Quick preset",
            self.use_quick_preset,
            "Settings chosen for this machine (a few seconds' probe of real steps) for a good "
            "model of your data within the minutes given",
        )
        self.minutes_box = QDoubleSpinBox(self)
        self.minutes_box.setRange(1, 100_000)
        self.minutes_box.setValue(10)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setToolTip("The time budget of the quick preset (its minutes field)")
        self.advise_button = b(
            self,
            "Advise sizes",
            self.advise_sizes,
            "The largest size_in and a batch_size whose step fits the memory (the GPU's free "
            "memory, or half the RAM; or the number in the box), with the time it takes",
        )
        self.memory_box = QLineEdit(self)
        self.memory_box.setPlaceholderText("memory, e.g. 8GB")
        self.memory_box.setToolTip("Memory budget for Advise sizes; empty: this machine's")
        self.train_button = b(self, "Train", self.start_training, "Start training")
        self.stop_button = b(
            self, "Stop", self.stop_training, "Stop after this batch and save a checkpoint"
        )
        self.preview_button = b(
            self,
            "Preview checkpoint",
            self.preview_latest_checkpoint,
            "Segment the planes around the current z of the selected image with the newest "
            "checkpoint (in the Predict tab)",
        )
        self.offer_button = b(self, "", self.train_on_suggested_layers, "")
        self.offer_button.setVisible(False)
        self.progress = QProgressBar(self)
        self.status.setText("ready")
        self.device_label = QLabel("device: chosen when training starts", self)
        self.device_label.setWordWrap(True)

        grid = QGridLayout()
        row = (self.import_button, self.export_button, self.reset_button)
        for i, w in enumerate(row):
            grid.addWidget(w, 0, i)
        grid.addWidget(self.sample_button, 1, 0)
        grid.addWidget(self.quick_button, 1, 1)
        grid.addWidget(self.minutes_box, 1, 2)
        grid.addWidget(self.memory_box, 2, 0, 1, 2)
        grid.addWidget(self.advise_button, 2, 2)
        data_box = QCollapsible("Training data from layers", self)
        data_box.setDuration(0)
        data_box.addWidget(self.layer_data)
        run = QHBoxLayout()
        for w in (self.train_button, self.stop_button, self.preview_button):
            run.addWidget(w)
        content = scrolling(
            [grid, self.form, data_box, self.offer_button, run, self.progress, self.status],
            self,
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(content, 3)
        layout.addWidget(self.device_label)
        layout.addWidget(self.plot, 2)

    @property
    def training(self) -> bool:
        return self.busy

    def update_controls(self, *_: object) -> None:
        busy = self.busy
        problems = self.form.problems()
        if self.layer_data.use_layers.value:
            problems = [p for p in problems if p.key != "loader.datafolder"]
        self.train_button.setEnabled(not busy and not problems)
        waiting = ", ".join(dict.fromkeys(p.key for p in problems))
        self.train_button.setToolTip(f"Train waits for: {waiting}" if waiting else "Start training")
        self.stop_button.setEnabled(busy and not self._stop.is_set())
        for w in (self.form, self.import_button, self.reset_button, self.sample_button):
            w.setEnabled(not busy)
        for w in (self.quick_button, self.advise_button, self.layer_data):
            w.setEnabled(not busy)
        self._offer_layers(problems)

    def _offer_layers(self, problems: list[Problem]) -> None:
        """With no usable data folder, offer the image and labels that are open (one click)."""
        pair = None
        no_folder = any(p.key == "loader.datafolder" for p in problems)
        if no_folder and not self.busy and not self.layer_data.use_layers.value:
            pair = self.layer_data.suggest_pair()
        if pair is not None:
            image, labels = pair
            self.offer_button.setText(f"Train on layers {image.name!r} + {labels.name!r}")
            self.offer_button.setToolTip(
                "No data folder is set: train on these two open layers instead"
            )
        self.offer_button.setVisible(pair is not None)
        self._offered = pair

    def train_on_suggested_layers(self) -> WorkerBase | None:
        """Train on the image and labels offered (the sets panel shows them)."""
        pair = getattr(self, "_offered", None)
        if pair is None:
            return None
        self.layer_data.use_pair(*pair)
        if not self.form.cfg.checkpoint_dir.strip():
            self.form.set_value("checkpoint_dir", str(_default_runs()))
        self.form.set_value("run_subfolder", True)
        return self.start_training()

    # ------------------------------------------------------------------ config

    def import_yaml(self, path: str | Path) -> list[Problem]:
        problems = train_config.import_yaml(self.form, path)
        self.update_controls()
        return problems

    def export_yaml(self, path: str | Path) -> Path | None:
        return train_config.export_yaml(self.form, path, self.layer_data)

    def reset(self) -> None:
        self.form.set_config(config_mod.TrainConfig())

    def use_sample_preset(self) -> None:
        self.form.set_config(train_config.sample_preset())

    def use_quick_preset(self) -> WorkerBase | None:
        """Probe this machine (a worker: it takes seconds), then fill the form and explain."""
        shape = self._smallest_image()
        self.status.setText("quick preset: timing a few real steps on this machine…")
        return self.start_worker(
            train_config.quick,
            self.form.cfg.copy(),
            shape,
            float(self.minutes_box.value()),
            on_return=self._preset_chosen,
        )

    def _preset_chosen(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        keep = self.form.cfg
        cfg.loader.datafolder = keep.loader.datafolder or cfg.loader.datafolder
        cfg.checkpoint_dir = keep.checkpoint_dir or cfg.checkpoint_dir
        self.form.set_config(cfg)
        self.status.setText(line)

    def _smallest_image(self) -> tuple[int, int, int] | None:
        """The smallest training image (z, y, x): of the layer sets, else of the data folder."""
        shapes = []
        if self.layer_data.use_layers.value:
            try:
                shapes = [s.label.shape for s in self.layer_data.sets()]
            except ValueError:
                shapes = []
        elif self.form.cfg.loader.datafolder:
            from ..data.folder import image_shapes

            shapes = image_shapes(self.form.cfg.loader.datafolder)
        return min(shapes, key=lambda s: s[0] * s[1] * s[2]) if shapes else None

    def apply_zoom_advice(self, advice: ZoomAdvice) -> None:
        cfg = self.form.cfg.copy()
        if train_config.zoom_advice_applied(cfg, advice):
            self.form.set_config(cfg)

    def advise_sizes(self) -> WorkerBase | None:
        """Fill size_in, size_out and batch_size from the advisor, with the time (a worker)."""
        self.status.setText("advising: the memory model, and a probe of real steps…")
        return self.start_worker(
            train_config.advise,
            self.form.cfg.copy(),
            self.memory_box.text(),
            on_return=self._advised,
        )

    def _advised(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        self.form.set_config(cfg)
        self.status.setText(line)
        show_info("sizes set by the advisor (details in the panel)")

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

    def start_training(self) -> WorkerBase | None:
        """Check the config, its folders and the data, then train in a worker thread."""
        if self.busy:
            return None
        self.form.reveal_required()
        cfg = self.form.cfg.copy()  # the run keeps its own config; the form may change later
        from_layers = self.layer_data.use_layers.value
        problems = self.form.problems() or run_checks(cfg)
        if from_layers:  # the layers replace the data folder
            problems = [p for p in problems if p.key != "loader.datafolder"]
        if problems:
            show_error(str(ConfigError(problems, "cannot train")))
            return None
        images = None
        if from_layers:
            try:
                recipe = 0 if cfg.normalization is None else cfg.normalization
                images = images_from_layers(
                    self.layer_data.sets(), cfg.nchannel, min(cfg.nclass), cfg.size_out, recipe
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
        if self.busy:
            self._stop.set()
            self.status.setText("stopping after this batch (saving a checkpoint)…")
            self.update_controls()

    def shutdown(self, timeout: float = _CLOSE_WAIT_S) -> bool:
        """Stop a running training and wait for its checkpoint; True when it ended in time."""
        if not self.busy:
            return True
        self._stop.set()
        return self._done.wait(timeout)

    def _on_event(self, event: ev.Event) -> None:
        self.plot.add(event)
        show: Callable | None = self._show.get(type(event))
        if show is not None:
            show(event)

    def _started(self, event: ev.TrainingStarted) -> None:
        self._started_at = time.monotonic()
        self._start_event = event
        total = event.epochs * event.iterations_per_epoch
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * event.start_iteration / max(total, 1)))
        held = f", a held-out slab in {event.n_holdout_slabs}" if event.n_holdout_slabs else ""
        self.device_label.setText(
            f"device: {event.device} · {event.precision} · raw {event.normalization}"
        )
        self.device_label.setToolTip(f"writing to {event.folder}")
        self.status.setText(f"training on {event.n_train_images} image(s){held}")

    def _progress(self, event: ev.IterationEnd) -> None:
        start = self._start_event
        assert start is not None
        elapsed = time.monotonic() - self._started_at
        total = start.epochs * start.iterations_per_epoch
        done = (event.iteration - start.start_iteration) / max(total - start.start_iteration, 1)
        left = elapsed / max(done, 1e-9) * (1 - done)
        if start.minutes:  # the budget ends the run unless the epochs do first
            budget = start.minutes * 60
            done = max(done, elapsed / budget)
            left = min(left, max(0.0, budget - elapsed))
        self.progress.setValue(int(1000 * min(done, 1.0)))
        in_epoch = event.iteration - event.epoch * start.iterations_per_epoch
        self.status.setText(
            f"epoch {event.epoch + 1}/{start.epochs} · iteration {in_epoch}/"
            f"{start.iterations_per_epoch} · loss {event.loss:.4g} · ETA {clock(left)}"
        )

    def _epoch(self, event: ev.EpochEnd) -> None:
        epochs = self._start_event.epochs if self._start_event else "?"
        self.status.setText(f"epoch {event.epoch}/{epochs} done · mean loss {event.mean_loss:.4g}")

    def _validation(self, event: ev.ValidationDone) -> None:
        ious = ", ".join(f"{v:.3f}" for v in event.iou)
        show_info(f"validation after epoch {event.epoch}: IoU {ious}")

    def _holdout(self, event: ev.HoldoutScore) -> None:
        self.status.setText(
            f"epoch {event.epoch}: held-out IoU {event.iou:.3f} at 0.5 (best {event.best:.3f} at "
            f"epoch {event.best_epoch}); {event.iou_at_threshold:.3f} at {event.threshold:.2f}"
        )

    def _notice(self, event: ev.Notice) -> None:
        (show_warning if event.level == "warning" else show_info)(event.text)

    def _saved(self, event: ev.CheckpointSaved) -> None:
        self.last_checkpoint = event.path
        self.status.setToolTip(str(event.path))
        show_info(f"checkpoint saved: {event.path.name} (in {event.path.parent.name})")

    def _finished(self, event: ev.TrainingFinished) -> None:
        self.plot.flush()
        why = f": {event.detail}" if event.detail else ""
        self.status.setText(
            f"training {event.reason}{why} after {event.epoch} epoch(s), {event.iteration} "
            "iterations"
        )

    def _worker_finished(self) -> None:
        super()._worker_finished()
        self.plot.flush()

    # ------------------------------------------------------------------ prediction

    def preview_latest_checkpoint(self) -> bool:
        """Ask for a preview of the current image with the newest checkpoint (Predict tab)."""
        from ..training.folders import latest_run_checkpoint
        from .user_layers import user_images

        folder = self.form.cfg.checkpoint_dir
        path = self.last_checkpoint or (latest_run_checkpoint(folder) if folder else None)
        if path is None:
            show_error(f"no checkpoint yet in {folder or 'checkpoint_dir (empty)'}: train first")
            return False
        images = user_images(self.viewer)
        active = self.viewer.layers.selection.active
        layer = active if active in images else (images[0] if images else None)
        if layer is None:
            show_error("open an image to preview the checkpoint on")
            return False
        self.preview_requested.emit(path, layer)
        return True

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
            and self.busy
        ):
            self.status.setText("napari is closing: stopping training and saving a checkpoint…")
            self.shutdown()
        return False


def _default_runs() -> Path:
    from ..data.sample import sample_cache_folder

    return sample_cache_folder("filaments").parent / "runs"
