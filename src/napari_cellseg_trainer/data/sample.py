"""Embedded sample training data, generated deterministically (nothing is downloaded).

Two kinds, one per model:

- ``"filaments"`` (for ``unet_xy``): thin curved fibres a few voxels thick, like microtubules,
  plus thin shells around nucleus-shaped ellipsoids, like the nuclear lamina.
- ``"blobs"`` (for ``unet_xy_zoom``): large nucleus-like ellipsoids, tens of voxels across.

The raw image is what a microscope would show of the true structure: blurred more in z than
in x-y, with uneven background, intensities that vary per object, texture, and shot and read
noise; so a network has to learn the structure, not a threshold. The label is the true
structure. The cost map is 1, except in an "unannotated" box (cost 0, label 0) when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .folder import write_training_image

SAMPLE_KINDS: tuple[str, ...] = ("filaments", "blobs")

# Voxel size (z, y, x) relative to x-y: z steps are about three times coarser, as in a
# typical confocal stack, so shapes and blur are anisotropic.
_SPACING = (3.0, 1.0, 1.0)
_BLUR_SIGMA = (1.0, 1.2, 1.2)  # in voxels: z blur 1 voxel = 3 x-y voxels
_FIBRE_SAMPLING = (1.0, 1.0, 1.0)
_PHOTONS = 40.0  # photons at intensity 1: sets the shot-noise level
_READ_NOISE = 0.02


def make_sample(
    kind: str = "filaments",
    shape: Sequence[int] = (32, 128, 128),
    seed: int = 0,
    unannotated_box: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic training image.

    Parameters
    ----------
    kind : one of :data:`SAMPLE_KINDS`.
    shape : (Z, Y, X).
    seed : the same seed gives the same arrays, byte for byte.
    unannotated_box : mark a box in one corner as not annotated (cost 0 and label 0 there).

    Returns
    -------
    raw : (Z, Y, X) float32, about [0, 1].
    label : (Z, Y, X) uint8 in {0, 1}.
    costmap : (Z, Y, X) float32.
    """
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown sample kind {kind!r}; choose one of {', '.join(SAMPLE_KINDS)}")
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    if kind == "filaments":
        label, brightness = _filaments_and_shells(shape, rng)
    else:
        label, brightness = _nuclei(shape, rng)
    raw = _microscope(brightness, rng)
    costmap = np.ones(shape, dtype=np.float32)
    if unannotated_box:
        box = tuple(
            slice(0, max(1, s // 4)) if axis else slice(None) for axis, s in enumerate(shape)
        )
        costmap[box] = 0
        label[box] = 0
    return raw, label, costmap


def sample_image(kind: str = "filaments") -> np.ndarray:
    """The raw image of the default sample of ``kind``, (Z, Y, X) float32."""
    return make_sample(kind)[0]


def write_sample_folder(
    folder: str | Path,
    kind: str = "filaments",
    n_images: int = 3,
    shape: Sequence[int] = (32, 128, 128),
    seed: int = 0,
) -> list[Path]:
    """Write ``sample_00`` ... as a training folder; every second image has an unannotated box.

    Returns the paths of all files written (three per image).
    """
    paths: list[Path] = []
    for i in range(n_images):
        raw, label, costmap = sample_training_image(kind, i, n_images, shape, seed)
        paths += write_training_image(folder, f"sample_{i:02d}", raw, label, costmap)
    return paths


def sample_training_image(
    kind: str = "filaments",
    index: int = 0,
    n_images: int = 3,
    shape: Sequence[int] = (32, 128, 128),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``index`` of the sample folder, exactly as :func:`write_sample_folder` writes it."""
    image_seed = np.random.SeedSequence(seed).generate_state(n_images)[index]
    return make_sample(kind, shape, int(image_seed), unannotated_box=index % 2 == 1)


# --------------------------------------------------------------------------- structures


def _filaments_and_shells(
    shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(label, brightness): curved fibres and nuclear shells, each with its own intensity."""
    from scipy import ndimage  # not at the top: scipy costs the panel 0.3 s

    depth, height, width = shape
    scale = min(height, width)
    fibre_axis = np.zeros(shape, dtype=bool)
    fibre_id = np.zeros(shape, dtype=np.int32)
    n_fibres = max(3, round(8 * height * width / 128**2))
    for k in range(n_fibres):
        points = _curve(shape, rng, length=rng.uniform(0.6, 1.2) * scale)
        fibre_axis[tuple(points.T)] = True
        fibre_id[tuple(points.T)] = k + 1
    # Distance (in x-y voxel units) to the nearest fibre axis, and which fibre that is.
    # Thickness as the microscope shows it (sub-resolution fibres look as wide as the blur):
    # about 3 voxels across in x-y and 3 slices in z.
    distance, nearest = ndimage.distance_transform_edt(
        ~fibre_axis, sampling=_FIBRE_SAMPLING, return_indices=True
    )
    fibres = distance <= 1.2
    brightness = np.zeros(shape, dtype=np.float32)
    fibre_gain = rng.uniform(0.5, 1.0, size=n_fibres + 1).astype(np.float32)
    brightness[fibres] = fibre_gain[fibre_id[tuple(nearest[:, fibres])]]

    shells = np.zeros(shape, dtype=bool)
    for _ in range(max(1, round(2 * height * width / 128**2))):
        radii = np.array(
            [rng.uniform(0.25, 0.4) * depth * _SPACING[0], *rng.uniform(0.15, 0.25, size=2) * scale]
        )
        centre = rng.uniform(0.3, 0.7, size=3) * np.array(shape)
        rho, mean_radius = _ellipsoid_radius(shape, centre, radii), radii[1:].mean()
        shell = np.abs(rho - 1) * mean_radius <= 1.0
        shells |= shell
        brightness[shell] = np.maximum(brightness[shell], rng.uniform(0.4, 0.8))
    return (fibres | shells).astype(np.uint8), brightness


def _nuclei(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(label, brightness): large ellipsoids with chromatin-like texture."""
    from scipy import ndimage

    depth, height, width = shape
    scale = min(height, width)
    label = np.zeros(shape, dtype=np.uint8)
    brightness = np.zeros(shape, dtype=np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.7, 2, 2))
    texture = 1 + 0.25 * texture / (texture.std() + 1e-6)
    for _ in range(max(2, round(5 * height * width / 128**2))):
        radii = np.array(
            [rng.uniform(0.2, 0.35) * depth * _SPACING[0], *rng.uniform(0.09, 0.16, size=2) * scale]
        )
        centre = rng.uniform(0.15, 0.85, size=3) * np.array(shape)
        centre[0] = rng.uniform(0.35, 0.65) * depth
        inside = _ellipsoid_radius(shape, centre, radii) <= 1
        label[inside] = 1
        brightness[inside] = rng.uniform(0.4, 1.0) * texture[inside]
    return label, brightness


def _curve(shape: tuple[int, ...], rng: np.random.Generator, length: float) -> np.ndarray:
    """Voxel indices (n, 3) along a smooth random curve that stays mostly in x-y."""
    from scipy import ndimage

    n = max(2, int(length * 2))  # half-voxel steps leave no gaps
    position = rng.uniform(0.1, 0.9, size=3) * np.array(shape, dtype=float)
    heading = rng.uniform(0, 2 * np.pi)
    turn_rate = ndimage.gaussian_filter1d(rng.normal(0, 0.08, size=n), sigma=20)
    tilt = ndimage.gaussian_filter1d(rng.normal(0, 0.05, size=n), sigma=30) * 5
    points = np.empty((n, 3))
    for i in range(n):
        heading += turn_rate[i]
        step = np.array([tilt[i] / _SPACING[0], np.sin(heading), np.cos(heading)]) * 0.5
        position = position + step
        points[i] = position
    points = np.round(points).astype(int)
    inside = np.all((points >= 0) & (points < np.array(shape)), axis=1)
    return points[inside]


def _ellipsoid_radius(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised radius: 1 on the surface of the ellipsoid (radii in x-y voxel units)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return np.sqrt(
        ((z - centre[0]) * _SPACING[0] / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((x - centre[2]) / radii[2]) ** 2
    )


# --------------------------------------------------------------------------- imaging


def _microscope(brightness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, uneven background, shot and read noise, then scale to about [0, 1]."""
    from scipy import ndimage

    signal = ndimage.gaussian_filter(brightness, _BLUR_SIGMA)
    # A smooth background that varies across the field, as with uneven illumination.
    coarse = rng.uniform(0.0, 1.0, size=(2, 4, 4)).astype(np.float32)
    factors = [s / c for s, c in zip(brightness.shape, coarse.shape, strict=True)]
    background = 0.05 + 0.15 * ndimage.zoom(
        coarse, factors, order=1, grid_mode=True, mode="nearest"
    )
    expected = (
        signal + background[: signal.shape[0], : signal.shape[1], : signal.shape[2]]
    ) * _PHOTONS
    counts = rng.poisson(expected).astype(np.float32) / _PHOTONS
    counts += rng.normal(0, _READ_NOISE, size=counts.shape).astype(np.float32)
    low, high = np.percentile(counts, [0.5, 99.9])
    return ((counts - low) / (high - low + 1e-6)).astype(np.float32)


def sample_cache_folder(kind: str = "filaments") -> Path:
    """Where the napari panel keeps the sample training folder (``$XDG_CACHE_HOME`` aware)."""
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "napari-cellseg-trainer" / f"sample_{kind}"


def sample_paths(folder: str | Path, n_images: int = 3) -> list[Path]:
    """The files :func:`write_sample_folder` writes into ``folder``."""
    from .folder import CM_SUFFIX, GT_SUFFIX, RAW_SUFFIX

    folder = Path(folder)
    names = [f"sample_{i:02d}" for i in range(n_images)]
    return [folder / f"{n}{suffix}" for n in names for suffix in (RAW_SUFFIX, GT_SUFFIX, CM_SUFFIX)]


def ensure_sample_folder(kind: str = "filaments", folder: str | Path | None = None) -> Path:
    """The sample training folder of ``kind``, written first if any of its files is missing."""
    folder = Path(folder) if folder is not None else sample_cache_folder(kind)
    if not all(p.is_file() for p in sample_paths(folder)):
        write_sample_folder(folder, kind=kind)
    return folder
