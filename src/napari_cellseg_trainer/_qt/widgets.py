"""Small Qt helpers shared by the panels."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QPushButton, QWidget


def push_button(parent: QWidget, text: str, slot: Callable, tip: str) -> QPushButton:
    """A push button with its click handler and tooltip."""
    button = QPushButton(text, parent)
    button.clicked.connect(slot)
    button.setToolTip(tip)
    return button
