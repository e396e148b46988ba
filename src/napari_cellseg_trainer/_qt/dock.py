"""The plugin's one dock: the panels as tabs (Train · Predict), so nothing stacks or overflows.

A preview asked for in the Train tab runs in the Predict tab, which comes to the front.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QSize
from qtpy.QtWidgets import QTabWidget

from .predict_widget import PredictWidget
from .train_widget import TrainWidget

if TYPE_CHECKING:
    import napari

_WIDTH = 400  # pixels: the dock's width when napari opens it


class SegmentationDock(QTabWidget):
    """Train and Predict tabs in one dock widget."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.train = TrainWidget(napari_viewer)
        self.predict = PredictWidget(napari_viewer)
        self.addTab(self.train, "Train")
        self.addTab(self.predict, "Predict")
        self.setMinimumWidth(_WIDTH - 40)
        self.train.preview_requested.connect(self.preview)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """Open narrow: the canvas keeps most of a 1280-pixel window (the tabs scroll down)."""
        return QSize(_WIDTH, super().sizeHint().height())

    def preview(self, checkpoint: str | Path, layer) -> None:
        """Preview ``layer`` with ``checkpoint`` in the Predict tab."""
        self.setCurrentWidget(self.predict)
        if self.predict.load_checkpoint(checkpoint):
            self.predict.set_image(layer)
            self.predict.preview()
