"""Validation on held-out images: whole-image tiled prediction, IoU within the cost map."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..config import ConfigError, Problem, TrainConfig, ValidationSection
from ..data import TrainingImage
from ..distributed import World, sum_over_ranks
from ..inference import predict_volume
from ..models import geometry


def split_validation(
    images: Sequence[TrainingImage], validation: ValidationSection, rng: np.random.Generator
) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """(training images, held-out images); nothing is held out while validation is off."""
    if validation.metric is None:
        return list(images), []
    leave = validation.leaveout
    if len(leave) == 1 and 0 < leave[0] < 1:
        count = max(1, round(leave[0] * len(images)))
        held = set(rng.choice(len(images), size=count, replace=False).tolist())
    else:
        held = {int(v) for v in leave}
        outside = sorted(i for i in held if i >= len(images))
        if outside:
            raise ConfigError(
                [
                    Problem(
                        "validation.leaveout",
                        f"image index {outside} does not exist: there are {len(images)} images (0-{len(images) - 1})",
                    )
                ]
            )
    if len(held) >= len(images):
        raise ConfigError(
            [
                Problem(
                    "validation.leaveout",
                    f"holds out all {len(images)} images: none is left to train on",
                )
            ]
        )
    train = [im for i, im in enumerate(images) if i not in held]
    val = [im for i, im in enumerate(images) if i in held]
    return train, val


def output_pairs(flat: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``[0, 1, 1, 1]`` -> ``((0, 1), (1, 1))``."""
    return tuple((int(a), int(b)) for a, b in zip(flat[::2], flat[1::2], strict=True))


def iou_within_cost(
    probability: np.ndarray, label: np.ndarray, costmap: np.ndarray, cls: int
) -> float:
    """IoU of (probability > 0.5) against (label == cls), counting voxels with cost > 0 only."""
    counted = costmap > 0
    pred = (probability > 0.5) & counted
    truth = (label == cls) & counted
    union = np.count_nonzero(pred | truth)
    if union == 0:
        return 1.0  # nothing to find and nothing found
    return np.count_nonzero(pred & truth) / union


def validation_tile(cfg: TrainConfig, shape: Sequence[int]) -> tuple[int, int, int]:
    """The tile size for predicting a held-out image: larger than the training patch.

    The network is fully convolutional, so bigger tiles predict the same image with fewer
    borders and much less margin recomputed; the input is at most 2 x batch_size training
    patches, which fits wherever training fits (evaluation keeps no activations for backward).
    """
    budget = 2 * cfg.loader.batch_size * math.prod(cfg.size_in)
    return geometry.covering_size_in(
        cfg.model.name, cfg.size_in, shape, budget, cfg.model.zoom_ratio
    )


def validate(
    model: torch.nn.Module,
    images: Sequence[TrainingImage],
    cfg: TrainConfig,
    device: torch.device,
    world: World | None = None,
) -> tuple[tuple[tuple[int, int], ...], tuple[float, ...]]:
    """Mean IoU per ``validation.OutputCh`` pair over the held-out images.

    Distributed, each rank predicts its share of the images and the sums are combined.
    """
    world = world or World()
    pairs = output_pairs(cfg.validation.OutputCh)
    mine = world.mine(images)
    scores = np.zeros((len(mine), len(pairs)))
    was_training = model.training
    for i, image in enumerate(mine):
        size_in = validation_tile(cfg, image.shape)
        size_out = geometry.size_out(cfg.model.name, size_in, cfg.model.zoom_ratio)
        prob = predict_volume(
            model, image.raw, size_in, size_out, output_pairs=pairs, device=device
        )
        for j, (_, cls) in enumerate(pairs):
            scores[i, j] = iou_within_cost(prob[j], image.label, image.costmap, cls)
    model.train(was_training)
    totals = sum_over_ranks([*scores.sum(axis=0), len(mine)], world, device)
    return pairs, tuple(float(s) / totals[-1] for s in totals[:-1])
