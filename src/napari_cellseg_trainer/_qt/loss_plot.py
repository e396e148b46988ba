"""The live loss-curve dock: the engine's LossCurve figure, drawn off napari's GUI thread.

Drawing the figure costs matplotlib 50-250 ms (laying out the tick labels, mostly): done in the
GUI thread at every iteration it made napari stutter while training (``bench/bench_gui.py``). A
background thread draws the newest history with Agg into an image; the GUI thread only paints
that image. Requests that arrive while a drawing is under way are merged: only the newest is drawn.
matplotlib itself is imported in that thread, so opening the panel does not wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QSize, Signal
from qtpy.QtGui import QImage, QPainter
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..training.events import Event
from ..training.plot import LossCurve, LossHistory
from .widgets import push_button

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

_MIN_REDRAW_S = 0.25  # redraws are throttled: a fast run must not keep the drawing thread busy
_DPI = 100
_log = logging.getLogger(__name__)


class LossPlot(QWidget):
    """Iteration loss, epoch mean and validation IoU, updated as events arrive; savable as PNG."""

    _drawn = Signal(QImage)  # emitted by the drawing thread; Qt queues it to the GUI thread

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = LossHistory()
        self.view = _ImageView(self)
        self.log_box = QCheckBox("log scale", self)
        self.log_box.setChecked(True)
        self.log_box.toggled.connect(lambda _: self.redraw())
        self.save_button = push_button(self, "Save PNG…", self._ask_save, "Save the loss curve")
        bar = QHBoxLayout()
        bar.addWidget(self.log_box)
        bar.addStretch(1)
        bar.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        layout.addLayout(bar)
        self._last_draw = 0.0
        self._pending = False
        self._drawn.connect(self._show)
        self._drawer = _Drawer(self._deliver)
        drawer = self._drawer  # not self: the lambda must not keep the widget alive
        self.destroyed.connect(lambda *_: drawer.close())
        self.view.resized.connect(self.redraw)

    def add(self, event: Event) -> None:
        """Take in an event; redraw at most every quarter second (and always on epoch ends)."""
        if not self.history.add(event):
            return
        self._pending = True
        now = time.monotonic()
        if now - self._last_draw >= _MIN_REDRAW_S or type(event).__name__ != "IterationEnd":
            self.redraw()

    def redraw(self) -> None:
        """Ask the drawing thread for the current history at the view's size."""
        size = self.view.size()
        ratio = self.view.devicePixelRatioF()
        self._drawer.request(
            self.history.copy(), self.log_box.isChecked(), size.width(), size.height(), ratio
        )
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
        """The curve as the CLI saves it (its own figure: the drawing thread keeps the live one)."""
        curve = LossCurve()
        curve.update(self.history, self.log_box.isChecked())
        curve.figure.savefig(path, dpi=120)
        return Path(path)

    def _deliver(self, image: QImage) -> None:  # in the drawing thread
        try:
            self._drawn.emit(image)
        except RuntimeError:  # the widget was deleted (napari closed) while drawing
            self._drawer.close()

    def _show(self, image: QImage) -> None:
        self.view.set_image(image)

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save loss curve", "loss_curve.png", "PNG (*.png)"
        )
        if path:
            self.save_png(path)


class _ImageView(QWidget):
    """Paints the newest drawn image; says when its size changes (a new drawing is due)."""

    resized = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(400, 260)

    def set_image(self, image: QImage) -> None:
        self._image = image
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        if self._image is not None:
            QPainter(self).drawImage(0, 0, self._image)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self.resized.emit()


class _Drawer:
    """One daemon thread that draws the newest requested curve into a QImage."""

    def __init__(self, deliver) -> None:
        self._deliver = deliver
        self._wake = threading.Condition()
        self._request: tuple | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="loss-plot", daemon=True)
        self._thread.start()

    def request(
        self, history: LossHistory, log_scale: bool, width: int, height: int, ratio: float
    ) -> None:
        with self._wake:
            # a hidden view may be tiny: draw at a legible size, ready for when it is shown
            self._request = (history, log_scale, max(width, 300), max(height, 200), ratio)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _run(self) -> None:
        # matplotlib is imported here, in this thread: the panel opens 0.5 s sooner without it
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(layout="constrained")
        canvas = FigureCanvasAgg(figure)
        curve = LossCurve(figure)
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                (history, log_scale, width, height, ratio), self._request = self._request, None
            try:
                image = _draw(figure, canvas, curve, history, log_scale, width, height, ratio)
            except Exception:  # a failed drawing must not end the thread: the next may succeed
                _log.exception("drawing the loss curve failed")
                continue
            self._deliver(image)


def _draw(
    figure: Figure,
    canvas: FigureCanvasAgg,
    curve: LossCurve,
    history: LossHistory,
    log_scale: bool,
    width: int,
    height: int,
    ratio: float,
) -> QImage:
    figure.set_dpi(_DPI * ratio)
    figure.set_size_inches(width / _DPI, height / _DPI)
    curve.update(history, log_scale)
    canvas.draw()
    rgba = canvas.buffer_rgba()
    image = QImage(bytes(rgba), rgba.shape[1], rgba.shape[0], QImage.Format.Format_RGBA8888)
    image = image.copy()  # own the pixels
    image.setDevicePixelRatio(ratio)
    return image
