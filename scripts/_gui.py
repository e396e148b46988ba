"""Helpers for the scripts that drive napari under a display (screenshots)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QApplication

SIZES = ("1280x800", "1600x1000")  # a laptop screen and a desktop one


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Process Qt events until ``condition()`` holds or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.05)
    return False


def count_previews(panel) -> list:
    """A list that grows by one with every preview patch the training panel shows."""
    from napari_cellseg_trainer.training.events import PreviewPatch

    shown: list = []
    show = panel.view.show

    def counting(event) -> None:
        if isinstance(event, PreviewPatch):
            shown.append(1)
        show(event)

    panel.view.show = counting
    return shown


def window_size(text: str) -> tuple[int, int]:
    """``"1280x800"`` -> (1280, 800)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def shoot(viewer, size: str, path: Path, arrange: Callable[[], None] | None = None) -> Path:
    """The whole napari window at ``size`` (WIDTHxHEIGHT), the view framing every layer.

    ``arrange`` runs once the docks have their new size (to scroll a panel, say).
    """
    width, height = window_size(size)
    window = viewer.window._qt_window
    window.resize(width, height)
    wait_until(lambda: False, timeout=1.0)  # the docks settle into the new size
    if arrange is not None:
        arrange()
    viewer.reset_view()
    wait_until(lambda: False, timeout=1.0)  # let the canvas, the plot and notifications repaint
    grabbed = window.size()
    if (grabbed.width(), grabbed.height()) != (width, height):
        raise SystemExit(f"the window is {grabbed.width()}x{grabbed.height()}, not {size}")
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False)
    return path
