"""Predicted training patches shown in napari: three layers, updated in place, side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..training.events import PreviewPatch

if TYPE_CHECKING:
    import napari

NAMES = ("preview: input", "preview: ground truth", "preview: probability")
_GAP = 4  # voxels between the three patches


class PreviewLayers:
    """The input patch, its ground truth and the predicted probability of the latest preview.

    The layers are created when training starts (:meth:`prepare`, empty, to the right of the
    data already open) and afterwards only their data changes: adding a layer costs napari
    about 0.4 s of its event loop, a data change about 0.01 s, so the run never freezes the
    viewer for its previews. A layer the user deleted is created again at the next preview.

    The input's contrast spans every patch shown since :meth:`prepare`: one grey scale for the
    run, so patches compare, and a nearly empty patch (a corner that augmentation rotated in
    from outside the image) stays dark instead of having its rounding noise stretched to white.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self._raw_range: tuple[float, float] | None = None

    def layers(self) -> list:
        return [self.viewer.layers[n] for n in NAMES if n in self.viewer.layers]

    def prepare(self, shape: tuple[int, int, int]) -> None:
        """Create (or keep) the three layers for patches of ``shape``, empty until a preview."""
        self._raw_range = None
        if not self._ready(shape):
            self._create(
                (
                    np.zeros(shape, np.float32),
                    np.zeros(shape, np.uint8),
                    np.zeros(shape, np.float32),
                )
            )

    def _ready(self, shape: tuple[int, ...]) -> bool:
        layers = self.layers()
        return len(layers) == len(NAMES) and layers[0].data.shape == tuple(shape)

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

    def _create(self, arrays: tuple[np.ndarray, ...]) -> None:
        for name in NAMES:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        scale, translates = placement(
            arrays[0].shape, [layer.extent.world for layer in self.viewer.layers]
        )
        kinds = ("image", "labels", "probability")
        for name, data, kind, translate in zip(NAMES, arrays, kinds, translates, strict=True):
            common = {"name": name, "scale": scale, "translate": translate}
            if kind == "labels":
                self.viewer.add_labels(data, **common)
            elif kind == "probability":
                self.viewer.add_image(data, colormap="magma", contrast_limits=(0, 1), **common)
            else:
                self.viewer.add_image(data, colormap="gray", **common)


def placement(
    shape: tuple[int, ...], extents: list[np.ndarray]
) -> tuple[tuple[float, ...], list[tuple[float, ...]]]:
    """Scale and translations that put three patches side by side, right of the open data.

    Patches are magnified in y-x to about a third of the data's height (a 12-voxel patch beside a
    600-voxel image would be invisible) and centred on the data's middle z plane, where napari
    opens, so they are in view without scrolling.
    """
    z, y, x = shape
    extents = [e for e in extents if e.shape[1] >= 3]
    if not extents:
        return (1.0, 1.0, 1.0), [(0.0, 0.0, i * (x + _GAP)) for i in range(3)]
    low = np.min([e[0][-3:] for e in extents], axis=0)
    high = np.max([e[1][-3:] for e in extents], axis=0)
    zoom = float(max(1, int((high[1] - low[1]) / 3 // y)))
    mid_z = (low[0] + high[0]) / 2
    step = x * zoom + _GAP
    z0 = float(max(low[0], round(mid_z - z / 2)))
    return (1.0, zoom, zoom), [
        (z0, float(low[1]), float(high[2]) + _GAP + i * step) for i in range(3)
    ]
