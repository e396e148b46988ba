"""The patch buffer: counts, shapes, geometry of the augmentation, determinism, prefetch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellseg_trainer.data import (
    PatchBuffer,
    TrainingImage,
    augment_image,
    draw_buffer,
    iter_batches,
    patch_counts,
    rotate_image,
)
from napari_cellseg_trainer.data import buffer as buffer_module
from napari_cellseg_trainer.models.geometry import margin_of

SIZE_IN, SIZE_OUT = (8, 24, 24), (4, 12, 12)
MARGIN = (2, 6, 6)


def _image(shape=(6, 30, 34), seed=0, name="im", channels=1) -> TrainingImage:
    rng = np.random.default_rng(seed)
    raw = rng.random((channels, *shape), dtype=np.float32)
    return TrainingImage(
        name=name,
        raw=raw,
        label=(raw[0] > 0.5).astype(np.uint8),
        costmap=np.ones(shape, np.float32),
        source=name,
    )


def _blocky_image(shape=(4, 41, 45)) -> TrainingImage:
    """Raw equal to the label: big off-centre blocks, so bicubic and nearest nearly agree."""
    label = np.zeros(shape, np.uint8)
    label[:, 5:20, 8:30] = 1
    label[:, 26:37, 30:40] = 1
    return TrainingImage(
        "blocks", label[None].astype(np.float32), label, np.ones(shape, np.float32), "b"
    )


def test_margin_is_half_the_size_difference():
    assert margin_of(SIZE_IN, SIZE_OUT) == MARGIN
    with pytest.raises(ValueError, match="even"):
        margin_of((8, 25, 24), SIZE_OUT)
    with pytest.raises(ValueError, match=">= 0"):
        margin_of((2, 24, 24), SIZE_OUT)


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [(10, 3, [4, 3, 3]), (9, 3, [3, 3, 3]), (2, 3, [1, 1, 0]), (200, 7, [29] * 4 + [28] * 3)],
)
def test_patch_counts_spread_evenly_first_images_one_more(n, k, expected):
    assert patch_counts(n, k) == expected


def test_buffer_takes_patch_counts_from_each_image():
    # Images exactly size_out large: every patch is the whole image, and its (rotated) cost
    # map keeps the image's own value at the centre, which identifies where it came from.
    images = [
        TrainingImage(
            f"im{i}",
            np.zeros((1, *SIZE_OUT), np.float32),
            np.zeros(SIZE_OUT, np.uint8),
            np.full(SIZE_OUT, i + 1, np.float32),
            f"im{i}",
        )
        for i in range(3)
    ]
    patches = draw_buffer(images, 7, SIZE_IN, SIZE_OUT, np.random.default_rng(0))
    origin = patches.costmap[:, 2, 6, 6]
    assert origin.tolist() == [1, 1, 1, 2, 2, 3, 3]


def test_patch_shapes_and_dtypes():
    images = [_image(seed=i, channels=2) for i in range(2)]
    patches = draw_buffer(images, 5, SIZE_IN, SIZE_OUT, np.random.default_rng(0))
    assert len(patches) == 5
    assert patches.raw.shape == (5, 2, *SIZE_IN) and patches.raw.dtype == np.float32
    assert patches.label.shape == (5, *SIZE_OUT) and patches.label.dtype == np.uint8
    assert patches.costmap.shape == (5, *SIZE_OUT) and patches.costmap.dtype == np.float32


def _unrotated(image, margin, rng):
    return rotate_image(image, margin, 0.0, False)


def test_label_patches_lie_inside_and_raw_starts_at_the_same_corner(monkeypatch):
    # Without rotation, a voxel-index image tells where each patch came from.
    monkeypatch.setattr(buffer_module, "augment_image", _unrotated)
    shape = (7, 20, 23)
    index = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    image = TrainingImage("idx", index[None], np.zeros(shape, np.uint8), index, "idx")
    patches = draw_buffer([image], 300, SIZE_IN, SIZE_OUT, np.random.default_rng(1))
    corners = np.array(np.unravel_index(patches.costmap[:, 0, 0, 0].astype(int), shape)).T
    assert corners.min(axis=0).tolist() == [0, 0, 0]
    assert corners.max(axis=0).tolist() == [s - o for s, o in zip(shape, SIZE_OUT, strict=True)]
    for k, (z, y, x) in enumerate(corners):
        expected = index[z : z + 4, y : y + 12, x : x + 12]
        np.testing.assert_array_equal(patches.costmap[k], expected)
        mz, my, mx = MARGIN
        # Bicubic at whole-voxel positions reproduces the values up to float32 rounding.
        np.testing.assert_allclose(patches.raw[k, 0, mz:-mz, my:-my, mx:-mx], expected, rtol=1e-5)


def test_rotation_is_about_the_centre_and_keeps_distances():
    shape = (1, 31, 35)  # odd sizes: the centre is a voxel
    image = TrainingImage(
        "dot",
        np.zeros((1, *shape), np.float32),
        np.zeros(shape, np.uint8),
        np.zeros(shape, np.float32),
        "dot",
    )
    image.label[0, 15, 17] = 1  # the centre
    image.label[0, 15, 27] = 1  # 10 voxels to the right of it
    _, label, _ = rotate_image(image, (0, 0, 0), 90.0, False)
    ys, xs = np.nonzero(label[0])
    assert (15, 17) in zip(ys.tolist(), xs.tolist(), strict=True)
    assert sorted(np.hypot(ys - 15, xs - 17).round().tolist()) == [0.0, 10.0]
    assert (ys != 15).any()  # the outer dot moved


def test_rotated_raw_and_label_stay_aligned():
    image = _blocky_image()
    margin = (1, 7, 5)
    raw, label, costmap = rotate_image(image, margin, 37.0, True)
    assert raw.shape == (1, 4 + 2, 41 + 14, 45 + 10)
    assert not np.array_equal(label, image.label)  # it did rotate
    inner = raw[0, 1:-1, 7:-7, 5:-5]
    assert np.mean((inner > 0.5) == (label == 1)) > 0.98
    centroid_raw = np.array(np.nonzero(inner > 0.5)).mean(axis=1)
    centroid_label = np.array(np.nonzero(label)).mean(axis=1)
    np.testing.assert_allclose(centroid_raw, centroid_label, atol=0.3)
    # Rotated in from outside: zero weight, label 0; the padding is zero.
    assert costmap[0, 0, 0] == 0 and costmap[0, 20, 22] == 1
    assert np.all(raw[:, 0] == 0) and np.all(raw[:, -1] == 0)


def test_patches_from_a_rotated_image_align_raw_and_label():
    image = _blocky_image()
    patches = draw_buffer([image], 40, SIZE_IN, SIZE_OUT, np.random.default_rng(5))
    mz, my, mx = MARGIN
    centre = patches.raw[:, 0, mz:-mz, my:-my, mx:-mx]
    assert np.mean((centre > 0.5) == (patches.label == 1)) > 0.97
    assert 0 < patches.label.mean() < 1


def test_flip_mirrors_the_rotated_image_exactly():
    image = _image(seed=4)
    plain = rotate_image(image, MARGIN, 23.0, False)
    flipped = rotate_image(image, MARGIN, 23.0, True)
    for a, b in zip(plain, flipped, strict=True):
        np.testing.assert_array_equal(a[..., ::-1], b)


def test_angle_and_flip_are_drawn_as_specified(monkeypatch):
    drawn = []
    monkeypatch.setattr(
        buffer_module, "rotate_image", lambda im, m, angle, flip: drawn.append((angle, flip))
    )
    image = _image()
    for seed in range(400):
        augment_image(image, MARGIN, np.random.default_rng(seed))
    angles = np.array([a for a, _ in drawn])
    flips = sum(f for _, f in drawn)
    assert angles.min() >= 1 and angles.max() < 180 and angles.std() > 40
    assert 160 < flips < 240  # binomial(400, 1/2): mean 200, sd 10


def test_augmentation_is_not_quantised():
    image = _image(seed=2)
    raw, _, _ = augment_image(image, MARGIN, np.random.default_rng(3))
    values = raw[raw != 0]
    off_grid = np.abs(values * 255 - np.round(values * 255)) > 1e-3
    assert off_grid.mean() > 0.9
    assert raw.dtype == np.float32


def test_buffers_are_deterministic_and_independent_of_workers():
    images = [_image(seed=i, name=f"im{i}") for i in range(3)]
    one = draw_buffer(images, 7, SIZE_IN, SIZE_OUT, np.random.default_rng(11), workers=1)
    again = draw_buffer(images, 7, SIZE_IN, SIZE_OUT, np.random.default_rng(11), workers=1)
    two = draw_buffer(images, 7, SIZE_IN, SIZE_OUT, np.random.default_rng(11), workers=2)
    other = draw_buffer(images, 7, SIZE_IN, SIZE_OUT, np.random.default_rng(12), workers=1)
    for field in ("raw", "label", "costmap"):
        np.testing.assert_array_equal(getattr(one, field), getattr(again, field))
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
    assert not np.array_equal(one.raw, other.raw)


def test_prefetch_gives_the_same_sequence_of_buffers():
    images = [_image(seed=i, name=f"im{i}") for i in range(2)]
    with PatchBuffer(
        images, 4, SIZE_IN, SIZE_OUT, np.random.default_rng(3), workers=2, prefetch=True
    ) as pre:
        prefetched = [pre.next_buffer() for _ in range(3)]
    plain = PatchBuffer(images, 4, SIZE_IN, SIZE_OUT, np.random.default_rng(3))
    direct = [plain.next_buffer() for _ in range(3)]
    plain.close()
    for a, b in zip(prefetched, direct, strict=True):
        assert a.raw.shape == (4, 1, *SIZE_IN)
        np.testing.assert_array_equal(a.raw, b.raw)
        np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(prefetched[0].raw, prefetched[1].raw)  # each buffer is new
    with pytest.raises(RuntimeError, match="closed"):
        pre.next_buffer()


def test_buffer_refuses_images_smaller_than_size_out():
    small = _image(shape=(3, 30, 34))
    with pytest.raises(ValueError, match="smaller than size_out"):
        PatchBuffer([small], 4, SIZE_IN, SIZE_OUT, np.random.default_rng(0))


def test_iter_batches_covers_every_patch_once():
    images = [_image(seed=i) for i in range(2)]
    patches = draw_buffer(images, 10, SIZE_IN, SIZE_OUT, np.random.default_rng(0))
    batches = list(iter_batches(patches, 4, np.random.default_rng(1)))
    assert [len(raw) for raw, _, _ in batches] == [4, 4, 2]
    raw, label, costmap = batches[0]
    assert (
        raw.dtype == torch.float32 and label.dtype == torch.int64 and costmap.dtype == torch.float32
    )
    assert raw.shape == (4, 1, *SIZE_IN) and label.shape == (4, *SIZE_OUT)
    seen = torch.cat([r for r, _, _ in batches]).flatten(1)[:, 0].sort().values
    np.testing.assert_array_equal(seen.numpy(), np.sort(patches.raw.reshape(10, -1)[:, 0]))
    in_order = list(iter_batches(patches, 4, np.random.default_rng(1), shuffle=False))
    np.testing.assert_array_equal(in_order[0][0].numpy(), patches.raw[:4])
