"""Predicted training patches shown in napari: three layers beside the image, titled, in view.

The input patch, its ground truth and the predicted probability are placed side by side to the
right of the image in view, magnified to its height, with a frame and a title each
("input", "ground truth", "probability" over "iteration N") drawn by one 2-D shapes layer, so
the titles show on every plane. When they first appear the camera frames image and previews,
with a margin for the titles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..training.events import PreviewPatch

if TYPE_CHECKING:
    import napari

NAMES = ("preview: input", "preview: ground truth", "preview: probability")
FRAMES = "preview: titles"
TITLES = ("input", "ground truth", "probability")
_GAP = 0.15  # between the patches, as a share of a patch's width
_MARGIN = 0.9  # the first preview's view: 10 % around the image and the previews


class PreviewLayers:
    """The input patch, its ground truth and the predicted probability of the latest preview.

    The layers are created when training starts (:meth:`prepare`, empty) and afterwards only
    their data changes: adding a layer costs napari about 0.4 s of its event loop, a data change
    about 0.01 s, so the run never freezes the viewer for its previews. A layer the user deleted
    is created again at the next preview.

    The input's contrast spans every patch shown since :meth:`prepare`: one grey scale for the
    run, so patches compare, and a nearly empty patch (a corner that augmentation rotated in
    from outside the image) stays dark instead of having its rounding noise stretched to white.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self._raw_range: tuple[float, float] | None = None
        self._framed = False

    def layers(self) -> list:
        return [self.viewer.layers[n] for n in NAMES if n in self.viewer.layers]

    def prepare(self, shape: tuple[int, int, int]) -> None:
        """Create (or keep) the layers for patches of ``shape``, empty until a preview."""
        self._raw_range = None
        self._framed = False
        if not self._ready(shape):
            empty = np.zeros(shape, np.float32)
            self._create((empty, np.zeros(shape, np.uint8), empty.copy()))

    def _ready(self, shape: tuple[int, ...]) -> bool:
        layers = self.layers()
        return (
            len(layers) == len(NAMES)
            and layers[0].data.shape == tuple(shape)
            and FRAMES in self.viewer.layers
        )

    def show(self, patch: PreviewPatch) -> None:
        arrays = (patch.raw, patch.label, patch.probability)
        if not self._ready(patch.raw.shape):
            self._create(arrays)
        else:  # in place: assigning layer.data makes napari recompute its dims (20 ms a layer)
            for layer, data in zip(self.layers(), arrays, strict=True):
                np.copyto(layer.data, data, casting="unsafe")
                layer.refresh()
        raw = self.viewer.layers[NAMES[0]]
        low, high = float(np.min(patch.raw)), float(np.max(patch.raw))
        if self._raw_range is not None:
            low, high = min(low, self._raw_range[0]), max(high, self._raw_range[1])
        self._raw_range = (low, high)
        raw.contrast_limits = (low, high if high > low else low + 1)
        self._title(f"probability\niteration {patch.iteration}")  # two lines: within its frame
        if not self._framed:  # the first preview: frame the image and the previews
            self.viewer.reset_view()
            camera = getattr(self.viewer, "scene", self.viewer).camera  # napari 0.9: scene
            camera.zoom *= _MARGIN  # the titles above the frames stay in view
            self._framed = True

    def _title(self, last: str) -> None:
        frames = self.viewer.layers[FRAMES] if FRAMES in self.viewer.layers else None
        if frames is not None:
            frames.features = {"title": [*TITLES[:2], last]}
            frames.refresh_text()

    def _create(self, arrays: tuple[np.ndarray, ...]) -> None:
        for name in (*NAMES, FRAMES):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        others = [layer.extent.world for layer in self.viewer.layers if layer.visible]
        scale, translates = placement(arrays[0].shape, others)
        kinds = ("image", "labels", "probability")
        for name, data, kind, translate in zip(NAMES, arrays, kinds, translates, strict=True):
            common = {"name": name, "scale": scale, "translate": translate}
            if kind == "labels":
                self.viewer.add_labels(data, opacity=0.8, **common)
            elif kind == "probability":
                self.viewer.add_image(data, colormap="magma", contrast_limits=(0, 1), **common)
            else:
                self.viewer.add_image(data, colormap="gray", **common)
        self.viewer.add_shapes(
            frames(arrays[0].shape, scale, translates),
            shape_type="rectangle",
            name=FRAMES,
            edge_color="white",
            face_color="transparent",
            edge_width=max(scale) * 0.3,
            features={"title": list(TITLES)},
            text={"string": "{title}", "anchor": "upper_left", "size": 11, "color": "white"},
        )


def placement(
    shape: tuple[int, ...], extents: list[np.ndarray]
) -> tuple[tuple[float, ...], list[tuple[float, ...]]]:
    """Scale and translations that put three patches side by side, right of the open data.

    Patches are magnified in y-x to the data's height (a 12-voxel patch beside a
    600-voxel image would be invisible), and placed at the data's middle z plane, where napari
    opens, so they are in view without scrolling.
    """
    z, y, x = shape
    extents = [e for e in extents if e.shape[1] >= 3]
    if not extents:
        step = x * (1 + _GAP)
        return (1.0, 1.0, 1.0), [(0.0, 0.0, i * step) for i in range(3)]
    low = np.min([e[0][-3:] for e in extents], axis=0)
    high = np.max([e[1][-3:] for e in extents], axis=0)
    zoom = max(1.0, float(high[1] - low[1]) / y)
    step = x * zoom * (1 + _GAP)
    z0 = float(max(low[0], round((low[0] + high[0]) / 2 - z / 2)))
    left = float(high[2]) + x * zoom * _GAP
    return (1.0, zoom, zoom), [(z0, float(low[1]), left + i * step) for i in range(3)]


def frames(
    shape: tuple[int, ...], scale: tuple[float, ...], translates: list[tuple[float, ...]]
) -> list[np.ndarray]:
    """A 2-D rectangle (world y, x) around each patch: drawn on every plane, titled."""
    _, y, x = shape
    boxes = []
    for _, top, left in translates:
        # napari centres a voxel on its coordinate: the patch spans half a voxel either side
        top, left = top - scale[1] / 2, left - scale[2] / 2
        bottom, right = top + y * scale[1], left + x * scale[2]
        boxes.append(np.array([[top, left], [top, right], [bottom, right], [bottom, left]]))
    return boxes
