"""The training panel's config tools: import, export, reset, the presets and the size advisor.

Shows and forwards only: the files, the presets and the sizes come from :mod:`.train_config`
(which calls the core); the probes that take seconds run in the panel's worker thread. The
tools take the form, the layer sets and a :class:`.worker_panel.Runner`, not the panel.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog, QLabel, QLineEdit, QWidget

from .. import config as config_mod
from ..config import Problem
from ..errors import UserInputError
from . import train_config
from .widgets import grid, push_buttons

if TYPE_CHECKING:
    from .config_form import ConfigForm
    from .layer_sets_panel import LayerSetsPanel
    from .worker_panel import Runner

_SAMPLE_TIP = "Train on the embedded sample data with small patches that train visibly on a CPU"
_QUICK_TIP = (
    "Settings chosen for this machine (a few seconds' probe of real steps) for a good model of "
    "your data within the minutes given"
)
_START_TIP = (
    "Where training starts: the starter model that fits the model (a generalist that a few "
    "minutes of your labels adapt), random weights, or a checkpoint of yours (finetune_from)"
)
START_CHOICES = ("starter model", "random weights", "a checkpoint…")
_ADVISE_TIP = (
    "The largest size_in and a batch_size whose step fits the memory (the GPU's free memory, "
    "or half the RAM; or the number in the box), with the time it takes"
)


class ConfigTools(QWidget):
    """Import… Export… Reset, Sample preset, Quick preset (minutes), Advise sizes (memory)."""

    def __init__(self, form: ConfigForm, layer_data: LayerSetsPanel, runner: Runner) -> None:
        super().__init__()
        self.form, self.layer_data, self.runner = form, layer_data, runner
        buttons = push_buttons(
            self,
            ("Import…", self._ask_import, "Fill the form from a YAML"),
            ("Export…", self._ask_export, "Save the form as a YAML"),
            ("Reset", self.reset, "Every field back to its default"),
            ("Sample preset", self.use_sample_preset, _SAMPLE_TIP),
            ("Quick preset", self.use_quick_preset, _QUICK_TIP),
            ("Advise sizes", self.advise_sizes, _ADVISE_TIP),
        )
        self.import_button, self.export_button, self.reset_button = buttons[:3]
        self.sample_button, self.quick_button, self.advise_button = buttons[3:]
        self.minutes_box = QDoubleSpinBox(self)
        self.minutes_box.setRange(1, 100_000)
        self.minutes_box.setValue(10)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setToolTip("The time budget of the quick preset (its minutes field)")
        self.memory_box = QLineEdit(self)
        self.memory_box.setPlaceholderText("memory, e.g. 8GB")
        self.memory_box.setToolTip("Memory budget for Advise sizes; empty: this machine's")
        self.start_box = QComboBox(self)
        self.start_box.addItems(START_CHOICES)
        self.start_box.setToolTip(_START_TIP)
        self.start_box.activated.connect(self._start_chosen)
        self._start = config_mod.STARTER  # or scratch, or a checkpoint's path
        layout = grid([*buttons[:5], self.minutes_box], 3)  # the minutes beside Quick preset
        layout.addWidget(self.memory_box, 2, 0, 1, 2)
        layout.addWidget(self.advise_button, 2, 2)
        start_label = QLabel("Start from", self)
        start_label.setToolTip(_START_TIP)
        layout.addWidget(start_label, 3, 0)
        layout.addWidget(self.start_box, 3, 1, 1, 2)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setLayout(layout)

    def set_busy(self, busy: bool) -> None:
        """Everything but Export waits while a worker runs (Export only reads the form)."""
        for w in (self.import_button, self.reset_button, self.sample_button):
            w.setEnabled(not busy)
        for w in (self.quick_button, self.advise_button, self.minutes_box, self.memory_box):
            w.setEnabled(not busy)
        self.start_box.setEnabled(not busy)

    # ------------------------------------------------------------------ files

    def import_yaml(self, path: str | Path) -> list[Problem]:
        return train_config.import_yaml(self.form, path)

    def export_yaml(self, path: str | Path) -> Path | None:
        return train_config.export_yaml(self.form, path, self.layer_data)

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

    # ------------------------------------------------------------------ presets

    def reset(self) -> None:
        self.form.set_config(config_mod.TrainConfig())

    def use_sample_preset(self) -> None:
        self.form.set_config(train_config.sample_preset())

    def start_from(self, start: str) -> None:
        """``starter``, ``scratch`` or a checkpoint's path: into the form, and said."""
        self._start = start
        self.start_box.setCurrentIndex(_choice(start))
        self.runner.status.setText(train_config.start_from(self.form, start))

    def _start_chosen(self, index: int) -> None:
        if index < 2:
            self.start_from((config_mod.STARTER, config_mod.SCRATCH)[index])
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Start from a checkpoint", "", "Checkpoints (*.pytorch *.pth *.pt *.zip)"
        )
        if path:
            self.start_from(path)
        else:  # cancelled: the choice stays what it was
            self.start_box.setCurrentIndex(_choice(self._start))

    def use_quick_preset(self) -> WorkerBase | None:
        """Probe this machine (a worker: it takes seconds), then fill the form and explain."""
        self.runner.status.setText("quick preset: timing a few real steps on this machine…")
        return self.runner.start_worker(
            train_config.quick,
            self.form.cfg.copy(),
            self._smallest_image(),
            float(self.minutes_box.value()),
            self._start,
            on_return=self._preset_chosen,
        )

    def _preset_chosen(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        keep = self.form.cfg
        cfg.loader.datafolder = keep.loader.datafolder or cfg.loader.datafolder
        cfg.checkpoint_dir = keep.checkpoint_dir or cfg.checkpoint_dir
        self.form.set_config(cfg)
        self.runner.status.setText(line)

    def _smallest_image(self) -> tuple[int, int, int] | None:
        """The smallest training image (z, y, x): of the layer sets, else of the data folder."""
        layer_data, cfg = self.layer_data, self.form.cfg
        shapes = []
        if layer_data.use_layers.value:
            try:
                shapes = [s.label.shape for s in layer_data.sets()]
            except ValueError:
                shapes = []
        elif cfg.loader.datafolder:
            from ..data.folder import image_shapes

            shapes = image_shapes(cfg.loader.datafolder)
        return min(shapes, key=lambda s: s[0] * s[1] * s[2]) if shapes else None

    # ------------------------------------------------------------------ sizes

    def advise_sizes(self) -> WorkerBase | None:
        """Fill size_in, size_out and batch_size from the advisor, with the time (a worker)."""
        try:
            budget = train_config.memory_budget(self.memory_box.text())
        except UserInputError as err:
            show_error(str(err))
            return None
        self.runner.status.setText("advising: the memory model, and a probe of real steps…")
        return self.runner.start_worker(
            train_config.advise, self.form.cfg.copy(), budget, on_return=self._advised
        )

    def _advised(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        self.form.set_config(cfg)
        self.runner.status.setText(line)
        show_info("sizes set by the advisor (details in the panel)")


def _choice(start: str) -> int:
    """The index in START_CHOICES of ``starter``, ``scratch`` or a checkpoint's path."""
    return {config_mod.STARTER: 0, config_mod.SCRATCH: 1}.get(start, 2)
