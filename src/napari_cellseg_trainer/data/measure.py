"""Object sizes in a label image, and the model and zoom ratio they call for.

unet_xy_zoom sees the image shrunk by ``zoom_ratio`` in y and x; it suits objects whose
diameter is about 150 voxels per unit of zoom (nuclei in a 100x confocal stack: a few hundred
voxels). Thinner structures (tubulin, lamin B1) are for unet_xy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VOXELS_PER_ZOOM = 150
MAX_ZOOM = 16


@dataclass(frozen=True)
class ZoomAdvice:
    """The objects measured and the model suggested for them."""

    n_objects: int
    mean_diameter: float  # voxels, in y-x
    model: str  # "unet_xy" or "unet_xy_zoom"
    zoom_ratio: int | None  # for unet_xy_zoom
    reason: str


def object_diameters_yx(labels: np.ndarray) -> np.ndarray:
    """The y-x diameter of every object (connected component of labels > 0), in voxels.

    Each object's diameter is that of the circle with the area of its largest y-x section
    (2 sqrt(A / pi)), so elongation along z does not count.
    """
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    mask = np.asarray(labels) > 0
    if mask.ndim == 2:
        mask = mask[np.newaxis]
    if mask.ndim != 3:
        raise ValueError(f"labels must be 2-D or 3-D (Z, Y, X), got shape {mask.shape}")
    components, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(0)
    ids = np.arange(1, count + 1)
    largest = np.zeros(count)
    for plane in components:
        areas = ndimage.sum_labels(plane > 0, plane, ids)
        largest = np.maximum(largest, areas)
    return 2.0 * np.sqrt(largest / np.pi)


def suggest_zoom(labels: np.ndarray) -> ZoomAdvice:
    """Measure the objects of ``labels`` and suggest ``zoom_ratio = round(diameter / 150)``."""
    diameters = object_diameters_yx(labels)
    if diameters.size == 0:
        raise ValueError("the labels hold no object (no voxel > 0): paint some first")
    mean = float(diameters.mean())
    zoom = round(mean / VOXELS_PER_ZOOM)
    n = int(diameters.size)
    if zoom < 2:
        return ZoomAdvice(
            n,
            mean,
            "unet_xy",
            None,
            f"{n} object(s), mean y-x diameter {mean:.0f} voxels: too small to zoom out "
            f"(zoom_ratio would be {mean / VOXELS_PER_ZOOM:.1f}); use unet_xy",
        )
    zoom = min(zoom, MAX_ZOOM)
    return ZoomAdvice(
        n,
        mean,
        "unet_xy_zoom",
        zoom,
        f"{n} object(s), mean y-x diameter {mean:.0f} voxels: unet_xy_zoom, "
        f"zoom_ratio {zoom} (= round({mean:.0f} / {VOXELS_PER_ZOOM}))",
    )
