"""Whole-volume tiled prediction (also used by validation), and writing its results."""

from .predict import (
    PredictionCancelled,
    blend_window,
    postprocess,
    predict_volume,
    resize,
    tile_starts,
)

__all__ = [
    "PredictionCancelled",
    "blend_window",
    "postprocess",
    "predict_volume",
    "resize",
    "tile_starts",
]
