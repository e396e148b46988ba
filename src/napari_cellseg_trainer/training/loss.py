"""The Aux loss: cost-map-weighted negative log-likelihood of the main and auxiliary outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def weighted_nll(
    logp: torch.Tensor, label: torch.Tensor, costmap: torch.Tensor, ignore_index: int | None = None
) -> torch.Tensor:
    """Mean over all voxels of ``-costmap * logp[label]``; ``ignore_index`` voxels add nothing.

    Parameters
    ----------
    logp : (N, n_class, Z, Y, X) log-probabilities.
    label : (N, Z, Y, X) integer labels.
    costmap : (N, Z, Y, X) per-voxel weights (0 excludes a voxel).
    ignore_index : label value that contributes nothing, or None.
    """
    label = label.long()
    weight = costmap
    if ignore_index is not None:
        ignored = label == ignore_index
        weight = torch.where(ignored, torch.zeros_like(costmap), costmap)
        label = torch.where(ignored, torch.zeros_like(label), label)
    picked = logp.gather(1, label.unsqueeze(1)).squeeze(1)
    return -(weight * picked).mean()


class AuxLoss(torch.nn.Module):
    """``sum_i loss_weight[i] * weighted_nll(outputs[i])``; one label volume serves all outputs."""

    def __init__(
        self, loss_weight: Sequence[float] = (1.0, 1.0, 1.0), ignore_index: int | None = None
    ):
        super().__init__()
        self.loss_weight = tuple(float(w) for w in loss_weight)
        self.ignore_index = ignore_index

    def forward(
        self, outputs: Sequence[torch.Tensor], label: torch.Tensor, costmap: torch.Tensor
    ) -> torch.Tensor:
        if len(outputs) != len(self.loss_weight):
            raise ValueError(f"{len(outputs)} outputs but {len(self.loss_weight)} loss weights")
        terms = [
            w * weighted_nll(logp, label, costmap, self.ignore_index)
            for w, logp in zip(self.loss_weight, outputs, strict=True)
        ]
        return torch.stack(terms).sum()
