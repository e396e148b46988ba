"""Validation on held-out images: whole-image tiled prediction, IoU within the cost map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import ConfigError, Problem, TrainConfig, ValidationSection
from ..data import TrainingImage
from ..inference import predict_volume


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


def validate(
    model: torch.nn.Module, images: Sequence[TrainingImage], cfg: TrainConfig, device: torch.device
) -> tuple[tuple[tuple[int, int], ...], tuple[float, ...]]:
    """Mean IoU per ``validation.OutputCh`` pair over the held-out images."""
    pairs = output_pairs(cfg.validation.OutputCh)
    scores = np.zeros((len(images), len(pairs)))
    was_training = model.training
    for i, image in enumerate(images):
        prob = predict_volume(
            model, image.raw, cfg.size_in, cfg.size_out, output_pairs=pairs, device=device
        )
        for j, (_, cls) in enumerate(pairs):
            scores[i, j] = iou_within_cost(prob[j], image.label, image.costmap, cls)
    model.train(was_training)
    return pairs, tuple(float(s) for s in scores.mean(axis=0))
