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


def _forward_shapes(model: torch.nn.Module, size_in) -> tuple | None:
    """size_out of a forward pass on the meta device (shapes only), or None when it does not fit.

    "Does not fit": a concatenation fails, or a pooling layer meets an odd size and silently
    drops a row (the skip connections would then be cropped off-centre).
    """
    odd = []

    def check(_module, inputs, _output):
        odd.extend(n % 2 for n in inputs[0].shape[3:])

    hooks = [
        m.register_forward_hook(check) for m in model.modules() if isinstance(m, torch.nn.MaxPool3d)
    ]
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 1, *size_in, device="meta"))[0].shape[2:]
    except RuntimeError:
        return None
    finally:
        for h in hooks:
            h.remove()
    return None if any(odd) else tuple(out)


@pytest.mark.parametrize(("model_name", "k"), [("unet_xy", 3), ("unet_xy_zoom", 2)])
def test_rules_agree_with_forward_passes(model_name, k):
    """For every size in a range: the rule's verdict and size_out match what the network does."""
    with torch.device("meta"):
        model = build_model(model_name, zoom_ratio=k).eval()
    z, x, _ = geometry.min_size_in(model_name, k)  # x: the smallest valid size
    scale = k if model_name == "unet_xy_zoom" else 1
    valid_seen = 0
    for y in range(88 * scale, 112 * scale):
        shape = _forward_shapes(model, (z, y, x))
        valid = geometry.is_valid_size_in(model_name, [z, y, x], k)
        assert (shape is not None and shape[1] >= 1) == valid, y
        if valid:
            assert shape == geometry.size_out(model_name, [z, y, x], k)
            valid_seen += 1
    assert valid_seen >= 3  # the range holds several valid sizes, not only refusals
    assert _forward_shapes(model, (z - 1, x, x)) is None  # one slice too few


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
