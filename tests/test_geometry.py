"""Size rules: size_in -> size_out, the seed rows, refusals with the nearest valid sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellseg_trainer.models import build_model, geometry


@pytest.mark.parametrize(
    ("model", "k", "size_in", "size_out"),
    [
        ("unet_xy", 3, [48, 148, 148], (20, 60, 60)),
        ("unet_xy", 3, [44, 140, 140], (16, 52, 52)),
        ("unet_xy", 3, [50, 156, 156], (22, 68, 68)),
        ("unet_xy", 3, [32, 100, 100], (4, 12, 12)),
        ("unet_xy", 3, [29, 92, 92], (1, 4, 4)),
        ("unet_xy_zoom", 3, [52, 420, 420], (20, 152, 152)),
        ("unet_xy_zoom", 3, [52, 372, 372], (20, 104, 104)),
        ("unet_xy_zoom", 2, [33, 184, 200], (1, 4, 20)),
    ],
)
def test_size_out_rows(model, k, size_in, size_out):
    assert geometry.size_out(model, size_in, k) == size_out


@pytest.mark.parametrize(
    ("model", "k", "size_in", "nearest"),
    [
        ("unet_xy", 3, [48, 150, 150], [(48, 148, 148), (48, 156, 156)]),
        ("unet_xy", 3, [20, 148, 148], [(29, 148, 148)]),
        ("unet_xy", 3, [48, 60, 60], [(48, 92, 92)]),
        ("unet_xy_zoom", 3, [52, 400, 400], [(52, 396, 396), (52, 420, 420)]),
    ],
)
def test_invalid_sizes_are_refused_with_the_nearest_valid(model, k, size_in, nearest):
    with pytest.raises(geometry.InvalidSizeError) as info:
        geometry.size_out(model, size_in, k)
    assert info.value.nearest == nearest
    assert "nearest valid" in str(info.value) and "\n" not in str(info.value)
    assert all(geometry.is_valid_size_in(model, n, k) for n in nearest)


def test_zoom_ratio_must_be_an_integer_of_at_least_2():
    with pytest.raises(geometry.InvalidSizeError, match="zoom_ratio"):
        geometry.size_out("unet_xy_zoom", [52, 420, 420], 1)


def test_valid_yx_follows_the_rule():
    assert geometry.valid_yx("unet_xy", lo=80, hi=120) == [92, 100, 108, 116]
    assert geometry.valid_yx("unet_xy_zoom", 3, lo=270, hi=310) == [276, 300]


def test_rules_agree_with_a_real_forward_pass():
    """Every y in a range: valid ones run and give size_out; invalid ones would break or misalign."""
    model = build_model("unet_xy").eval()
    with torch.no_grad():
        for y in range(88, 110):
            valid = geometry.is_valid_size_in("unet_xy", [29, y, 92])
            try:
                out = model(torch.zeros(1, 1, 29, y, 92))[0].shape[2:]
            except RuntimeError:
                assert not valid, y
                continue
            if valid:
                assert tuple(out) == geometry.size_out("unet_xy", [29, y, 92])
            else:  # the forward ran but the skip connections were cropped off-centre
                assert (y - 4) % 8 != 0 or y < 92


def test_margin_is_half_the_difference():
    assert geometry.margin("unet_xy", [48, 148, 148]) == (14, 44, 44)
    assert geometry.margin("unet_xy_zoom", [52, 420, 420], 3) == (16, 134, 134)


@pytest.mark.parametrize(
    ("model", "base", "shape", "budget"),
    [
        ("unet_xy", (32, 100, 100), (32, 128, 128), 640_000),
        ("unet_xy", (32, 100, 100), (32, 128, 128), 10**9),
        ("unet_xy", (48, 148, 148), (65, 624, 924), 4 * 48 * 148 * 148),
        ("unet_xy", (32, 100, 100), (1, 40, 40), 10**6),
        ("unet_xy_zoom", (52, 420, 420), (40, 600, 600), 4 * 52 * 420 * 420),
    ],
)
def test_covering_size_in_is_valid_within_budget_and_cheaper(model, base, shape, budget):
    size = geometry.covering_size_in(model, base, shape, budget)
    assert geometry.is_valid_size_in(model, size)
    assert np.prod(size) <= budget and all(s >= b for s, b in zip(size, base, strict=True))

    def cost(size_in):
        out = geometry.size_out(model, size_in)
        return np.prod(size_in) * np.prod([-(-n // o) for n, o in zip(shape, out, strict=True)])

    assert cost(size) < cost(base)
    if budget >= 10**9:  # room for one tile over the whole volume
        assert all(o >= n for o, n in zip(geometry.size_out(model, size), shape, strict=True))
