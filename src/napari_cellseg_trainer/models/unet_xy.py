"""unet_xy and unet_xy_zoom: 3-D U-Nets that pool in y and x only, with two auxiliary outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import geometry
from .blocks import center_crop, decoder_block, encoder_block, init_weights

_POOL = (1, 2, 2)


class _UNetXYBase(nn.Module):
    """The encoder/decoder trunk shared by both models."""

    model_name = "unet_xy"
    # Size rules for the tiling, not part of the forward pass: TorchScript (the bioimage.io
    # export) would otherwise compile the property and the geometry functions behind it.
    __jit_unused_properties__ = ["yx_grid"]

    def __init__(self, nchannel: int, nclass: Sequence[int]) -> None:
        super().__init__()
        n0, n1, n2 = (int(n) for n in nclass)
        self.nchannel, self.nclass = nchannel, (n0, n1, n2)
        self.ec1 = encoder_block(nchannel, 32)
        self.ec2 = encoder_block(64, 64)
        self.ec3 = encoder_block(128, 128)
        self.ec4 = encoder_block(256, 256)
        self.pool1 = nn.MaxPool3d(_POOL)
        self.pool2 = nn.MaxPool3d(_POOL)
        self.pool3 = nn.MaxPool3d(_POOL)
        self.up3 = nn.ConvTranspose3d(512, 512, kernel_size=_POOL, stride=_POOL)
        self.up2 = nn.ConvTranspose3d(256, 256, kernel_size=_POOL, stride=_POOL)
        self.up1 = nn.ConvTranspose3d(128, 128, kernel_size=_POOL, stride=_POOL)
        self.dc3 = decoder_block(256 + 512, 256)
        self.dc2 = decoder_block(128 + 256, 128)
        self.dc1 = decoder_block(64 + 128, 64)

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u0, u1, u2): the decoder's outputs at full, 1/2 and 1/4 resolution."""
        down1 = self.ec1(x)
        down2 = self.ec2(self.pool1(down1))
        down3 = self.ec3(self.pool2(down2))
        u3 = self.ec4(self.pool3(down3))
        u2 = self.dc3(torch.cat([self.up3(u3), center_crop(down3, 2, 4)], 1))
        u1 = self.dc2(torch.cat([self.up2(u2), center_crop(down2, 6, 16)], 1))
        u0 = self.dc1(torch.cat([self.up1(u1), center_crop(down1, 10, 40)], 1))
        return u0, u1, u2

    def add_aux_heads(self) -> None:
        """conv1a, conv2a, predict1a, predict2a: registered after up1a and up2a, in this order
        (the order of the parameters, which an optimiser's saved state refers to)."""
        _, n1, n2 = self.nclass
        self.conv1a = nn.Conv3d(n1, n1, 3)
        self.conv2a = nn.Conv3d(n2, n2, 3)
        self.predict1a = nn.Conv3d(n1, n1, 1)
        self.predict2a = nn.Conv3d(n2, n2, 1)

    def aux_outputs(
        self, u1: torch.Tensor, u2: torch.Tensor, crop1: tuple[int, int], crop2: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two auxiliary outputs (logits) from the decoder at 1/2 and 1/4 resolution."""
        p1 = center_crop(self.predict1a(self.conv1a(self.up1a(u1))), *crop1)
        p2 = center_crop(self.predict2a(self.conv2a(self.up2a(u2))), *crop2)
        return p1, p2

    @property
    def yx_grid(self) -> int:
        """The pooling stride in y and x (see :func:`.geometry.yx_grid`)."""
        return geometry.yx_grid(self.model_name, getattr(self, "zoom_ratio", 3))

    def size_out(self, size_in: Sequence[int]) -> tuple[int, int, int]:
        return geometry.size_out(self.model_name, size_in, getattr(self, "zoom_ratio", 3))


class UNetXY(_UNetXYBase):
    """For structures a few voxels thick (tubulin, lamin B1)."""

    def __init__(self, nchannel: int = 1, nclass: Sequence[int] = (2, 2, 2)) -> None:
        super().__init__(nchannel, nclass)
        n0, n1, n2 = self.nclass
        self.dc0 = nn.Conv3d(64, n0, 1)
        self.up1a = nn.ConvTranspose3d(128, n1, kernel_size=(1, 4, 4), stride=(1, 2, 2))
        self.up2a = nn.ConvTranspose3d(256, n2, kernel_size=(1, 8, 8), stride=(1, 4, 4))
        self.add_aux_heads()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Log-probabilities of the main and the two auxiliary outputs, each (N, n_i, *size_out)."""
        u0, u1, u2 = self.trunk(x)
        p1, p2 = self.aux_outputs(u1, u2, (1, 2), (3, 7))
        return [F.log_softmax(p, dim=1) for p in (self.dc0(u0), p1, p2)]


class UNetXYZoom(_UNetXYBase):
    """For large structures (nuclei): the input is pooled by ``zoom_ratio`` in y and x first."""

    model_name = "unet_xy_zoom"

    def __init__(
        self, nchannel: int = 1, nclass: Sequence[int] = (2, 2, 2), zoom_ratio: int = 3
    ) -> None:
        super().__init__(nchannel, nclass)
        k = int(zoom_ratio)
        if k < 2:
            raise ValueError(f"zoom_ratio must be an integer >= 2, got {zoom_ratio!r}")
        self.zoom_ratio = k
        n0, n1, n2 = self.nclass
        self.pool0 = nn.MaxPool3d((1, k, k))
        self.up0 = nn.ConvTranspose3d(64, 64, kernel_size=(1, k, k), stride=(1, k, k))
        self.dc0 = decoder_block(64, 64)
        self.predict0 = nn.Conv3d(64, n0, 1)
        self.up1a = nn.ConvTranspose3d(
            128, n1, kernel_size=(1, 2 * k, 2 * k), stride=(1, 2 * k, 2 * k)
        )
        self.up2a = nn.ConvTranspose3d(
            256, n2, kernel_size=(1, 4 * k, 4 * k), stride=(1, 4 * k, 4 * k)
        )
        self.add_aux_heads()
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Log-probabilities of the main and the two auxiliary outputs, each (N, n_i, *size_out)."""
        k = self.zoom_ratio
        u0, u1, u2 = self.trunk(self.pool0(x))
        p0 = self.predict0(self.dc0(self.up0(u0)))
        p1, p2 = self.aux_outputs(u1, u2, (3, 2 * k + 1), (5, 6 * k + 1))
        return [F.log_softmax(p, dim=1) for p in (p0, p1, p2)]
