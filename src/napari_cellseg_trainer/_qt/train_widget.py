"""The training panel: config form, presets, Train/Stop, progress, the loss curve, live previews.

It shows and forwards only: the config lives in the form's schema object, the training is the
core's session (``training.session``) run in a napari worker thread, and each event is drawn
here. The form scrolls vertically inside its tab, so the panel never widens the window; Train,
Stop, the progress and the loss curve stay in view below it.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .. import config as config_mod
from ..config import ConfigError, Problem
from ..data import DataError, TrainingImage, images_from_layers
from ..training import events as ev
from . import train_config
from .config_form import ConfigForm
from .layer_sets_panel import LayerSetsPanel
from .loss_plot import LossPlot
from .preview import PreviewLayers
from .train_progress import RunView
from .train_tools import ConfigTools
from .widgets import grid, push_button, push_buttons, scrolling
from .worker_panel import WorkerPanel

if TYPE_CHECKING:
    import napari

_CLOSE_WAIT_S = 120  # how long closing napari waits for the stop checkpoint
_PREVIEW_TIP = (
    "Segment the planes around the current z of the selected image with the newest checkpoint "
    "(in the Predict tab)"
)


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
        self.last_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None  # keep_best: Preview prefers it
        self._offered: tuple | None = None
        self._watched_window: weakref.ref[QObject] = lambda: None  # type: ignore[assignment]

        self.form = ConfigForm(config_mod.TrainConfig)
        self.form.changed.connect(self.update_controls)
        advice = functools.partial(train_config.apply_zoom_advice, self.form)
        self.layer_data = LayerSetsPanel(napari_viewer, on_advice=advice)
        self.tools = ConfigTools(self.form, self.layer_data, self)
        self.plot = LossPlot()
        self.previews = PreviewLayers(napari_viewer)
        self._build()
        self.view = RunView(self.progress, self.status, self.device_label, self.plot, self.previews)
        napari_viewer.layers.events.inserted.connect(self.update_controls)
        napari_viewer.layers.events.removed.connect(self.update_controls)
        self.update_controls()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        buttons = push_buttons(
            self,
            ("Train", self.start_training, "Start training"),
            ("Stop", self.stop_training, "Stop after this batch and save a checkpoint"),
            ("Preview checkpoint", self.preview_latest_checkpoint, _PREVIEW_TIP),
        )
        self.train_button, self.stop_button, self.preview_button = buttons
        self.offer = QWidget(self)  # with no data folder: train on the open layers
        self.offer_label = QLabel("", self.offer)
        self.offer_label.setWordWrap(True)  # layer names are long: wrapped, never widening
        self.offer_button = push_button(
            self.offer,
            "Train on these layers",
            self.train_on_suggested_layers,
            "No data folder is set: train on the open image and its labels instead",
        )
        offer = QVBoxLayout(self.offer)
        offer.setContentsMargins(0, 0, 0, 0)
        offer.addWidget(self.offer_label)
        offer.addWidget(self.offer_button)
        self.offer.setVisible(False)
        self.status.setText("ready")
        self.device_label = QLabel("device: chosen when training starts", self)
        self.device_label.setWordWrap(True)

        data_box = QCollapsible("Training data from layers", self)
        data_box.setDuration(0)
        data_box.addWidget(self.layer_data)
        content = scrolling([self.tools, self.form, data_box, self.offer], self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(content, 3)
        # below the scrolling form: Train, Stop and how the run goes stay in view
        layout.addLayout(grid(buttons))
        for w in (self.progress, self.status, self.device_label):
            layout.addWidget(w)
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
        self.tools.set_busy(busy)
        for w in (self.form, self.layer_data):
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
            self.offer_label.setText(
                f"No data folder yet: train on the open layers {image.name!r} (image) and "
                f"{labels.name!r} (ground truth)?"
            )
        self.offer.setVisible(pair is not None)
        self._offered = pair

    def train_on_suggested_layers(self) -> WorkerBase | None:
        """Train on the image and labels offered (the sets panel shows them)."""
        if self._offered is None:
            return None
        self.layer_data.use_pair(*self._offered)
        if not self.form.cfg.checkpoint_dir.strip():
            self.form.set_value("checkpoint_dir", str(_default_runs()))
        self.form.set_value("run_subfolder", True)
        return self.start_training()

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
        self.view.begin(tuple(cfg.size_out) if cfg.preview_every_n_iter else None)
        self.last_checkpoint = self.best_checkpoint = None
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
        if isinstance(event, ev.CheckpointSaved) and event.best:
            self.best_checkpoint = event.path
        elif isinstance(event, ev.CheckpointSaved):
            self.last_checkpoint = event.path
        self.view.show(event)

    def _worker_finished(self) -> None:
        super()._worker_finished()
        self.plot.flush()

    # ------------------------------------------------------------------ prediction

    def preview_latest_checkpoint(self) -> bool:
        """Ask for a preview of the current image with the newest checkpoint (Predict tab)."""
        from ..training.folders import latest_run_checkpoint
        from .user_layers import user_images

        folder = self.form.cfg.checkpoint_dir
        path = (
            self.best_checkpoint
            or self.last_checkpoint
            or (latest_run_checkpoint(folder) if folder else None)
        )
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
