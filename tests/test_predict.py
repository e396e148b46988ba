"""Whole-volume tiled prediction: tiles must add up to what the network computes on the volume.

Most tests use small stand-in networks whose answer on a whole volume is known exactly (a fixed
valid convolution; a constant), so that tile offsets, padding, blending, flips and cropping are
checked voxel by voxel on volumes of many tiles in well under a second. The real unet_xy is used
where the question is about it: one tile must equal one untiled forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_cellseg_trainer import config
from napari_cellseg_trainer.inference import PredictionCancelled, postprocess, predict_volume
from napari_cellseg_trainer.inference.run import segment
from napari_cellseg_trainer.models import build_model

TINY_IN, TINY_OUT = (32, 100, 100), (4, 12, 12)


class ConvModel(nn.Module):
    """One fixed valid 3-D convolution y over all channels; outputs log-softmax of [-y, y] (main),
    [y, -y] (aux 1) and [-2y, 2y] (aux 2), so p(main, class 1) = sigmoid(2y).

    It records the batch size of every forward pass.
    """

    def __init__(self, kernel: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.from_numpy(kernel.astype(np.float32))[None])
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.batches.append(x.shape[0])
        y = F.conv3d(x, self.kernel)
        return [
            F.log_softmax(torch.cat(pair, 1), 1) for pair in ((-y, y), (y, -y), (-2 * y, 2 * y))
        ]


class ConstantModel(nn.Module):
    """Crops ``margin`` like a valid network, and answers the same log-probabilities everywhere."""

    def __init__(self, margin: tuple[int, int, int], logits: tuple[float, float] = (0.0, 1.3)):
        super().__init__()
        self.margin = margin
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shape = [s - 2 * m for s, m in zip(x.shape[2:], self.margin, strict=True)]
        out = F.log_softmax(self.logits, 0).view(1, 2, 1, 1, 1).expand(x.shape[0], 2, *shape)
        return [out, out, out]


def random_kernel(channels: int, size=(3, 5, 5), seed: int = 0) -> np.ndarray:
    """A kernel with no symmetry, so a wrong flip, offset or padding changes the answer."""
    return np.random.default_rng(seed).normal(0, 0.3, (channels, *size))


def pad_by_hand(image: np.ndarray, margin) -> np.ndarray:
    """predict.md: y and x mirrored (symmetric) by the margin, z with zeros."""
    mz, my, mx = margin
    image = np.pad(image, ((0, 0), (0, 0), (my, my), (mx, mx)), mode="symmetric")
    return np.pad(image, ((0, 0), (mz, mz), (0, 0), (0, 0)), mode="constant")


def conv_by_hand(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid correlation of (C, Z, Y, X) with a (C, kz, ky, kx) kernel, in float64."""
    _, kz, ky, kx = kernel.shape
    out_shape = [n - k + 1 for n, k in zip(padded.shape[1:], kernel.shape[1:], strict=True)]
    out = np.zeros(out_shape)
    for dz in range(kz):
        for dy in range(ky):
            for dx in range(kx):
                window = padded[
                    :, dz : dz + out_shape[0], dy : dy + out_shape[1], dx : dx + out_shape[2]
                ]
                out += np.tensordot(kernel[:, dz, dy, dx], window, axes=1)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def expected_main(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """p(main, class 1) of ConvModel on the whole volume, computed without tiles."""
    margin = [(k - 1) // 2 for k in kernel.shape[1:]]
    return sigmoid(2 * conv_by_hand(pad_by_hand(image.astype(np.float64), margin), kernel))


def conv_sizes(kernel: np.ndarray, size_out) -> tuple[tuple, tuple]:
    size_in = tuple(o + k - 1 for o, k in zip(size_out, kernel.shape[1:], strict=True))
    return size_in, tuple(size_out)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("unet_xy")


# ------------------------------------------------------------------------- the real network


@pytest.mark.parametrize("tiling", ["blend", "established"])
def test_one_tile_equals_an_untiled_forward_pass_of_unet_xy(tiling, unet):
    image = np.random.default_rng(0).random((1, *TINY_OUT), dtype=np.float32)
    pairs = ((0, 1), (1, 1), (2, 0))
    result = predict_volume(unet, image, TINY_IN, TINY_OUT, output_pairs=pairs, tiling=tiling)

    margin = [(i - o) // 2 for i, o in zip(TINY_IN, TINY_OUT, strict=True)]
    padded = pad_by_hand(image, margin)
    assert padded.shape[1:] == TINY_IN
    unet.eval()
    with torch.inference_mode():
        outputs = unet(torch.from_numpy(padded[None]))
    expected = np.stack([outputs[i][0, c].exp().numpy() for i, c in pairs])
    assert result.shape == expected.shape == (3, *TINY_OUT) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(result[0]) > 1e-3  # a real map, not a constant that would match anything


def test_unet_xy_on_a_two_channel_2d_image_smaller_than_a_tile():
    torch.manual_seed(1)
    model = build_model("unet_xy", nchannel=2)
    model.train()
    image = np.random.default_rng(1).random((2, 1, 11, 9), dtype=np.float32)
    result = predict_volume(model, image, TINY_IN, TINY_OUT)
    assert result.shape == (1, 1, 11, 9) and result.dtype == np.float32
    assert np.isfinite(result).all() and 0 <= result.min() <= result.max() <= 1
    assert model.training  # the caller's mode is restored


# ------------------------------------------------------------------ tiling, against a known answer


@pytest.mark.parametrize("tiling", ["blend", "established"])
@pytest.mark.parametrize(
    ("shape", "channels"),
    [((33, 101, 137), 1), ((1, 40, 50), 1), ((9, 21, 30), 3), ((1, 5, 7), 2)],
    ids=["odd-sizes", "2d", "3-channels", "2d-smaller-than-a-tile"],
)
def test_tiled_prediction_equals_the_whole_volume_answer(tiling, shape, channels):
    image = np.random.default_rng(2).random((channels, *shape), dtype=np.float32)
    kernel = random_kernel(channels)
    size_in, size_out = conv_sizes(kernel, (8, 32, 32))
    model = ConvModel(kernel)
    result = predict_volume(model, image, size_in, size_out, tiling=tiling, batch_size=8)
    assert result.shape == (1, *shape) and result.dtype == np.float32
    np.testing.assert_allclose(result[0], expected_main(image, kernel), rtol=1e-5, atol=1e-6)


def test_both_tilings_agree_and_cover_several_tiles():
    image = np.random.default_rng(3).random((1, 22, 70, 45), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (8, 32, 32))
    model = ConvModel(kernel)
    blend = predict_volume(model, image, size_in, size_out, tiling="blend", batch_size=100)
    tiles_blend = sum(model.batches)
    model.batches.clear()
    established = predict_volume(
        model, image, size_in, size_out, tiling="established", batch_size=100
    )
    # established: z [0, 8, 14], y [0, 32, 38], x [0, 13]: 18 tiles.
    # blend, strides (6, 24, 24): z [0, 6, 12, 14], y [0, 24, 38], x [0, 13]: 24 tiles.
    assert (sum(model.batches), tiles_blend) == (18, 24)
    assert blend.shape == established.shape == (1, 22, 70, 45)
    np.testing.assert_allclose(blend, established, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tiling", ["blend", "established"])
@pytest.mark.parametrize(
    "planes", [(9, 13), (0, 2), (20, 22), (5, 19)], ids=["middle", "first", "last", "several"]
)
def test_predicting_some_planes_equals_those_planes_of_the_whole_answer(tiling, planes):
    image = np.random.default_rng(4).random((1, 22, 70, 45), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (8, 32, 32))
    model = ConvModel(kernel)
    part = predict_volume(model, image, size_in, size_out, tiling=tiling, planes=planes)
    start, stop = planes
    assert part.shape == (1, stop - start, 70, 45)
    np.testing.assert_allclose(
        part[0], expected_main(image, kernel)[start:stop], rtol=1e-5, atol=1e-6
    )
    # y [0, 32/24, 38] x x [0, 13] tiles per z layer; planes within one tile depth need one layer.
    per_layer = 6
    layers = sum(model.batches) // per_layer
    assert sum(model.batches) % per_layer == 0
    assert layers == (1 if stop - start <= 8 else 2)  # 14 planes: z [0, 6]


def test_planes_outside_the_volume_are_refused():
    with pytest.raises(ValueError, match="planes must lie within 0..10"):
        predict_volume(
            ConvModel(random_kernel(1)),
            np.zeros((1, 10, 20, 20), np.float32),
            (10, 36, 36),
            (8, 32, 32),
            planes=(8, 12),
        )


def test_output_pairs_pick_outputs_and_classes():
    image = np.random.default_rng(4).random((1, 6, 30, 30), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    pairs = ((0, 1), (1, 1), (2, 1), (0, 0))
    result = predict_volume(ConvModel(kernel), image, size_in, size_out, output_pairs=pairs)
    p = expected_main(image, kernel)  # sigmoid(2y)
    y2 = np.log(p / (1 - p))  # 2y
    for got, want in zip(result, [p, 1 - p, sigmoid(2 * y2), 1 - p], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tiling", ["blend", "established"])
def test_a_constant_network_gives_a_constant_map_without_seams(tiling):
    image = np.random.default_rng(5).random((1, 19, 75, 61), dtype=np.float32)
    margin, size_out = (2, 6, 6), (5, 20, 20)
    size_in = tuple(o + 2 * m for o, m in zip(size_out, margin, strict=True))
    result = predict_volume(
        ConstantModel(margin), image, size_in, size_out, tiling=tiling, overlap=0.5, batch_size=16
    )
    assert result.shape == (1, 19, 75, 61)
    np.testing.assert_allclose(result, sigmoid(1.3), rtol=1e-6)
    assert np.ptp(result) < 1e-6


@pytest.mark.parametrize("shape", [(10, 40, 40), (3, 9, 11)], ids=["tiles", "smaller-than-a-tile"])
def test_a_preallocated_output_is_filled(shape, tmp_path):
    image = np.random.default_rng(6).random((1, *shape), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    out = np.lib.format.open_memmap(tmp_path / "out.npy", "w+", np.float32, (1, *shape))
    out[...] = np.nan
    result = predict_volume(ConvModel(kernel), image, size_in, size_out, out=out)
    assert np.shares_memory(result, out) and result.shape == out.shape
    np.testing.assert_allclose(out[0], expected_main(image, kernel), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- runtime augmentation


def test_runtime_augmentation_averages_the_flipped_predictions():
    """flip(net(flip(x))) for a convolution is the convolution with the flipped kernel."""
    image = np.random.default_rng(7).random((1, 9, 40, 35), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    result = predict_volume(ConvModel(kernel), image, size_in, size_out, runtime_aug=True)
    # identity, x, y and z flips, as the established tool averages them (kernel axes: c, z, y, x).
    variants = [kernel, kernel[:, :, :, ::-1], kernel[:, :, ::-1, :], kernel[:, ::-1, :, :]]
    expected = np.mean([expected_main(image, k) for k in variants], axis=0)
    np.testing.assert_allclose(result[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(result[0], expected_main(image, kernel), atol=1e-3)


@pytest.mark.parametrize("model_kind", ["constant", "symmetric-conv"])
def test_runtime_augmentation_leaves_a_flip_equivariant_network_unchanged(model_kind):
    image = np.random.default_rng(8).random((1, 9, 40, 35), dtype=np.float32)
    if model_kind == "constant":
        model, size_in, size_out = ConstantModel((1, 2, 2)), (6, 20, 20), (4, 16, 16)
    else:
        kernel = random_kernel(1)
        kernel = kernel + kernel[:, ::-1] + kernel[:, :, ::-1] + kernel[:, :, :, ::-1]
        kernel = kernel + kernel[:, ::-1, ::-1, ::-1]
        for axis in (1, 2, 3):
            assert np.allclose(kernel, np.flip(kernel, axis))
        model = ConvModel(kernel)
        size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    plain = predict_volume(model, image, size_in, size_out)
    augmented = predict_volume(model, image, size_in, size_out, runtime_aug=True)
    np.testing.assert_allclose(augmented, plain, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- progress and cancel


def _progress_setup():
    image = np.random.default_rng(9).random((1, 8, 24, 36), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 12, 12))
    return ConvModel(kernel), image, size_in, size_out


@pytest.mark.parametrize(
    ("tiling", "calls"),
    [
        # 2 x 2 x 3 tiles of size_out.
        ("established", [(5, 12), (10, 12), (12, 12)]),
        # strides (3, 9, 9): starts z [0, 3, 4], y [0, 9, 12], x [0, 9, 18, 24]: 36 tiles.
        ("blend", [(n, 36) for n in (5, 10, 15, 20, 25, 30, 35, 36)]),
    ],
)
def test_progress_is_reported_once_per_batch_up_to_the_total(tiling, calls):
    model, image, size_in, size_out = _progress_setup()
    reported: list[tuple[int, int]] = []
    predict_volume(
        model,
        image,
        size_in,
        size_out,
        tiling=tiling,
        batch_size=5,
        progress=lambda done, total: reported.append((done, total)),
    )
    assert reported == calls
    assert model.batches == [5] * (len(calls) - 1) + [calls[-1][1] - 5 * (len(calls) - 1)]


def test_cancel_between_batches_raises_and_stops_early():
    model, image, size_in, size_out = _progress_setup()
    model.train()
    checks: list[int] = []
    reported: list[int] = []

    def should_cancel() -> bool:
        checks.append(1)
        return len(checks) >= 2  # let the first batch through

    with pytest.raises(PredictionCancelled):
        predict_volume(
            model,
            image,
            size_in,
            size_out,
            tiling="established",
            batch_size=5,
            progress=lambda done, total: reported.append(done),
            should_cancel=should_cancel,
        )
    assert model.batches == [5] and reported == [5]
    assert model.training  # restored even when cancelled


def test_cancel_before_the_first_tile_runs_nothing():
    model, image, size_in, size_out = _progress_setup()
    with pytest.raises(PredictionCancelled):
        predict_volume(model, image, size_in, size_out, should_cancel=lambda: True)
    assert model.batches == []


# ------------------------------------------------------------------------ threshold, segment


def test_postprocess_threshold_gives_binary_labels():
    prob = np.array([[[0.2, 0.5, 0.7, 0.9]]], dtype=np.float32)
    labels = postprocess(prob, threshold=0.5)
    assert labels.dtype == np.uint8 and labels.shape == prob.shape
    np.testing.assert_array_equal(labels[0, 0], [0, 0, 255, 255])  # strictly above the threshold
    # min-max first: [0, 3/7, 5/7, 1].
    np.testing.assert_array_equal(
        postprocess(prob, threshold=0.5, minmax=True)[0, 0], [0, 0, 255, 255]
    )
    np.testing.assert_array_equal(
        postprocess(prob, threshold=0.4, minmax=True)[0, 0], [0, 255, 255, 255]
    )


def test_postprocess_without_threshold_keeps_probabilities():
    prob = np.array([[[0.2, 0.5, 0.7]]], dtype=np.float64)
    kept = postprocess(prob, threshold=0)
    assert kept.dtype == np.float32
    np.testing.assert_allclose(kept, prob)
    np.testing.assert_allclose(
        postprocess(prob, threshold=-1, minmax=True)[0, 0], [0, 0.6, 1], rtol=1e-6
    )
    flat = postprocess(np.full((2, 3, 4), 0.3), threshold=-1, minmax=True)
    assert np.isfinite(flat).all() and flat.max() == 0


@pytest.mark.parametrize("tiling", ["blend", "established"])
def test_segment_with_a_threshold_writes_binary_labels(tiling):
    rng = np.random.default_rng(10)
    image = (rng.random((1, 7, 30, 41)) * 1000 + 200).astype(np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    cfg = config.PredictConfig()
    cfg.size_in, cfg.size_out = list(size_in), list(size_out)
    cfg.Normalization, cfg.Threshold, cfg.tiling, cfg.OutputCh = 0, 0.5, tiling, [0, 1, 1, 1]
    labels = segment(ConvModel(kernel), image, cfg, torch.device("cpu"))
    assert labels.shape == (2, 7, 30, 41) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 255}

    normalised = (image - image.min()) / (image.max() - image.min())
    prob = expected_main(normalised, kernel)
    probs = [prob, 1 - prob]
    if tiling == "established":  # the established tool rescales each output to [0, 1] first
        probs = [(p - p.min()) / (p.max() - p.min()) for p in probs]
    expected = np.stack([np.where(p > 0.5, 255, 0) for p in probs])
    # Voxels within rounding of the threshold may go either way.
    near = np.abs(np.stack(probs) - 0.5) < 1e-5
    np.testing.assert_array_equal(labels[~near], expected[~near])


def test_segment_with_resize_ratio_returns_the_input_shape():
    image = np.random.default_rng(11).random((1, 7, 31, 45), dtype=np.float32)
    kernel = random_kernel(1)
    size_in, size_out = conv_sizes(kernel, (4, 16, 16))
    cfg = config.PredictConfig()
    cfg.size_in, cfg.size_out = list(size_in), list(size_out)
    cfg.Normalization, cfg.ResizeRatio = 0, [1.0, 0.5, 0.5]
    prob = segment(ConvModel(kernel), image, cfg, torch.device("cpu"))
    assert prob.shape == (1, 7, 31, 45) and prob.dtype == np.float32
    assert 0 <= prob.min() <= prob.max() <= 1
