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

    The layers are created on the first preview, to the right of the data already open, and
    afterwards only their data changes (no new layer per update). A layer the user deleted is
    created again at the next preview.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.updates = 0

    def layers(self) -> list:
        return [self.viewer.layers[n] for n in NAMES if n in self.viewer.layers]

    def show(self, patch: PreviewPatch) -> None:
        arrays = (patch.raw, patch.label, patch.probability)
        if len(self.layers()) != len(NAMES) or self.layers()[0].data.shape != patch.raw.shape:
            self._create(arrays)
        else:
            for layer, data in zip(self.layers(), arrays, strict=True):
                layer.data = data
        raw = self.viewer.layers[NAMES[0]]
        low, high = float(np.min(patch.raw)), float(np.max(patch.raw))
        raw.contrast_limits = (low, high if high > low else low + 1)
        self.updates += 1

    def _create(self, arrays: tuple[np.ndarray, ...]) -> None:
        for name in NAMES:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        others = list(self.viewer.layers)
        z, _, x = arrays[0].shape
        right = max((layer.extent.world[1][-1] for layer in others), default=-_GAP)
        mid_z = 0.0
        if others:
            mid_z = float(
                np.mean([(l.extent.world[0][0] + l.extent.world[1][0]) / 2 for l in others])
            )
        translate_z = max(0.0, round(mid_z - z / 2))
        for i, (name, data) in enumerate(zip(NAMES, arrays, strict=True)):
            translate = (translate_z, 0, right + _GAP + i * (x + _GAP))
            if i == 1:
                self.viewer.add_labels(data, name=name, translate=translate)
            elif i == 2:
                self.viewer.add_image(
                    data, name=name, translate=translate, colormap="magma", contrast_limits=(0, 1)
                )
            else:
                self.viewer.add_image(data, name=name, translate=translate, colormap="gray")
