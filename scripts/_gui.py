"""Helpers for the scripts that drive napari under a display (screenshots)."""

from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtWidgets import QApplication


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Process Qt events until ``condition()`` holds or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.05)
    return False
