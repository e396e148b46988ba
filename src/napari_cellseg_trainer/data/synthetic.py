"""Realistic synthetic 3-D confocal volumes with exact labels, for pretraining the starters.

Each call draws a new scene and a new microscope from a seed, so a pretraining run sees a
different volume in every buffer. Three scenes:

- ``"nuclei"``: nucleus-shaped ellipsoids, separate and touching, over a range of sizes,
  densities and brightness (some dim), with chromatin-like texture, dark nucleoli and a soft
  edge. Target: the nuclei (instances kept too).
- ``"tissue"``: 3-D cells packed like a plant or animal tissue (a warped Voronoi tessellation),
  their membranes bright. Target: the cell boundaries, 1-3 voxels thick.
- ``"thin"``: filaments, shells and curved sheets a few voxels thick. Target: the structures.

The microscope: anisotropic voxels (z 1-4 times coarser than x-y), a point-spread function
broader in z than in x-y, depth attenuation, uneven illumination and background, Poisson shot
noise and Gaussian read noise over a range of signal-to-noise ratios, then 8- or 16-bit
quantisation into the raw ranges real stacks have (some saturation included). The raw comes
back in its integer type, as a microscope writes it: training normalises it like a user's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCENES: tuple[str, ...] = ("nuclei", "tissue", "thin")


@dataclass(frozen=True)
class SyntheticVolume:
    """One generated volume.

    raw : (Z, Y, X) uint8 or uint16, as a confocal stack would hold it.
    label : (Z, Y, X) uint8 target in {0, 1}.
    instances : (Z, Y, X) int32 object ids (nuclei or cells; 0 elsewhere), or None.
    spacing : voxel size (z, y, x) relative to x-y.
    """

    raw: np.ndarray
    label: np.ndarray
    instances: np.ndarray | None
    spacing: tuple[float, float, float]


def synthetic_volume(
    scene: str, shape: Sequence[int] = (48, 160, 160), seed: int = 0
) -> SyntheticVolume:
    """A new volume of ``scene`` (one of :data:`SCENES`); the same seed gives the same bytes."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (Z, Y, X) with every side >= 8, got {list(shape)}")
    rng = np.random.default_rng(seed)
    spacing = (float(rng.choice([1.0, 1.0, 1.5, 2.0, 3.0, 4.0])), 1.0, 1.0)
    if scene == "nuclei":
        instances, brightness = _nuclei(shape, spacing, rng)
        label = (instances > 0).astype(np.uint8)
        brightness += _distractors(shape, spacing, brightness, rng)
    elif scene == "tissue":
        instances, label, brightness = _tissue(shape, spacing, rng)
    else:
        instances, (label, brightness) = None, _thin(shape, spacing, rng)
    raw = _microscope(brightness, spacing, rng)
    return SyntheticVolume(raw, label, instances, spacing)


# --------------------------------------------------------------------------- geometry


def _grid(shape: tuple[int, ...], spacing: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Open grids of physical coordinates (x-y voxel units)."""
    return tuple(
        (np.arange(n, dtype=np.float32) * s).reshape([-1 if a == i else 1 for a in range(3)])
        for i, (n, s) in enumerate(zip(shape, spacing, strict=True))
    )


def _smooth_noise(
    shape: tuple[int, ...], sigma: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Gaussian-smoothed white noise of unit standard deviation."""
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std() + 1e-6)


