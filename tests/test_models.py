"""The two networks: module names, state-dict keys and shapes as models.md fixes them."""

from __future__ import annotations

import pytest
import torch

from napari_cellseg_trainer.models import build_model, size_out


def _enc(name: str, cin: int, c: int) -> dict:
    """Encoder block E(in, c): Conv(in->c) BN(c) ReLU Conv(c->2c) BN(2c) ReLU."""
    return _block(name, cin, c, 2 * c)


def _dec(name: str, cin: int, c: int) -> dict:
    return _block(name, cin, c, c)


def _block(name: str, cin: int, mid: int, out: int) -> dict:
    return {
        f"{name}.0.weight": (mid, cin, 3, 3, 3),
        f"{name}.0.bias": (mid,),
        f"{name}.1.running_mean": (mid,),
        f"{name}.1.running_var": (mid,),
        f"{name}.1.num_batches_tracked": (),
        f"{name}.3.weight": (out, mid, 3, 3, 3),
        f"{name}.3.bias": (out,),
        f"{name}.4.running_mean": (out,),
        f"{name}.4.running_var": (out,),
        f"{name}.4.num_batches_tracked": (),
    }


def _trunk(c: int) -> dict:
    keys = {
        **_enc("ec1", c, 32),
        **_enc("ec2", 64, 64),
        **_enc("ec3", 128, 128),
        **_enc("ec4", 256, 256),
    }
    keys.update(
        {
            "up3.weight": (512, 512, 1, 2, 2),
            "up3.bias": (512,),
            "up2.weight": (256, 256, 1, 2, 2),
            "up2.bias": (256,),
            "up1.weight": (128, 128, 1, 2, 2),
            "up1.bias": (128,),
        }
    )
    keys.update({**_dec("dc3", 768, 256), **_dec("dc2", 384, 128), **_dec("dc1", 192, 64)})
    return keys


def _aux(n1: int, n2: int, k1: int, k2: int) -> dict:
    return {
        "up1a.weight": (128, n1, 1, k1, k1),
        "up1a.bias": (n1,),
        "up2a.weight": (256, n2, 1, k2, k2),
        "up2a.bias": (n2,),
        "conv1a.weight": (n1, n1, 3, 3, 3),
        "conv1a.bias": (n1,),
        "conv2a.weight": (n2, n2, 3, 3, 3),
        "conv2a.bias": (n2,),
        "predict1a.weight": (n1, n1, 1, 1, 1),
        "predict1a.bias": (n1,),
        "predict2a.weight": (n2, n2, 1, 1, 1),
        "predict2a.bias": (n2,),
    }


def expected_unet_xy(c: int = 1, n=(2, 2, 2)) -> dict:
    return {
        **_trunk(c),
        "dc0.weight": (n[0], 64, 1, 1, 1),
        "dc0.bias": (n[0],),
        **_aux(n[1], n[2], 4, 8),
    }


def expected_unet_xy_zoom(k: int, c: int = 1, n=(2, 2, 2)) -> dict:
    return {
        **_trunk(c),
        "up0.weight": (64, 64, 1, k, k),
        "up0.bias": (64,),
        **_dec("dc0", 64, 64),
        "predict0.weight": (n[0], 64, 1, 1, 1),
        "predict0.bias": (n[0],),
        **_aux(n[1], n[2], 2 * k, 4 * k),
    }


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_unet_xy_state_dict_matches_models_md():
    assert _shapes(build_model("unet_xy")) == expected_unet_xy()
    assert _shapes(build_model("unet_xy", nchannel=2, nclass=(3, 2, 4))) == expected_unet_xy(
        2, (3, 2, 4)
    )


@pytest.mark.parametrize("k", [2, 3])
def test_unet_xy_zoom_state_dict_matches_models_md(k):
    assert _shapes(build_model("unet_xy_zoom", zoom_ratio=k)) == expected_unet_xy_zoom(k)


@pytest.mark.parametrize(
    ("name", "k", "size_in"),
    [
        ("unet_xy", 3, (29, 92, 92)),
        ("unet_xy", 3, (32, 100, 100)),
        ("unet_xy_zoom", 2, (33, 184, 184)),
    ],
)
def test_forward_gives_three_log_probability_maps_of_size_out(name, k, size_in):
    model = build_model(name, zoom_ratio=k, nclass=(2, 3, 2)).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 1, *size_in))
    assert len(outputs) == 3
    for out, n in zip(outputs, (2, 3, 2), strict=True):
        assert tuple(out.shape) == (1, n, *size_out(name, size_in, k))
        assert torch.allclose(out.exp().sum(1), torch.ones(1), atol=1e-5)


def test_conv_weights_are_kaiming_with_zero_bias():
    model = build_model("unet_xy")
    assert float(model.ec1[0].bias.detach().abs().sum()) == 0
    w = model.ec2[0].weight.detach()  # fan_in 64 * 27: std sqrt(2 / fan_in)
    assert float(w.std()) == pytest.approx((2 / (64 * 27)) ** 0.5, rel=0.05)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unet_xy, unet_xy_zoom"):
        build_model("unet3d")
