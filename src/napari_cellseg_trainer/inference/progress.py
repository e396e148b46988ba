"""Progress inside a tile: a forward pass of a big tile takes seconds to minutes on a CPU.

A prediction with one tile of ``[128, 188, 188]`` would otherwise sit at 0 of 1 until the end.
Forward hooks on the network's layers report how much of the pass is done, weighted by each
layer's multiply-adds (:class:`..models.memory.LayerShapes`), so the bar moves steadily.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..models import MODEL_NAMES
from ..models.memory import layer_shapes


class LayerProgress:
    """Calls ``report(fraction of the current pass done)`` as each layer of a pass finishes.

    Only for this project's networks (their layers are known); for any other module it does
    nothing and the prediction reports progress per batch only.
    """

    def __init__(self, model: torch.nn.Module, report: Callable[[float], None]) -> None:
        self.model, self.report = model, report
        self.leaves = [m for m in model.modules() if not list(m.children())]
        self.handles: list = []
        self.fractions: np.ndarray | None = None
        self.index = 0

    @property
    def known(self) -> bool:
        return getattr(self.model, "model_name", None) in MODEL_NAMES

    def start(self, size_in: Sequence[int]) -> None:
        """Before the passes of tiles of ``size_in``: the layers' shares of a pass."""
        if not self.known:
            return
        shapes = layer_shapes(
            self.model.model_name,
            getattr(self.model, "zoom_ratio", 3),
            getattr(self.model, "nchannel", 1),
        )
        work = shapes.channels * shapes.work * shapes._per_layer(*size_in)
        if len(work) != len(self.leaves):
            return  # a modified network: per-batch progress only
        self.fractions = np.cumsum(work) / work.sum()
        self.index = 0
        self.handles = [leaf.register_forward_hook(self._layer_done) for leaf in self.leaves]

    def stop(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _layer_done(self, *_: object) -> None:
        assert self.fractions is not None
        self.report(float(self.fractions[self.index % len(self.fractions)]))
        self.index += 1
