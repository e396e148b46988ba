"""The automatic tile: valid, within the memory budget, cheapest, and the same answer as any tile."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.inference import predict_volume
from napari_cellseg_trainer.inference.run import Callbacks, segment
from napari_cellseg_trainer.inference.tile_choice import (
    TileChoiceError,
    choose_tile,
    count_tiles,
)
from napari_cellseg_trainer.models import build_model, geometry
from napari_cellseg_trainer.models.memory import inference_bytes, layer_shapes

GIB = 2**30
TRAIN_IN, TRAIN_OUT = (32, 100, 100), (4, 12, 12)


def _work(model, size_in, shape, tiling="blend", zoom=3):
    out = geometry.size_out(model, size_in, zoom)
    grid = geometry.yx_grid(model, zoom)
    tiles = np.prod(
        [
            count_tiles(n, o, tiling, 0.25, grid if a else 1)
            for a, (n, o) in enumerate(zip(shape, out, strict=True))
        ]
    )
    return tiles * float(layer_shapes(model, zoom).multiply_adds(*size_in))


@pytest.mark.parametrize(
    ("model", "shape", "budget"),
    [
        ("unet_xy", (100, 100, 100), 2 * GIB),
        ("unet_xy", (100, 100, 100), 16 * GIB),
        ("unet_xy", (21, 75, 93), 4 * GIB),
        ("unet_xy", (65, 624, 924), 3 * GIB),
        ("unet_xy_zoom", (40, 600, 600), 6 * GIB),
    ],
)
def test_the_choice_is_valid_fits_and_is_the_cheapest_nearby(model, shape, budget):
    choice = choose_tile(model, shape, budget)
    assert geometry.size_out(model, choice.size_in) == choice.size_out
    assert inference_bytes(model, choice.size_in, choice.batch_size) <= budget
    assert choice.predicted_bytes <= budget
    # never larger than the volume needs: one valid step smaller would not cover it in as few
    # tiles (or would not be valid)
    cost = _work(model, choice.size_in, shape)
    assert cost < _work(model, geometry.min_size_in(model), shape)
    for axis in range(3):
        for step in (-1, 1):  # a neighbouring valid size costs more or does not fit
            other = list(choice.size_in)
            other[axis] += step * (1 if axis == 0 else 8 * (3 if model == "unet_xy_zoom" else 1))
            if not geometry.is_valid_size_in(model, other):
                continue
            if inference_bytes(model, other, 1) <= budget:
                assert _work(model, tuple(other), shape) >= cost, (axis, step, other)


def test_one_tile_covers_a_small_volume_and_no_bigger_than_it_needs():
    choice = choose_tile("unet_xy", (100, 100, 100), 16 * GIB)
    assert choice.n_tiles == 1 and choice.size_out == (100, 100, 100)
    assert choice.size_in == (128, 188, 188)
    assert "1 tile in 1 pass" in str(choice)


def test_too_small_a_budget_is_a_clear_error():
    with pytest.raises(TileChoiceError, match="too little to predict with unet_xy"):
        choose_tile("unet_xy", (10, 100, 100), 2**20)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_model("unet_xy").eval()


def _config(size_in, tiling) -> config.PredictConfig:
    cfg = config.PredictConfig(model_path="unused", OutputDir="unused")
    cfg.mode.InputFile = "unused"
    cfg.size_in = cfg.size_out = "auto"
    if size_in != "auto":
        cfg.size_in, cfg.size_out = list(size_in), list(geometry.size_out("unet_xy", size_in))
    cfg.tiling, cfg.Normalization, cfg.Threshold = tiling, 0, -1.0
    return cfg


def test_automatic_and_training_tiles_give_the_same_probabilities_when_blending(unet):
    """Blend tiles start on the network's pooling grid, so every tile size gives one answer."""
    image = np.random.default_rng(0).random((1, 4, 20, 20), dtype=np.float32)
    notes: list[str] = []
    auto = segment(
        unet, image, _config("auto", "blend"), torch.device("cpu"), Callbacks(note=notes.append)
    )
    training = segment(unet, image, _config(TRAIN_IN, "blend"), torch.device("cpu"))
    np.testing.assert_allclose(auto, training, atol=2e-5)
    assert notes and notes[0].startswith("tile [") and "1 tile in 1 pass" in notes[0]


