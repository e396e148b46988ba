"""The Aux loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from napari_cellseg_trainer.training import AuxLoss, weighted_nll


def _logp(p1: list[float]) -> torch.Tensor:
    """(1, 2, 1, 1, len) log-probabilities with P(class 1) = p1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.log(torch.stack([1 - p, p])).reshape(1, 2, 1, 1, -1)


def test_weighted_nll_matches_hand_computation():
    logp = _logp([0.9, 0.2, 0.6])
    label = torch.tensor([1, 0, 1]).reshape(1, 1, 1, 3)
    cost = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    expected = -(1 * math.log(0.9) + 2 * math.log(0.8) + 0) / 3
    assert float(weighted_nll(logp, label, cost)) == pytest.approx(expected)


def test_ignore_index_voxels_contribute_nothing_but_count_in_the_mean():
    logp = _logp([0.9, 0.2])
    label = torch.tensor([1, 255]).reshape(1, 1, 1, 2)
    cost = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    assert float(weighted_nll(logp, label, cost, ignore_index=255)) == pytest.approx(
        -math.log(0.9) / 2
    )


def test_aux_loss_is_the_weighted_sum_over_outputs():
    outputs = [_logp([0.9]), _logp([0.5]), _logp([0.1])]
    label = torch.ones(1, 1, 1, 1, dtype=torch.long)
    cost = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    loss = AuxLoss([1.0, 0.5, 2.0])(outputs, label, cost)
    expected = -(math.log(0.9) + 0.5 * math.log(0.5) + 2 * math.log(0.1))
    assert float(loss) == pytest.approx(expected)
    with pytest.raises(ValueError, match="3 outputs but 2 loss weights"):
        AuxLoss([1.0, 1.0])(outputs, label, cost)
