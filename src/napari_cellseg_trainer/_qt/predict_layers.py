"""The prediction panel's result layers: "<image> probability" and "<image> segmentation".

They are placed on the image they came from (its scale and translation) and changed in place
on the next result. The labels are the kept probabilities over the threshold, so moving the
slider redraws them without a new inference; a result in an OME-Zarr stays lazy (dask), and
napari reads only the planes it shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .predict_run import Result
from .user_layers import PROBABILITY_SUFFIX

if TYPE_CHECKING:
    import napari

# cyan: apart from the magma of the probability beneath it and from the grey of the image
SEGMENTATION_COLORS = {None: "transparent", 0: "transparent", 1: "#00e5ff"}


class ResultLayers:
    """Shows a :class:`.predict_run.Result` as a probability and a labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer, threshold: Callable[[], float]) -> None:
        self.viewer = viewer
        self.threshold = threshold

    @staticmethod
    def names(result: Result | None) -> tuple[str, str]:
        name = result.layer_name if result else ""
        return f"{name}{PROBABILITY_SUFFIX}", f"{name} segmentation"

    def placement(self, result: Result | None) -> dict:
        """The scale and translate of the segmented image, for layers made from its result."""
        layers = self.viewer.layers
        source = layers[result.layer_name] if result and result.layer_name in layers else None
        if source is None:
            return {}
        placement = {"scale": source.scale[-3:], "translate": source.translate[-3:]}
        if result.probability.shape[0] > 1:  # (n_pairs, Z, Y, X): one more axis in front
            placement = {k: (1.0 if k == "scale" else 0.0, *v) for k, v in placement.items()}
        return placement

    def labels(self, prob: Any) -> Any:
        """0/1 labels; lazy (dask) for a lazy ``prob``."""
        return (prob > self.threshold()).astype(np.uint8)

    def show(self, result: Result) -> None:
        prob = result.probability[0] if result.probability.shape[0] == 1 else result.probability
        placement = self.placement(result)
        prob_name, labels_name = self.names(result)
        layers = self.viewer.layers
        if prob_name in layers:
            layers[prob_name].data = prob
        else:
            self.viewer.add_image(
                prob,
                name=prob_name,
                colormap="magma",
                contrast_limits=(0, 1),
                blending="additive",
                **placement,
            )
        if labels_name in layers:
            layers[labels_name].data = self.labels(prob)
        else:
            layer = self.viewer.add_labels(
                self.labels(prob), name=labels_name, opacity=0.7, **placement
            )
            layer.colormap = SEGMENTATION_COLORS

    def relabel(self, result: Result | None) -> None:
        """The threshold moved: labels from the kept probabilities (no new inference)."""
        if result is None:
            return
        prob_name, labels_name = self.names(result)
        layers = self.viewer.layers
        if labels_name in layers and prob_name in layers:
            layers[labels_name].data = self.labels(layers[prob_name].data)
