"""The prediction panel's result and its layers: "<image> probability" and "<image> segmentation".

:class:`ResultLayers` keeps the prediction shown (the panel's result tools and saving read it
here) and its layers, placed on the image they came from (its scale and translation) and
changed in place on the next result. The labels are the kept probabilities over the threshold,
so moving the slider redraws them without a new inference; a result in an OME-Zarr stays lazy
(dask), and napari reads only the planes it shows.
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
    """The :class:`.predict_run.Result` shown, as a probability and a labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer, threshold: Callable[[], float]) -> None:
        self.viewer = viewer
        self.threshold = threshold
        self.result: Result | None = None

    def names(self) -> tuple[str, str]:
        """The names of the probability and the labels layer."""
        name = self.result.layer_name if self.result else ""
        return f"{name}{PROBABILITY_SUFFIX}", f"{name} segmentation"

    def named(self, what: str) -> str:
        """The name of another layer made from the result: "<image> <what>"."""
        return f"{self.result.layer_name} {what}" if self.result is not None else what

    def source(self) -> Any:
        """The image layer the result came from (None: removed, or no result)."""
        layers, result = self.viewer.layers, self.result
        return layers[result.layer_name] if result and result.layer_name in layers else None

    def placement(self) -> dict:
        """The scale and translate of the segmented image, for layers made from its result."""
        source = self.source()
        if source is None:
            return {}
        placement = {"scale": source.scale[-3:], "translate": source.translate[-3:]}
        if self.result.probability.shape[0] > 1:  # (n_pairs, Z, Y, X): one more axis in front
            placement = {k: (1.0 if k == "scale" else 0.0, *v) for k, v in placement.items()}
        return placement

    def labels(self, prob: Any) -> Any:
        """0/1 labels; lazy (dask) for a lazy ``prob``."""
        return (prob > self.threshold()).astype(np.uint8)

    def put_labels(self, name: str, labels: np.ndarray, **kwargs: Any) -> Any:
        """The labels layer ``name``: its data replaced, or added on the segmented image."""
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
            return self.viewer.layers[name]
        return self.viewer.add_labels(labels, name=name, **self.placement(), **kwargs)

    def show(self, result: Result) -> None:
        """Keep ``result`` and show it (the layers changed in place when they exist)."""
        self.result = result
        prob = result.probability[0] if result.probability.shape[0] == 1 else result.probability
        prob_name, labels_name = self.names()
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
                **self.placement(),
            )
        if labels_name in layers:
            layers[labels_name].data = self.labels(prob)
        else:
            layer = self.put_labels(labels_name, self.labels(prob), opacity=0.7)
            layer.colormap = SEGMENTATION_COLORS

    def relabel(self) -> None:
        """The threshold moved: labels from the kept probabilities (no new inference)."""
        if self.result is None:
            return
        prob_name, labels_name = self.names()
        layers = self.viewer.layers
        if labels_name in layers and prob_name in layers:
            layers[labels_name].data = self.labels(layers[prob_name].data)
