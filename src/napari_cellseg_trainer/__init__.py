"""napari-cellseg-trainer: train, watch and use 3-D cell-structure segmentation models."""

__version__ = "0.1.0"
