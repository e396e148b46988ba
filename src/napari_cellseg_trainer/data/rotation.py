"""Rotating y-x slices about their centre: one sampling grid per image, shared by the raw and
(cropped by the margin) by the label, so the two are sampled at the same points. Used by the
patch buffer (whole images) and by patches cut from stored images (one window each)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def rotation_grid(
    shape_yx: tuple[int, int], margin_yx: tuple[int, int], angle_deg: float, flip: bool
) -> torch.Tensor:
    """Sampling grid (1, Y + 2my, X + 2mx, 2) for ``grid_sample(..., align_corners=True)``.

    Output pixel (y, x) of the padded, rotated (and maybe flipped) slice samples the unpadded
    source slice of ``shape_yx`` at the point rotated by ``-angle`` about the source's centre;
    points outside the source read as 0, which is the zero padding.
    """
    (height, width), (my, mx) = shape_yx, margin_yx
    out_y = torch.arange(height + 2 * my, dtype=torch.float64) - my
    out_x = torch.arange(width + 2 * mx, dtype=torch.float64) - mx
    if flip:
        out_x = out_x.flip(0)
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    dy, dx = (out_y - centre_y)[:, None], (out_x - centre_x)[None, :]
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    src_y = centre_y + cos * dy - sin * dx
    src_x = centre_x + sin * dy + cos * dx
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    norm_y = 2 * src_y / max(height - 1, 1) - 1
    norm_x = 2 * src_x / max(width - 1, 1) - 1
    return torch.stack([norm_x, norm_y], dim=-1).to(torch.float32)[None]


def resample(slices: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    """grid_sample a (n, Y, X) stack of slices with one (1, H, W, 2) grid -> (n, H, W)."""
    source = torch.from_numpy(slices if slices.flags.writeable else slices.copy())
    # Slices as the batch with an expanded (not copied) grid: much faster than slices as
    # channels of one batch item, which torch's CPU kernel does not spread over threads.
    out = F.grid_sample(
        source.to(torch.float32)[:, None],
        grid.expand(len(slices), -1, -1, -1),
        mode=mode,
        padding_mode="zeros",
        align_corners=True,
    )
    return out[:, 0].numpy()