def _low_frequency(shape: tuple[int, ...], rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """A smooth field in [0, 1] varying over a few cells across the volume."""
    from scipy import ndimage

    coarse = rng.uniform(0, 1, size=(2, cells, cells)).astype(np.float32)
    factors = [s / c for s, c in zip(shape, coarse.shape, strict=True)]
    field = ndimage.zoom(coarse, factors, order=1, grid_mode=True, mode="nearest")
    return field[: shape[0], : shape[1], : shape[2]]


def _rotation(rng: np.random.Generator, tilt: float) -> np.ndarray:
    """A rotation about z by any angle, tilted out of x-y by at most ``tilt`` radians."""
    a, b = rng.uniform(0, 2 * np.pi), rng.uniform(-tilt, tilt)
    about_z = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_x = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return about_x @ about_z


# --------------------------------------------------------------------------- scenes


def _nuclei(
    shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(instances, brightness): touching and separate textured nuclei of a volume's size range."""
    physical = np.array(shape) * np.array(spacing)
    diameter = float(np.exp(rng.uniform(np.log(12), np.log(50))))  # x-y voxels, typical
    fill = rng.uniform(0.1, 0.5)
    touching = rng.uniform(0.65, 1.0)  # centre distance / sum of radii allowed (< 1 overlaps)
    centres, radii, rotations = [], [], []
    placed = np.empty((0, 3))  # centres so far, and their mean radii, for the spacing test
    sizes = np.empty(0)
    filled, target = 0.0, fill * float(np.prod(physical))
    for _ in range(1500):
        if filled >= target:
            break
        r = diameter / 2 * rng.uniform(0.7, 1.3)
        axes = r * np.array([rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)])
        centre = rng.uniform(-0.1, 1.1, size=3) * physical
        gaps = np.linalg.norm(placed - centre, axis=1) - touching * (sizes + axes.mean())
        if (gaps < 0).any():
            continue
        placed, sizes = np.vstack([placed, centre]), np.append(sizes, axes.mean())
        centres.append(centre)
        radii.append(axes)
        rotations.append(_rotation(rng, tilt=0.4))
        filled += 4 / 3 * np.pi * float(np.prod(axes))
    texture = _smooth_noise(shape, (0.6, 1.2, 1.2), rng) * 0.6 + _smooth_noise(
        shape, (1.2, 3.0, 3.0), rng
    )
    instances = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, np.inf, dtype=np.float32)  # normalised radius of the nearest nucleus
    brightness = np.zeros(shape, dtype=np.float32)
    z, y, x = _grid(shape, spacing)
    for k, (centre, axes, rot) in enumerate(zip(centres, radii, rotations, strict=True), start=1):
        box = _box(centre, axes.max(), shape, spacing)
        if box is None:
            continue
        offsets = [
            _along(g, i, b) - c
            for i, (g, b, c) in enumerate(zip((z, y, x), box, centre, strict=True))
        ]
        local = [sum(rot[i, j] * offsets[j] for j in range(3)) / axes[i] for i in range(3)]
        rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
        region = best[box]
        mine = (rho <= 1) & (rho < region)
        region[mine] = rho[mine]
        instances[box][mine] = k
        level = rng.uniform(0.1, 0.35) if rng.random() < 0.2 else rng.uniform(0.5, 1.0)
        contrast = rng.uniform(0.15, 0.6)
        edge = np.clip((1 - rho) * axes.mean() / rng.uniform(1.0, 3.0), 0, 1)  # a soft rim
        values = level * (1 + contrast * texture[box]) * (0.55 + 0.45 * edge)
        brightness[box][mine] = values[mine]
        for _ in range(int(rng.integers(0, 3))):  # nucleoli: dark spots inside
            spot = rng.uniform(-0.5, 0.5, size=3)
            size = rng.uniform(0.15, 0.3)
            dist = np.sqrt(sum((loc - s) ** 2 for loc, s in zip(local, spot, strict=True)))
            dark = mine & (dist < size)
            brightness[box][dark] *= rng.uniform(0.3, 0.6)
    return instances, np.clip(brightness, 0, None)


