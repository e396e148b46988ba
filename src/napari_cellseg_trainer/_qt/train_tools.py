"""The training panel's config tools: import, export, reset, the presets and the size advisor.

Shows and forwards only: the files, the presets and the sizes come from :mod:`.train_config`
(which calls the core); the probes that take seconds run in the panel's worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QDoubleSpinBox, QFileDialog, QGridLayout, QLineEdit, QWidget

from .. import config as config_mod
from ..config import Problem
from ..data import ZoomAdvice
from ..errors import UserInputError
from . import train_config
from .widgets import push_button

if TYPE_CHECKING:
    from .train_widget import TrainWidget


class ConfigTools(QWidget):
    """Import… Export… Reset, Sample preset, Quick preset (minutes), Advise sizes (memory)."""

    def __init__(self, panel: TrainWidget) -> None:
        super().__init__(panel)
        self.panel = panel
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
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        for i, w in enumerate((self.import_button, self.export_button, self.reset_button)):
            grid.addWidget(w, 0, i)
        grid.addWidget(self.sample_button, 1, 0)
        grid.addWidget(self.quick_button, 1, 1)
        grid.addWidget(self.minutes_box, 1, 2)
        grid.addWidget(self.memory_box, 2, 0, 1, 2)
        grid.addWidget(self.advise_button, 2, 2)

    def set_busy(self, busy: bool) -> None:
        """Everything but Export waits while a worker runs (Export only reads the form)."""
        for w in (self.import_button, self.reset_button, self.sample_button):
            w.setEnabled(not busy)
        for w in (self.quick_button, self.advise_button, self.minutes_box, self.memory_box):
            w.setEnabled(not busy)

    # ------------------------------------------------------------------ files

    def import_yaml(self, path: str | Path) -> list[Problem]:
        problems = train_config.import_yaml(self.panel.form, path)
        self.panel.update_controls()
        return problems

    def export_yaml(self, path: str | Path) -> Path | None:
        return train_config.export_yaml(self.panel.form, path, self.panel.layer_data)

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
        self.panel.form.set_config(config_mod.TrainConfig())

    def use_sample_preset(self) -> None:
        self.panel.form.set_config(train_config.sample_preset())

    def use_quick_preset(self) -> WorkerBase | None:
        """Probe this machine (a worker: it takes seconds), then fill the form and explain."""
        panel = self.panel
        panel.status.setText("quick preset: timing a few real steps on this machine…")
        return panel.start_worker(
            train_config.quick,
            panel.form.cfg.copy(),
            self._smallest_image(),
            float(self.minutes_box.value()),
            on_return=self._preset_chosen,
        )

    def _preset_chosen(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        keep = self.panel.form.cfg
        cfg.loader.datafolder = keep.loader.datafolder or cfg.loader.datafolder
        cfg.checkpoint_dir = keep.checkpoint_dir or cfg.checkpoint_dir
        self.panel.form.set_config(cfg)
        self.panel.status.setText(line)

    def _smallest_image(self) -> tuple[int, int, int] | None:
        """The smallest training image (z, y, x): of the layer sets, else of the data folder."""
        layer_data, cfg = self.panel.layer_data, self.panel.form.cfg
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

    def apply_zoom_advice(self, advice: ZoomAdvice) -> None:
        cfg = self.panel.form.cfg.copy()
        if train_config.zoom_advice_applied(cfg, advice):
            self.panel.form.set_config(cfg)

    # ------------------------------------------------------------------ sizes

    def advise_sizes(self) -> WorkerBase | None:
        """Fill size_in, size_out and batch_size from the advisor, with the time (a worker)."""
        try:
            budget = train_config.memory_budget(self.memory_box.text())
        except UserInputError as err:
            show_error(str(err))
            return None
        self.panel.status.setText("advising: the memory model, and a probe of real steps…")
        return self.panel.start_worker(
            train_config.advise, self.panel.form.cfg.copy(), budget, on_return=self._advised
        )

    def _advised(self, result: tuple[config_mod.TrainConfig, str]) -> None:
        cfg, line = result
        self.panel.form.set_config(cfg)
        self.panel.status.setText(line)
        show_info("sizes set by the advisor (details in the panel)")
