"""The patch buffer: augmented images cut into training patches, ``PatchPerBuffer`` at a time.

Per image and buffer: pad the raw image by the margin ``(size_in - size_out) / 2`` (zeros),
rotate every z-slice by one random angle in [1, 180) degrees about the centre (raw bicubic,
label and cost map nearest), flip left-right with probability 1/2, then cut patches whose
label part (size_out) lies inside the image. All in float: nothing is quantised to 8 bits.

The rotation is one ``grid_sample`` per chunk of slices with a sampling grid built once per
image. The label's grid is the padded raw's grid cropped by the margin, so raw and label are
sampled at exactly the same source points: they cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..models.geometry import margin_of
from ..normalization import normalize
from .folder import DataError, TrainingImage
from .intensity import acquisition_change
from .rotation import resample, rotation_grid
from .sampling import ESTABLISHED, Sampling, patch_corners, vary_intensity
from .stored_patches import cut_stored_patches
from .zarr_folder import is_stored

# Slices rotated per grid_sample call: bounds the temporary memory (one chunk of a
# 600 x 900 image is ~35 MB) while keeping each call large enough to be efficient.
SLICES_PER_CALL = 16
_SEED_LIMIT = 2**63


@dataclass(frozen=True, eq=False)
class PatchSet:
    """One buffer of patches.

    Attributes
    ----------
    raw : (N, C, *size_in) float32.
    label : (N, *size_out) class labels (the images' label dtype, normally uint8).
    costmap : (N, *size_out) float32.
    """

    raw: np.ndarray
    label: np.ndarray
    costmap: np.ndarray

    def __len__(self) -> int:
        return len(self.raw)


# --------------------------------------------------------------------------- sizes and counts


def patch_counts(n_patches: int, n_images: int) -> list[int]:
    """``n_patches`` spread over ``n_images`` as evenly as possible, the first ones one more."""
    base, extra = divmod(n_patches, n_images)
    return [base + (i < extra) for i in range(n_images)]


# --------------------------------------------------------------------------- augmentation


def rotate_image(
    image: TrainingImage, margin: Sequence[int], angle_deg: float, flip: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad, rotate and maybe flip one image with a given angle; see :func:`augment_image`."""
    n_channels, depth, height, width = image.raw.shape
    mz, my, mx = margin
    grid = rotation_grid((height, width), (my, mx), angle_deg, flip)
    raw = np.zeros((n_channels, depth + 2 * mz, height + 2 * my, width + 2 * mx), dtype=np.float32)
    for c in range(n_channels):
        for z0 in range(0, depth, SLICES_PER_CALL):
            z1 = min(z0 + SLICES_PER_CALL, depth)
            raw[c, mz + z0 : mz + z1] = resample(image.raw[c, z0:z1], grid, "bicubic")
    # Cropping the padded grid by the margin gives the label exactly the raw's sample points.
    label_grid = grid[:, my : my + height, mx : mx + width].contiguous()
    label = np.empty(image.label.shape, dtype=image.label.dtype)
    costmap = np.empty(image.costmap.shape, dtype=np.float32)
    for z0 in range(0, depth, SLICES_PER_CALL):
        z1 = min(z0 + SLICES_PER_CALL, depth)
        stacked = np.concatenate([image.label[z0:z1].astype(np.float32), image.costmap[z0:z1]])
        both = resample(stacked, label_grid, "nearest")
        # Nearest sampling only copies values, so the labels are whole numbers already.
        label[z0:z1] = both[: z1 - z0]
        costmap[z0:z1] = both[z1 - z0 :]
    return raw, label, costmap


def augment_image(
    image: TrainingImage, margin: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random augmentation of a whole image.

    Returns
    -------
    raw : (C, Z + 2mz, Y + 2my, X + 2mx) float32, zero-padded, rotated, maybe flipped.
    label : (Z, Y, X), rotated (nearest) and flipped alike; 0 where rotated in from outside.
    costmap : (Z, Y, X) float32, likewise; 0 where rotated in from outside.
    """
    angle = rng.uniform(1.0, 180.0)
    flip = bool(rng.random() < 0.5)
    return rotate_image(image, margin, angle, flip)


# --------------------------------------------------------------------------- drawing patches


def draw_buffer(
    images: Sequence[TrainingImage],
    n_patches: int,
    size_in: Sequence[int],
    size_out: Sequence[int],
    rng: np.random.Generator,
    workers: int = 1,
    cancel: threading.Event | None = None,
    sampling: Sampling = ESTABLISHED,
) -> PatchSet:
    """Augment each image once and cut ``n_patches`` patches spread evenly over the images.

    Parameters
    ----------
    images : the training images (all with the same channel count).
    n_patches : patches in the buffer (``PatchPerBuffer``).
    size_in, size_out : (z, y, x) sizes of the raw and label patches.
    rng : draws one seed per image up front, so the result does not depend on ``workers``.
    workers : images augmented in parallel threads; 0 or 1 means in this thread.
    cancel : when set, stops before the next image with ``CancelledError``.
    sampling : foreground-centred patches and intensity augmentation (off: the established).
    """
    margin = _checked_margin(images, size_in, size_out)
    counts = patch_counts(n_patches, len(images))
    seeds = rng.integers(_SEED_LIMIT, size=len(images))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = PatchSet(
        raw=np.empty((n_patches, images[0].raw.shape[0], *size_in), dtype=np.float32),
        label=np.empty(
            (n_patches, *size_out), dtype=np.result_type(*(im.label.dtype for im in images))
        ),
        costmap=np.empty((n_patches, *size_out), dtype=np.float32),
    )
    jobs = [
        (image, count, int(seed), int(start), out, margin, size_out, cancel, sampling)
        for image, count, seed, start in zip(images, counts, seeds, starts, strict=True)
        if count > 0
    ]
    if workers <= 1:
        for job in jobs:
            _cut_patches(*job)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="augment") as pool:
            futures = [pool.submit(_cut_patches, *job) for job in jobs]
            for future in futures:
                future.result()  # re-raises a worker's exception here
    return out


def _checked_margin(
    images: Sequence[TrainingImage], size_in: Sequence[int], size_out: Sequence[int]
) -> tuple[int, int, int]:
    """The margin around the output patch, once the images are known to fit the patches."""
    if not images:
        raise DataError(["no training images to draw patches from"])
    margin = margin_of(size_in, size_out)
    _check_sizes(images, size_out)
    return margin


def _check_sizes(images: Sequence[TrainingImage], size_out: Sequence[int]) -> None:
    """Same channel count everywhere, and room for one output patch in every image."""
    problems = []
    n_channels = images[0].raw.shape[0]
    for image in images:
        if image.raw.shape[0] != n_channels:
            problems.append(
                f"{image.source}: {image.raw.shape[0]} channel(s), "
                f"but {images[0].source} has {n_channels}"
            )
        if any(s < o for s, o in zip(image.label.shape, size_out, strict=True)):
            problems.append(
                f"{image.source}: image {image.label.shape} is smaller than "
                f"size_out {list(size_out)}"
            )
    if problems:
        raise DataError(problems)


def _cut_patches(
    image: TrainingImage,
    count: int,
    seed: int,
    start: int,
    out: PatchSet,
    margin: tuple[int, int, int],
    size_out: Sequence[int],
    cancel: threading.Event | None,
    sampling: Sampling,
) -> None:
    """Augment one image and write its ``count`` patches into ``out`` from index ``start``."""
    if cancel is not None and cancel.is_set():
        raise CancelledError
    rng = np.random.default_rng(seed)
    if is_stored(image):  # too large to rotate whole: each patch from its own window
        cut_stored_patches(image, count, rng, out, start, margin, size_out, sampling)
        return
    changes = _acquisition_changes(image, count, sampling)
    if changes > 1:  # the image changed and augmented once per group of patches
        each = replace(sampling, per_patch=False)  # a group: one change
        first = start
        seeds = rng.integers(_SEED_LIMIT, size=changes)
        for n, own in zip(patch_counts(count, changes), seeds, strict=True):
            _cut_patches(image, n, int(own), first, out, margin, size_out, cancel, each)
            first += n
        return
    if sampling.acquisition is not None:  # its own stream: the same patches with it or not
        image = next_acquisition(image, sampling.acquisition, np.random.default_rng([seed, 1]))
    raw, label, costmap = augment_image(image, margin, rng)
    size_in = out.raw.shape[2:]
    corners = patch_corners(label, costmap, size_out, count, sampling.foreground_share, rng)
    oz, oy, ox = size_out
    for k, (z, y, x) in enumerate(corners):
        out.raw[start + k] = raw[:, z : z + size_in[0], y : y + size_in[1], x : x + size_in[2]]
        out.label[start + k] = label[z : z + oz, y : y + oy, x : x + ox]
        out.costmap[start + k] = costmap[z : z + oz, y : y + oy, x : x + ox]
        if sampling.intensity:
            vary_intensity(out.raw[start + k], rng)
    # The augmented volumes go out of scope here: only the patches stay in memory.


# With per_patch, the changes of one image in one buffer touch at most this many voxels in all:
# a patch each for a volume up to 8M voxels (8 patches a buffer), fewer for a bigger one, and
# one a buffer past 64M (each change normalises the whole image again)
PER_PATCH_VOXELS = 2**26


def _acquisition_changes(image: TrainingImage, count: int, sampling: Sampling) -> int:
    """How many acquisition changes ``count`` patches of ``image`` get in one buffer."""
    if sampling.acquisition is None or not sampling.per_patch:
        return 1
    return min(count, max(1, PER_PATCH_VOXELS // image.raw.size))


def next_acquisition(image: TrainingImage, recipe: int, rng: np.random.Generator) -> TrainingImage:
    """``image`` as a next acquisition might record it, normalised again by ``recipe``."""
    changed = np.stack([acquisition_change(ch, rng, image.label) for ch in image.raw])
    return replace(image, raw=normalize(changed, recipe), normalized_by=recipe)


def iter_batches(
    patches: PatchSet, batch_size: int, rng: np.random.Generator, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One pass over a buffer: (raw float32, label int64, costmap float32) tensors.

    The last batch holds the remainder and may be smaller than ``batch_size``.
    """
    order = rng.permutation(len(patches)) if shuffle else np.arange(len(patches))
    for begin in range(0, len(order), batch_size):
        index = order[begin : begin + batch_size]
        yield (
            torch.from_numpy(patches.raw[index]),
            torch.from_numpy(patches.label[index].astype(np.int64)),
            torch.from_numpy(patches.costmap[index]),
        )


# --------------------------------------------------------------------------- the buffer


class PatchBuffer:
    """Draws one :class:`PatchSet` after another from a fixed list of images.

    With ``prefetch``, the next buffer is built in a background thread while the caller
    trains on the current one. The buffers are the same with and without prefetch: each
    buffer's seed comes from a generator of the buffer's own, drawn in the caller's thread.

    Parameters
    ----------
    images, n_patches, size_in, size_out, workers, sampling : as for :func:`draw_buffer`.
    rng : one seed is drawn from it here; the buffer keeps no reference to it.
    prefetch : build the next buffer in the background.
    """

    def __init__(
        self,
        images: Sequence[TrainingImage],
        n_patches: int,
        size_in: Sequence[int],
        size_out: Sequence[int],
        rng: np.random.Generator,
        workers: int = 1,
        prefetch: bool = False,
        sampling: Sampling = ESTABLISHED,
    ) -> None:
        if n_patches < 1:
            raise ValueError(f"PatchPerBuffer must be >= 1, got {n_patches}")
        _checked_margin(images, size_in, size_out)  # fail now, not in a background thread
        self.images = list(images)
        self.n_patches = n_patches
        self.size_in, self.size_out = tuple(size_in), tuple(size_out)
        self.workers = workers
        self.sampling = sampling
        self._seeds = np.random.default_rng(int(rng.integers(_SEED_LIMIT)))
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="patch-buffer") if prefetch else None
        self._pending: Future[PatchSet] | None = None
        self._closed = False

    def next_buffer(self) -> PatchSet:
        """The next buffer (waits for the prefetched one if it is not finished yet)."""
        if self._closed:
            raise RuntimeError("this PatchBuffer is closed")
        if self._pending is None:
            patches = self._build(self._next_seed())
        else:
            patches, self._pending = self._pending.result(), None
        if self._pool is not None:
            self._pending = self._pool.submit(self._build, self._next_seed())
        return patches

    def close(self) -> None:
        """Stop prefetching; a build under way stops before its next image."""
        self._closed = True
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pending = None

    def __enter__(self) -> PatchBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seed(self) -> int:
        return int(self._seeds.integers(_SEED_LIMIT))

    def _build(self, seed: int) -> PatchSet:
        return draw_buffer(
            self.images,
            self.n_patches,
            self.size_in,
            self.size_out,
            np.random.default_rng(seed),
            workers=self.workers,
            cancel=self._cancel,
            sampling=self.sampling,
        )
