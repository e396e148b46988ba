"""Building blocks of the two models (module layout fixed by the established checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


def encoder_block(in_channels: int, channels: int) -> nn.Sequential:
    """Conv(in->c) BN ReLU Conv(c->2c) BN ReLU, all 3x3x3 valid convolutions."""
    return _double_conv(in_channels, channels, 2 * channels)


def decoder_block(in_channels: int, channels: int) -> nn.Sequential:
    """Conv(in->c) BN ReLU Conv(c->c) BN ReLU."""
    return _double_conv(in_channels, channels, channels)


def _double_conv(in_channels: int, mid: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, mid, 3),
        nn.BatchNorm3d(mid, affine=False),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, out, 3),
        nn.BatchNorm3d(out, affine=False),
        nn.ReLU(inplace=True),
    )


def center_crop(t: torch.Tensor, crop_z: int, crop_yx: int) -> torch.Tensor:
    """Remove ``crop_z`` slices and ``crop_yx`` pixels from each side of a (N, C, Z, Y, X) tensor."""
    z, y, x = t.shape[2:]
    return t[:, :, crop_z : z - crop_z, crop_yx : y - crop_yx, crop_yx : x - crop_yx]


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal weights and zero bias on every Conv3d (ConvTranspose3d keeps its default)."""
    for module in model.modules():
        if type(module) is nn.Conv3d:
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
