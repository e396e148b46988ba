"""Training patches cut from a stored (OME-Zarr) image, each from the window it needs.

An image in memory is rotated whole once per buffer and cut (:func:`.buffer.augment_image`).
A stored image may not fit in memory, so each patch is augmented on its own: a random angle and
flip, the y-x window that holds the input patch turned by that angle (its diagonal plus the
bicubic kernel's reach) read from the store, zeros where it leaves the image, and the same
sampling grids as the whole-image rotation (:func:`.rotation.rotation_grid`, the label's cropped
from the raw's), so raw and label stay aligned. The angles, flips and patch places are drawn as
uniformly as for an image in memory; only the centre of each rotation differs (the patch's,
not the image's), which no patch can tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .rotation import resample, rotation_grid
from .sampling import Sampling, vary_intensity
from .training_image import TrainingImage
from .zarr_folder import CELL


def cut_stored_patches(
    image: TrainingImage,
    count: int,
    rng: np.random.Generator,
    out,
    start: int,
    margin: Sequence[int],
    size_out: Sequence[int],
    sampling: Sampling,
) -> None:
    """Write ``count`` augmented patches of a stored image into ``out`` from index ``start``."""
    size_in = out.raw.shape[2:]
    centred = round(sampling.foreground_share * count)
    for k in range(count):
        angle, flip = rng.uniform(1.0, 180.0), bool(rng.random() < 0.5)
        corner = _structure_corner(image, size_out, rng) if k < centred else None
        if corner is None:
            corner = tuple(
                int(rng.integers(n - o + 1)) for n, o in zip(image.shape, size_out, strict=True)
            )
        raw, label, costmap = rotated_patch(image, corner, margin, size_in, size_out, angle, flip)
        out.raw[start + k], out.label[start + k], out.costmap[start + k] = raw, label, costmap
        if sampling.intensity:
            vary_intensity(out.raw[start + k], rng)


def _structure_corner(image, size_out, rng) -> tuple[int, int, int] | None:
    """An output corner centred on a random structure voxel (label > 0 where the cost map
    counts) of a random cell noted to hold some; None when the image has none."""
    cells = image.label.structure_cells()
    if not len(cells):
        return None
    z, y, x = (int(v) for v in cells[rng.integers(len(cells))])
    box = (slice(z, z + 1), slice(max(y, 0), y + CELL), slice(max(x, 0), x + CELL))
    structure = np.argwhere((image.label[box] > 0) & (image.costmap[box] > 0))
    if not len(structure):  # a cell cut by a held-out slab: its structure is beyond
        return None
    centre = structure[rng.integers(len(structure))] + [b.start for b in box]
    return tuple(
        int(min(max(c - o // 2, 0), n - o))
        for c, o, n in zip(centre, size_out, image.shape, strict=True)
    )


def rotated_patch(
    image: TrainingImage,
    corner: Sequence[int],
    margin: Sequence[int],
    size_in: Sequence[int],
    size_out: Sequence[int],
    angle: float,
    flip: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw (C, *size_in), label (*size_out), cost map (*size_out)) of the output patch at
    ``corner``, turned by ``angle`` degrees about its centre (and flipped left-right)."""
    reach = math.ceil(math.hypot(size_in[1], size_in[2])) + 4  # bicubic reads 2 px around
    window = [reach + (reach - size_in[a]) % 2 for a in (1, 2)]  # centred: same parity
    inner = [(size_in[a + 1] - window[a]) // 2 for a in (0, 1)]  # negative: a crop
    starts = [corner[a + 1] - margin[a + 1] + inner[a] for a in (0, 1)]
    grid = rotation_grid(tuple(window), tuple(inner), angle, flip)
    z_in = (corner[0] - margin[0], size_in[0])
    raw_window = _padded(image.raw, z_in, starts, window, channels=True)
    raw = np.stack([resample(channel, grid, "bicubic") for channel in raw_window])
    my, mx = margin[1], margin[2]
    label_grid = grid[:, my : my + size_out[1], mx : mx + size_out[2]].contiguous()
    z_out = (corner[0], size_out[0])
    label = _padded(image.label, z_out, starts, window).astype(np.float32)
    costmap = _padded(image.costmap, z_out, starts, window)
    both = resample(np.concatenate([label, costmap]), label_grid, "nearest")
    depth = size_out[0]
    return raw, both[:depth].astype(image.label.dtype), both[depth:].astype(np.float32)


def _padded(volume, z: tuple[int, int], starts, window, channels: bool = False) -> np.ndarray:
    """The window (z start, depth) x (y, x starts, sizes) of ``volume``, zeros outside it."""
    spatial = volume.shape[1:] if channels else volume.shape
    wanted = [(z[0], z[1]), (starts[0], window[0]), (starts[1], window[1])]
    lead = (volume.shape[0],) if channels else ()
    out = np.zeros((*lead, *(size for _, size in wanted)), np.float32)
    src, dst = [], []
    for (begin, size), n in zip(wanted, spatial, strict=True):
        lo, hi = max(begin, 0), min(begin + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    head = (slice(None),) if channels else ()
    out[(*head, *dst)] = volume[(*head, *src)]
    return out