def _distractors(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    nuclei: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unlabelled light around nuclei, as real stacks have it (the label stays the nuclei).

    Out-of-focus haze (the nuclei blurred far), sometimes autofluorescent cell walls (a coarse
    tissue's boundaries, as in plant stacks) and small bright granules.
    """
    from scipy import ndimage

    extra = np.zeros(shape, dtype=np.float32)
    top = float(nuclei.max()) or 1.0
    if rng.random() < 0.7:
        sigma = rng.uniform(3, 10)
        extra += ndimage.gaussian_filter(nuclei, (sigma / spacing[0], sigma, sigma)) * rng.uniform(
            0.1, 0.6
        )
    if rng.random() < 0.4:
        _, walls, _ = _tissue(shape, spacing, rng, diameter_range=(30, 90))
        extra += walls * top * rng.uniform(0.05, 0.4) * (1 + 0.3 * _smooth_noise(shape, 2.0, rng))
    if rng.random() < 0.3:
        granules = rng.random(shape) < rng.uniform(1e-5, 3e-4)
        grown = ndimage.binary_dilation(granules, np.ones((1, 3, 3), bool))
        extra += grown * top * rng.uniform(0.5, 1.5)
    return np.clip(extra, 0, None)


def _along(grid: np.ndarray, axis: int, part: slice) -> np.ndarray:
    """``grid`` (an open grid along ``axis``) cut to ``part`` along that axis."""
    return grid[tuple(part if a == axis else slice(None) for a in range(3))]


def _box(
    centre: np.ndarray, radius: float, shape: tuple[int, ...], spacing: Sequence[float]
) -> tuple[slice, ...] | None:
    """The voxel box around a sphere of ``radius`` (physical units) at ``centre``; None if out."""
    box = []
    for c, n, s in zip(centre, shape, spacing, strict=True):
        lo, hi = int(np.floor((c - radius) / s)), int(np.ceil((c + radius) / s)) + 1
        lo, hi = max(lo, 0), min(hi, n)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)


def _tissue(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    rng: np.random.Generator,
    diameter_range: tuple[float, float] = (12, 50),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cells, boundaries, brightness): a warped Voronoi tissue with bright membranes."""
    from scipy import ndimage

    physical = np.array(shape) * np.array(spacing)
    diameter = float(np.exp(rng.uniform(*np.log(diameter_range))))
    n_cells = max(4, int(np.prod(physical) / diameter**3 * 1.3))
    seeds = np.zeros(shape, dtype=bool)
    points = (rng.uniform(0, 1, size=(min(n_cells, 4000), 3)) * (np.array(shape) - 1)).round()
    seeds[tuple(points.astype(int).T)] = True
    _, nearest = ndimage.distance_transform_edt(~seeds, sampling=spacing, return_indices=True)
    cell_of_seed = np.zeros(shape, dtype=np.int32)
    cell_of_seed[seeds] = np.arange(1, int(seeds.sum()) + 1)
    cells = cell_of_seed[tuple(nearest)]
    # Warp the tessellation so that walls curve like real ones.
    amplitude = rng.uniform(0.5, 0.2 * diameter)
    coords = np.indices(shape, dtype=np.float32)
    for axis in range(3):
        coords[axis] += (
            _smooth_noise(shape, (diameter / 3 / spacing[0], diameter / 3, diameter / 3), rng)
            * amplitude
            / spacing[axis]
        )
    cells = ndimage.map_coordinates(cells, coords, order=0, mode="nearest").astype(np.int32)
    walls = np.zeros(shape, dtype=bool)
    for axis in range(3):
        step = np.diff(cells, axis=axis) != 0
        lo = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        walls[tuple(lo)] |= step
    thickness = int(rng.integers(0, 2))
    if thickness:
        walls = ndimage.binary_dilation(walls, np.ones((1, 3, 3), bool), iterations=thickness)
    # Some volumes reach the tissue's edge: no cells (nor walls) beyond a smooth surface.
    if rng.random() < 0.4:
        outside = _low_frequency(shape, rng, cells=3) < rng.uniform(0.2, 0.4)
        walls &= ~outside
        cells[outside] = 0
    gain = rng.uniform(0.4, 1.0, size=int(cells.max()) + 1).astype(np.float32)
    brightness = np.zeros(shape, dtype=np.float32)
    brightness[walls] = gain[cells[walls]] * (1 + 0.3 * _smooth_noise(shape, 2.0, rng)[walls])
    cytoplasm = rng.uniform(0.0, 0.15)
    inside = (cells > 0) & ~walls
    brightness[inside] = cytoplasm * gain[cells[inside]]
    cells[walls] = 0
    return cells, walls.astype(np.uint8), np.clip(brightness, 0, None)


def _thin(
    shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(label, brightness): filaments, ellipsoidal shells and curved sheets."""
    from scipy import ndimage

    depth, height, width = shape
    axis = np.zeros(shape, dtype=bool)
    brightness = np.zeros(shape, dtype=np.float32)
    n_fibres = int(rng.integers(8, 50) * height * width / 128**2) + 1
    for _ in range(n_fibres):
        points = _curve(shape, spacing, rng, length=rng.uniform(0.5, 1.5) * min(height, width))
        axis[tuple(points.T)] = True
    distance = ndimage.distance_transform_edt(~axis, sampling=spacing)
    label = distance <= rng.uniform(1.0, 2.0)
    brightness[label] = rng.uniform(0.4, 1.0)
    z, y, x = _grid(shape, spacing)
    physical = np.array(shape) * np.array(spacing)
    for _ in range(int(rng.integers(0, 4))):  # shells, like a nuclear lamina
        radii = rng.uniform(8, 30, size=3)
        centre = rng.uniform(0, 1, size=3) * physical
        rho = np.sqrt(((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2)
        rho = np.sqrt(rho**2 + ((x - centre[2]) / radii[2]) ** 2)
        shell = np.abs(rho - 1) * radii.mean() <= rng.uniform(0.7, 1.5)
        label |= shell
        brightness[shell] = np.maximum(brightness[shell], rng.uniform(0.3, 0.9))
    for _ in range(int(rng.integers(0, 3))):  # curved sheets, like a membrane
        height_map = _smooth_noise((1, height, width), (0, 12, 12), rng)[0] * rng.uniform(2, 8)
        level = rng.uniform(0.2, 0.8) * physical[0]
        sheet = np.abs(z - (level + height_map[None])) <= rng.uniform(0.8, 1.6)
        label |= sheet
        brightness[sheet] = np.maximum(brightness[sheet], rng.uniform(0.3, 0.8))
    return label.astype(np.uint8), brightness


def _curve(
    shape: tuple[int, ...], spacing: Sequence[float], rng: np.random.Generator, length: float
) -> np.ndarray:
    """Voxel indices (n, 3) along a smooth random curve, mostly in x-y."""
    from scipy import ndimage

    n = max(2, int(length * 2))
    position = rng.uniform(0.05, 0.95, size=3) * np.array(shape, dtype=float)
    heading = rng.uniform(0, 2 * np.pi)
    turn = ndimage.gaussian_filter1d(rng.normal(0, 0.1, size=n), sigma=15)
    tilt = ndimage.gaussian_filter1d(rng.normal(0, 0.08, size=n), sigma=25) * 5
    headings = heading + np.cumsum(turn)
    steps = np.stack([tilt / spacing[0], np.sin(headings), np.cos(headings)], axis=1) * 0.5
    points = np.round(position + np.cumsum(steps, axis=0)).astype(int)
    inside = np.all((points >= 0) & (points < np.array(shape)), axis=1)
    return points[inside]


# --------------------------------------------------------------------------- imaging


def _microscope(
    brightness: np.ndarray, spacing: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """What a confocal microscope records of ``brightness``, as uint8 or uint16."""
    from scipy import ndimage

    shape = brightness.shape
    sigma_xy = rng.uniform(0.6, 1.6)
    sigma_z = sigma_xy * rng.uniform(1.5, 4.0) / spacing[0]  # the PSF is longer along z
    signal = ndimage.gaussian_filter(brightness, (sigma_z, sigma_xy, sigma_xy))
    depth = np.arange(shape[0], dtype=np.float32)[:, None, None] * spacing[0]
    attenuation = np.exp(-depth / rng.uniform(60, 600))
    illumination = 1 - rng.uniform(0, 0.5) * _low_frequency(shape, rng)
    background = rng.uniform(0.0, 0.15) + rng.uniform(0, 0.15) * _low_frequency(shape, rng)
    expected = signal * attenuation * illumination + background
    photons = float(np.exp(rng.uniform(np.log(6), np.log(300))))  # at intensity 1
    counts = rng.poisson(expected * photons).astype(np.float32)
    counts += rng.normal(0, rng.uniform(0.3, 1.5), size=shape).astype(np.float32)
    if rng.random() < 0.3:  # hot pixels / bright specks
        specks = rng.random(shape) < rng.uniform(1e-5, 1e-3)
        counts[specks] += photons * rng.uniform(1, 3)
    bright = float(np.percentile(counts, 99.9)) + 1e-3
    if rng.random() < 0.5:
        dtype, top = np.uint8, 255
        gain = rng.uniform(120, 300) / bright  # above 255 saturates some voxels
        offset = rng.uniform(0, 20)
    else:
        dtype, top = np.uint16, 65535
        gain = float(np.exp(rng.uniform(np.log(300), np.log(40000)))) / bright
        offset = rng.uniform(0, 500)
    out = np.clip(np.round(counts * gain + offset), 0, top)
    return out.astype(dtype)
