"""Validation on held-out images: whole-image tiled prediction, IoU within the cost map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import ConfigError, Problem, TrainConfig, ValidationSection
from ..data import TrainingImage
from ..data.zarr_folder import in_memory
from ..distributed import World, sum_over_ranks
from ..inference import predict_volume
from ..inference.tile_choice import choose_tile
from ..models import geometry
from ..models.memory import training_bytes


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
    """The tile for predicting a held-out image: the automatic rule of prediction.

    The cheapest valid tile (:func:`..inference.tile_choice.choose_tile`) within the memory of
    one training step: the step already runs on this device, and a forward pass without
    autograd needs less than a step of the same size (a third of it, measured).
    """
    budget = training_bytes(
        cfg.model.name, cfg.size_in, cfg.loader.batch_size, cfg.model.zoom_ratio, cfg.nchannel
    )
    choice = choose_tile(
        cfg.model.name,
        shape,
        budget,
        zoom_ratio=cfg.model.zoom_ratio,
        nchannel=cfg.nchannel,
        batch_size=1,
    )
    return choice.size_in


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
        image = in_memory(image)  # predicted whole
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


THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # tried on the held-out slabs


def holdout_iou(
    model: torch.nn.Module, slabs: Sequence[TrainingImage], cfg: TrainConfig, device: torch.device
) -> tuple[float, float, float]:
    """(IoU at 0.5, the threshold with the best IoU, that IoU) on the held-out slabs.

    Each slab is predicted whole (the automatic tile within one training step's memory); voxels
    outside the cost map do not count; the voxels of all slabs are pooled. A model whose
    probabilities are not calibrated (little evidence per voxel) may do much better at another
    threshold: it is measured here, on data the model did not train on, and saved with the
    checkpoint for prediction to start from.
    """
    was_training = model.training
    hits = np.zeros(len(THRESHOLDS) + 1)
    union = np.zeros(len(THRESHOLDS) + 1)
    cuts = np.concatenate([[0.5], THRESHOLDS])
    for slab in slabs:
        slab = in_memory(slab)  # predicted whole
        size_in = validation_tile(cfg, slab.shape)
        size_out = geometry.size_out(cfg.model.name, size_in, cfg.model.zoom_ratio)
        prob = predict_volume(model, slab.raw, size_in, size_out, device=device)[0]
        counted = slab.costmap > 0
        truth = (slab.label == 1) & counted
        for i, cut in enumerate(cuts):
            pred = (prob > cut) & counted
            hits[i] += np.count_nonzero(pred & truth)
            union[i] += np.count_nonzero(pred | truth)
    model.train(was_training)
    iou = np.where(union > 0, hits / np.maximum(union, 1), 1.0)
    best = int(np.argmax(iou[1:])) + 1
    return float(iou[0]), float(cuts[best]), float(iou[best])
