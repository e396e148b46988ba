"""Training data from the open layers: sets of (image, ground truth, optional exclusion).

Shows and forwards only: :mod:`..data.layer_sets` turns the sets into training images (or a
training folder) and :mod:`..data.measure` measures the objects for the zoom suggestion.
Ground truth is what users have: a Labels layer, or an integer Image layer (a labels TIFF that
napari opened as an image), which one click turns into Labels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QLabel, QVBoxLayout, QWidget

from ..data.layer_sets import LayerSet, export_training_folder
from ..data.measure import ZoomAdvice, suggest_zoom
from .user_layers import user_images
from .widgets import grid, narrow, push_buttons

if TYPE_CHECKING:
    import napari

_EXPORT_TIP = "Write the sets as NAME.ome.tif, NAME_GT.ome.tif, NAME_CM.ome.tif for the CLI"
_CONVERT_TIP = "Turn the chosen integer Image layer into a Labels layer (to paint on it)"
_SUGGEST_TIP = "Measure the objects of the first set's ground truth and suggest a model"


def is_integer_image(layer: Any) -> bool:
    """An Image layer whose values are whole numbers: labels that napari opened as an image."""
    return isinstance(layer, Image) and np.issubdtype(np.asarray(layer.data).dtype, np.integer)


def ground_truth_layers(viewer: napari.viewer.Viewer) -> list:
    """Labels layers, and integer Image layers (offered as ground truth too)."""
    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Labels) or (is_integer_image(layer) and layer in user_images(viewer))
    ]


def voxel_size_of(layer: Any) -> tuple[float, float, float] | None:
    """The layer's scale as a voxel size (z, y, x), unless it is napari's default of 1."""
    scale = tuple(float(v) for v in layer.scale[-3:])
    return None if len(scale) < 3 or all(v == 1 for v in scale) else scale  # type: ignore[return-value]


class _SetRow:
    """Three layer pickers for one training image."""

    def __init__(self, panel: LayerSetsPanel, index: int) -> None:
        self.image = widgets.ComboBox(
            label=f"image {index + 1}", choices=panel.image_choices, nullable=True
        )
        self.labels = widgets.ComboBox(
            label="ground truth", choices=panel.labels_choices, nullable=True
        )
        self.exclude = widgets.ComboBox(label="exclude", choices=panel.exclude_choices, value=None)
        self.image.tooltip = "The raw image (normalised as the normalization field says)."
        self.labels.tooltip = (
            "Labels painted on it: every label > 0 is the structure (instance labels too). "
            "An integer Image layer is offered as well."
        )
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
        self.use_layers = widgets.CheckBox(text="train on these layers", value=False)
        self.use_layers.tooltip = (
            "Train on the image / ground-truth sets below as they are in napari (instead of "
            "loader.datafolder), without writing files."
        )
        self.sparse = widgets.CheckBox(text="sparse labels", value=False)
        self.sparse.tooltip = (
            "The labels are painted on a few slices or regions only: 0 = not painted (left out "
            "of the loss), 1 = background, 2 or more = structure."
        )
        self.note = QLabel("", self)
        self.note.setWordWrap(True)
        self.rows: list[_SetRow] = []
        self._rows_box = QVBoxLayout()
        buttons = push_buttons(
            self,
            ("+ set", self.add_set, "Another image with its ground truth"),
            ("− set", self.remove_set, "Remove the last set"),
            ("Labels from image", self.convert_ground_truth, _CONVERT_TIP),
            ("Suggest model", self.suggest, _SUGGEST_TIP),
            ("Export folder…", self._ask_export, _EXPORT_TIP),
        )
        self.convert_button, self.zoom_button = buttons[2:4]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        options = widgets.Container(widgets=[self.use_layers, self.sparse], layout="horizontal")
        options.margins = (0, 0, 0, 0)
        layout.addWidget(options.native)
        layout.addLayout(self._rows_box)
        layout.addWidget(self.note)
        layout.addLayout(grid(buttons, 2))  # two columns: the dock stays narrow
        self._options = options
        self.add_set()
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)

    # ------------------------------------------------------------------ choices

    def image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in user_images(self.viewer)]

    def labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in ground_truth_layers(self.viewer)]

    def exclude_choices(self, _widget: Any = None) -> list[tuple[str, Labels | None]]:
        return [("(none)", None), *self.labels_choices()]

    def _layers_changed(self, _event: Any = None) -> None:
        for row in self.rows:
            row.reset_choices()

    def add_set(self) -> _SetRow:
        row = _SetRow(self, len(self.rows))
        row.labels.changed.connect(self._describe_ground_truth)
        self.rows.append(row)
        self._rows_box.addWidget(row.container.native)
        narrow(row.container.native)
        return row

    def remove_set(self) -> None:
        if len(self.rows) > 1:
            row = self.rows.pop()
            self._rows_box.removeWidget(row.container.native)
            row.container.native.deleteLater()

    def suggest_pair(self) -> tuple[Image, Any] | None:
        """An image and a ground truth of the same shape among the open layers, if there are."""
        labels = ground_truth_layers(self.viewer)
        for image in user_images(self.viewer):
            if is_integer_image(image):
                continue
            for gt in labels:
                if gt is not image and tuple(gt.data.shape) == tuple(image.data.shape[-3:]):
                    return image, gt
        return None

    def use_pair(self, image: Image, labels: Any) -> None:
        """Train on this image and ground truth (the first set, "train on these layers" on)."""
        row = self.rows[0]
        row.image.value, row.labels.value = image, labels
        self.use_layers.value = True

    # ------------------------------------------------------------------ actions

    def _describe_ground_truth(self, *_: Any) -> None:
        """Say how the chosen ground truth is read (instance labels, an image layer)."""
        layer = self.rows[0].labels.value if self.rows else None
        if layer is None:
            self.note.setText("")
            return
        values = np.unique(np.asarray(layer.data))
        count = int(np.count_nonzero(values))
        text = []
        if is_integer_image(layer):
            text.append(f"{layer.name!r} is an Image layer with whole numbers: read as labels")
        if self.sparse.value:
            text.append("sparse: 0 = not painted, 1 = background, 2+ = structure")
        elif count > 1:
            text.append(f"{count} labels (instances): used as structure (> 0) vs background (0)")
        self.note.setText("; ".join(text))

    def convert_ground_truth(self) -> Labels | None:
        """The first set's integer Image ground truth as a Labels layer, chosen in its place."""
        row = self.rows[0]
        layer = row.labels.value
        if not is_integer_image(layer):
            show_error("choose an integer Image layer as ground truth to turn it into labels")
            return None
        labels = self.viewer.add_labels(
            np.asarray(layer.data),
            name=f"{layer.name} labels",
            scale=layer.scale,
            translate=layer.translate,
            opacity=0.5,
        )
        layer.visible = False
        row.labels.value = labels
        show_info(f"{layer.name}: now a Labels layer, {labels.name!r}, to paint on")
        return labels

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
                    np.asarray(labels.data),
                    None if exclude is None else exclude.data,
                    sparse=self.sparse.value,
                    voxel_size=voxel_size_of(image),
                )
            )
        return sets

    def export(self, folder: str | Path, quiet: bool = False) -> list[Path]:
        """Write the sets as a training folder; [] (with a notification) on a problem.

        ``quiet``: raise instead of notifying (the caller reports).
        """
        try:
            paths = export_training_folder(self.sets(), folder)
        except (ValueError, OSError) as err:
            if quiet:
                raise
            show_error(str(getattr(err, "strerror", None) or err))
            return []
        if not quiet:
            show_info(f"wrote {len(paths)} files to {Path(folder).name}")
        return paths

    def _ask_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export as training folder")
        if folder:
            self.export(folder)

    def suggest(self) -> ZoomAdvice | None:
        """Measure the first set's ground truth; notify the suggestion and return it."""
        labels = self.rows[0].labels.value if self.rows else None
        if labels is None:
            show_error("choose a ground-truth layer in the first set to measure")
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
