"""Small Qt helpers shared by the panels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QGridLayout,
    QLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

_NARROW = 48  # pixels: the least a combo box or a line edit of a panel needs
# napari's theme gives every spin box 70 pixels plus padding: three of them (size_in) beside
# their label made a panel wider than a dock on a 1280-pixel screen
_NARROW_SPIN_BOXES = "QAbstractSpinBox { min-width: 28px; }"


def push_button(parent: QWidget, text: str, slot: Callable, tip: str) -> QPushButton:
    """A push button with its click handler and tooltip."""
    button = QPushButton(text, parent)
    button.clicked.connect(slot)
    button.setToolTip(tip)
    return button


def push_buttons(parent: QWidget, *table: tuple[str, Callable, str]) -> list[QPushButton]:
    """A push button for each row of ``table``: (text, click handler, tooltip)."""
    return [push_button(parent, *row) for row in table]


def grid(widgets: Sequence[QWidget], columns: int = 0) -> QGridLayout:
    """``widgets`` left to right in rows of ``columns`` (0: all in one row)."""
    layout = QGridLayout()
    for i, widget in enumerate(widgets):
        row, column = divmod(i, columns or len(widgets))
        layout.addWidget(widget, row, column)
    return layout


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def scrolling(items: list[QWidget | QLayout], parent: QWidget) -> QScrollArea:
    """``items`` stacked in a vertically scrolling area that never scrolls sideways.

    The content follows the area's width (it wraps or shrinks instead of widening the dock),
    so a panel fits any window: at 1280 x 800 napari keeps its canvas and every control stays
    reachable by scrolling down.
    """
    content = QWidget()
    layout = QVBoxLayout(content)
    layout.setContentsMargins(4, 4, 4, 4)
    for item in items:
        if isinstance(item, QLayout):
            layout.addLayout(item)
        else:
            layout.addWidget(item)
    layout.addStretch(1)
    content.setStyleSheet(_NARROW_SPIN_BOXES)
    narrow(content)
    content.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    area = QScrollArea(parent)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(content)
    return area


def narrow(widget: QWidget) -> None:
    """Let the combo boxes and line edits in ``widget`` shrink with the dock.

    A combo box otherwise asks for the width of its longest choice (a long layer name), which
    would widen the dock or be cut off at its right edge.
    """
    for box in widget.findChildren((QComboBox, QLineEdit)):
        box.setMinimumWidth(_NARROW)
        if isinstance(box, QComboBox):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(4)
