"""Training data from the open layers: sets of (Image, Labels, optional exclusion Labels).

Shows and forwards only: :mod:`..data.layer_sets` turns the sets into training images (or a
training folder) and :mod:`..data.measure` measures the objects for the zoom suggestion.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui import widgets
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QVBoxLayout, QWidget

from ..data.layer_sets import LayerSet, export_training_folder
from ..data.measure import ZoomAdvice, suggest_zoom
from .user_layers import user_images
from .widgets import push_button

if TYPE_CHECKING:
    import napari


class _SetRow:
    """Three layer pickers for one training image."""

    def __init__(self, panel: LayerSetsPanel, index: int) -> None:
        self.image = widgets.ComboBox(
            label=f"image {index + 1}", choices=panel.image_choices, nullable=True
        )
        self.labels = widgets.ComboBox(
            label="ground truth", choices=panel.labels_choices, nullable=True
        )
        self.exclude = widgets.ComboBox(
            label="exclude (optional)", choices=panel.exclude_choices, value=None
        )
        self.image.tooltip = "The raw image (normalised min-max to [0, 1] for training)."
        self.labels.tooltip = "Labels painted on it: every label > 0 is the structure."
        self.exclude.tooltip = "Labels marking regions left out of the loss (cost 0), if any."
        self.container = widgets.Container(widgets=[self.image, self.labels, self.exclude])

    def reset_choices(self) -> None:
        self.container.reset_choices()


class LayerSetsPanel(QWidget):
    """Pick training sets from the viewer's layers; export them; suggest the zoom ratio."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        on_advice: Callable[[ZoomAdvice], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.on_advice = on_advice
        self.use_layers = widgets.CheckBox(
            text="train on these layers (instead of loader.datafolder)", value=False
        )
        self.use_layers.tooltip = (
            "Train on the image/labels sets below as they are in napari, without writing files."
        )
        self.rows: list[_SetRow] = []
        self._rows_box = QVBoxLayout()
        add = push_button(self, "+ set", self.add_set, "Another image with its ground truth")
        remove = push_button(self, "− set", self.remove_set, "Remove the last set")
        export = push_button(
            self,
            "Export as training folder…",
            self._ask_export,
            "Write the sets as NAME.ome.tif, NAME_GT.ome.tif, NAME_CM.ome.tif for the CLI",
        )
        self.zoom_button = push_button(
            self,
            "Suggest model / zoom",
            self.suggest,
            "Measure the objects of the first set's ground truth and suggest a model",
        )
        buttons = QHBoxLayout()
        for b in (add, remove, export, self.zoom_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.use_layers.native)
        layout.addLayout(self._rows_box)
        layout.addLayout(buttons)
        self.add_set()
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)

    # ------------------------------------------------------------------ choices

    def image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in user_images(self.viewer)]

    def labels_choices(self, _widget: Any = None) -> list[tuple[str, Labels]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels)]

    def exclude_choices(self, _widget: Any = None) -> list[tuple[str, Labels | None]]:
        return [("(none)", None), *self.labels_choices()]

    def _layers_changed(self, _event: Any = None) -> None:
        for row in self.rows:
            row.reset_choices()

    def add_set(self) -> _SetRow:
        row = _SetRow(self, len(self.rows))
        self.rows.append(row)
        self._rows_box.addWidget(row.container.native)
        return row

    def remove_set(self) -> None:
        if len(self.rows) > 1:
            row = self.rows.pop()
            self._rows_box.removeWidget(row.container.native)
            row.container.native.deleteLater()

    # ------------------------------------------------------------------ actions

    def sets(self) -> list[LayerSet]:
        """The chosen sets; ValueError names a set with no image or no ground truth."""
        sets = []
        for i, row in enumerate(self.rows, start=1):
            image, labels, exclude = row.image.value, row.labels.value, row.exclude.value
            if image is None or labels is None:
                raise ValueError(f"training set {i}: choose an image and its ground truth layer")
            sets.append(
                LayerSet(
                    image.name,
                    image.data,
                    labels.data,
                    None if exclude is None else exclude.data,
                )
            )
        return sets

    def export(self, folder: str | Path) -> list[Path]:
        """Write the sets as a training folder; [] (with a notification) on a problem."""
        try:
            paths = export_training_folder(self.sets(), folder)
        except ValueError as err:
            show_error(str(err))
            return []
        except OSError as err:
            show_error(f"could not write into {folder}: {err.strerror or err}")
            return []
        show_info(f"wrote {len(paths)} files to {folder}")
        return paths

    def _ask_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export as training folder")
        if folder:
            self.export(folder)

    def suggest(self) -> ZoomAdvice | None:
        """Measure the first set's ground truth; notify the suggestion and return it."""
        labels = self.rows[0].labels.value if self.rows else None
        if labels is None:
            show_error("choose a ground-truth (Labels) layer in the first set to measure")
            return None
        try:
            advice = suggest_zoom(labels.data)
        except ValueError as err:
            show_error(f"{labels.name}: {err}")
            return None
        show_info(advice.reason)
        if self.on_advice is not None:
            self.on_advice(advice)
        return advice