def test_automatic_and_training_tiles_agree_closely_in_the_established_tiling(unet):
    """The established layout puts tiles side by side (the last one aligned to the end), off the
    pooling grid: the maps agree exactly where the tiles share it and closely elsewhere, as
    any two established tilings do."""
    image = np.random.default_rng(1).random((1, 4, 20, 16), dtype=np.float32)
    cfg = _config("auto", "established")
    choice = choose_tile("unet_xy", (4, 20, 16), 64 * GIB, tiling="established")
    assert choice.n_tiles == 1
    auto = predict_volume(unet, image, choice.size_in, choice.size_out, tiling=cfg.tiling)
    training = predict_volume(unet, image, TRAIN_IN, TRAIN_OUT, tiling="established")
    # x: training tiles at 0 and 4 (the last one aligned to the end, off the grid, overwrites
    # x >= 4); y: at 0 and 8 (on the grid). Where the first tile's answer stands, they agree.
    np.testing.assert_allclose(auto[..., :4], training[..., :4], atol=2e-5)
    assert 0 < np.abs(auto - training).mean() < 0.02


def test_an_explicit_size_in_is_used_as_given(unet, monkeypatch):
    from napari_cellseg_trainer.inference import run

    sizes = []
    real = run.predict_volume

    def spy(model, image, size_in, size_out, **kwargs):
        sizes.append((tuple(size_in), kwargs["batch_size"]))
        return real(model, image, size_in, size_out, **kwargs)

    monkeypatch.setattr(run, "predict_volume", spy)
    image = np.random.default_rng(2).random((1, 4, 12, 12), dtype=np.float32)
    cfg = _config(TRAIN_IN, "blend")
    cfg.batch_size = 3
    segment(unet, image, cfg, torch.device("cpu"))
    assert sizes == [(TRAIN_IN, 3)]


class _Picky(torch.nn.Module):
    """A network, except that a tile of more than ``limit`` input voxels runs out of memory."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x):
        if x[0].numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.net(x)


def test_a_tile_that_runs_out_of_memory_is_halved_and_retried_with_a_note():
    # deep and narrow: half the first tile's voxels is still a valid tile, a few planes deep
    image = np.random.default_rng(3).random((1, 40, 4, 4), dtype=np.float32)
    first = choose_tile("unet_xy", (40, 4, 4), 64 * GIB)
    notes: list[str] = []
    # unet_xy's margins at no cost: a halved tile placed wrongly would show
    crop = _Crop(geometry.margin_of(first.size_in, first.size_out))
    picky = _Picky(crop, limit=int(np.prod(first.size_in)) - 1)
    result = segment(
        picky, image, _config("auto", "blend"), torch.device("cpu"), Callbacks(note=notes.append)
    )
    assert result.shape == (1, 40, 4, 4)
    assert any(
        n.startswith(f"out of memory with tile {list(first.size_in)}; retrying") for n in notes
    )
    expected = segment(crop, image, _config("auto", "blend"), torch.device("cpu"))  # one tile
    np.testing.assert_allclose(result, expected, atol=2e-5)


def test_progress_moves_during_a_pass_of_one_big_tile(unet):
    image = np.random.default_rng(4).random((1, 6, 40, 40), dtype=np.float32)
    seen: list[tuple[float, int]] = []
    segment(
        unet,
        image,
        _config("auto", "blend"),
        torch.device("cpu"),
        Callbacks(progress=lambda d, t: seen.append((d, t))),
    )
    inside = [d for d, t in seen if 0 < d < t]
    assert seen[-1][0] == seen[-1][1] == 1
    assert len(inside) >= 10 and inside == sorted(inside)  # many steps, never backwards


class _Crop(torch.nn.Module):
    """The tiling's interface at no cost: a crop of the margin, as log-probabilities."""

    def __init__(self, margin) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x):
        (mz, my, mx), n = self.margin, x.shape[0]
        core = x[:, :1, mz : x.shape[2] - mz, my : x.shape[3] - my, mx : x.shape[4] - mx]
        p = torch.sigmoid(core)
        out = torch.log(torch.cat([1 - p, p], 1).clamp_min(1e-6))
        return [out, out, out][: n and 3]


def test_the_predictions_own_arrays_stay_within_three_times_input_and_output():
    image = np.random.default_rng(5).random((1, 40, 300, 300), dtype=np.float32)
    size_in, size_out = (48, 148, 148), (20, 60, 60)
    model = _Crop(geometry.margin_of(size_in, size_out))
    tracemalloc.start()
    try:
        prob = predict_volume(model, image, size_in, size_out, batch_size=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = 3 * (image.nbytes + prob.nbytes)
    assert peak <= bound, (peak / 2**20, bound / 2**20)
