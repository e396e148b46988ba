"""The live loss-curve dock: the engine's LossCurve figure inside a Qt canvas."""

from __future__ import annotations

import time
from pathlib import Path

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ..training.events import Event
from ..training.plot import LossCurve, LossHistory

_MIN_REDRAW_S = 0.25  # redraws are throttled: a fast run must not flood the GUI thread


class LossPlot(QWidget):
    """Iteration loss, epoch mean and validation IoU, updated as events arrive; savable as PNG."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = LossHistory()
        self.canvas = FigureCanvasQTAgg(Figure(figsize=(4, 2.6), layout="constrained"))
        self.curve = LossCurve(self.canvas.figure)
        self.log_box = QCheckBox("log scale", self)
        self.log_box.setChecked(True)
        self.log_box.toggled.connect(lambda _: self.redraw())
        self.save_button = QPushButton("Save PNG…", self)
        self.save_button.clicked.connect(self._ask_save)
        bar = QHBoxLayout()
        bar.addWidget(self.log_box)
        bar.addStretch(1)
        bar.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        layout.addLayout(bar)
        self.canvas.setMinimumHeight(200)
        self._last_draw = 0.0
        self._pending = False

    def add(self, event: Event) -> None:
        """Take in an event; redraw at most every quarter second (and always on epoch ends)."""
        if not self.history.add(event):
            return
        self._pending = True
        now = time.monotonic()
        if now - self._last_draw >= _MIN_REDRAW_S or type(event).__name__ != "IterationEnd":
            self.redraw()

    def redraw(self) -> None:
        self.curve.update(self.history, self.log_box.isChecked())
        self.canvas.draw_idle()
        self._last_draw = time.monotonic()
        self._pending = False

    def flush(self) -> None:
        """Draw anything held back by the throttle (at the end of a run)."""
        if self._pending:
            self.redraw()

    def clear(self) -> None:
        self.history.clear()
        self.redraw()

    def save_png(self, path: str | Path) -> Path:
        self.curve.update(self.history, self.log_box.isChecked())
        self.canvas.figure.savefig(path, dpi=120)
        return Path(path)

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save loss curve", "loss_curve.png", "PNG (*.png)"
        )
        if path:
            self.save_png(path)
