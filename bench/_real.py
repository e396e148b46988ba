"""Shared by the real-data benchmarks: the volumes, the baselines, training with the quick
preset, prediction with a checkpoint's defaults, and the scores.

Two data sets, each a training volume and a test volume that no training or tuning reads:

- ``nuclei``: ../shared/data/nuclei_1135 trains, nuclei_1136 is scored (unet_xy_zoom, the
  nuclei starter; instances by the seeded watershed).
- ``membranes``: an Arabidopsis ovule crop with cell walls stained and curated cell labels
  (PlantSeg's tests/resources/sample_ovule.h5, MIT licence; see docs/benchmarks.md for how to
  get it), 32 x 128 x 128, split along x; the target is the cell boundaries (voxels next to
  another cell), unet_xy and the boundaries starter; cells are the connected pieces between
  predicted boundaries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from napari_cellseg_trainer.checkpoint import model_for
from napari_cellseg_trainer.data import write_training_image
from napari_cellseg_trainer.evaluation import evaluate
from napari_cellseg_trainer.evaluation.instances import (
    InstanceParams,
    default_params,
    label_instances,
)
from napari_cellseg_trainer.inference.run import Callbacks, defaults_from_checkpoint, segment
from napari_cellseg_trainer.model_source import open_model
from napari_cellseg_trainer.training import recorded_training
from napari_cellseg_trainer.training.events import (
    HoldoutScore,
    IterationEnd,
    Notice,
    TrainingFinished,
    TrainingStarted,
)
from napari_cellseg_trainer.training.quick import quick_preset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MEMBRANES = Path("/work/membrane_data")  # or --membranes DIR: ovule_raw.tif, ovule_labels.tif


@dataclass
class DataSet:
    name: str
    model: str
    starter: str
    train_raw: np.ndarray
    train_truth: np.ndarray  # bool target
    test_raw: np.ndarray
    test_truth: np.ndarray
    test_instances: np.ndarray  # nuclei or cells
    instances: str  # "watershed" (nuclei) or "cells" (the pieces between boundaries)
    described: str


def boundaries(cells: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another cell (both sides of each wall)."""
    edge = np.zeros(cells.shape, bool)
    for axis in range(3):
        a = np.take(cells, range(cells.shape[axis] - 1), axis=axis)
        b = np.take(cells, range(1, cells.shape[axis]), axis=axis)
        step = a != b
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= step
        edge[tuple(hi)] |= step
    return edge


def load(name: str, membranes: Path = MEMBRANES) -> DataSet | None:
    """The data set, or None (with the reason printed) when its files are absent."""
    if name == "nuclei":
        paths = [
            SHARED / f"nuclei_{n}" / f"{n}_mini_{k}.ome.tif"
            for n in (1135, 1136)
            for k in ("raw", "labels")
        ]
        if not all(p.is_file() for p in paths):
            print(f"skipped: the nuclei volumes are not in {SHARED} (see its README)")
            return None
        train_raw, train_labels, test_raw, test_labels = (tifffile.imread(p) for p in paths)
        return DataSet(
            "nuclei",
            "unet_xy_zoom",
            "starter:nuclei",
            train_raw,
            train_labels > 0,
            test_raw,
            test_labels > 0,
            test_labels,
            "watershed",
            "trains on nuclei_1135 (100^3), scores nuclei_1136 (100^3, never trained on)",
        )
    raw_path, label_path = membranes / "ovule_raw.tif", membranes / "ovule_labels.tif"
    if not (raw_path.is_file() and label_path.is_file()):
        print(f"skipped: the ovule volume is not in {membranes} (docs/benchmarks.md says how)")
        return None
    raw, cells = tifffile.imread(raw_path), tifffile.imread(label_path).astype(np.int64)
    truth = boundaries(cells)
    half = raw.shape[2] // 2
    # the half with the brighter tail is scored (the harder direction for a model)
    tails = [
        np.percentile(part, 99.5) / np.median(part) for part in (raw[..., :half], raw[..., half:])
    ]
    test, train = (
        (np.s_[..., :half], np.s_[..., half:])
        if tails[0] > tails[1]
        else (np.s_[..., half:], np.s_[..., :half])
    )
    return DataSet(
        "membranes",
        "unet_xy",
        "starter:boundaries",
        raw[train],
        truth[train],
        raw[test],
        truth[test],
        cells[test],
        "cells",
        f"ovule {raw.shape}: trains on one x half, scores the other (the brighter tail: "
        f"99.5th percentile / median {max(tails):.2f} vs {min(tails):.2f})",
    )


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return np.count_nonzero(pred & truth) / union if union else 1.0


def otsu_probability(raw: np.ndarray) -> tuple[np.ndarray, float]:
    """Smoothed (sigma 1), min-max normalised raw, and its Otsu threshold: the baseline."""
    smooth = ndimage.gaussian_filter(raw.astype(np.float32), 1)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return smooth, float(threshold_otsu(smooth))


def instance_f1(data: DataSet, probability: np.ndarray, threshold: float, spacing=None) -> float:
    """F1 at IoU 0.5 of the nuclei (seeded watershed) or cells (pieces between boundaries)."""
    if data.instances == "watershed":
        params = replace(default_params("unet_xy_zoom"), threshold=float(threshold))
        labels = label_instances(probability.astype(np.float32), params)
    else:
        inside = (probability <= threshold).astype(np.float32)
        params = InstanceParams(method="components", threshold=0.5, min_size=50)
        labels = label_instances(inside, params)
    return float(evaluate(labels, data.test_instances).instances.f1)


def best_threshold(probability: np.ndarray, truth: np.ndarray) -> float:
    """The threshold (0.05 steps) with the best IoU: chosen on training data only."""
    grid = np.arange(0.05, 0.96, 0.05)
    return float(grid[int(np.argmax([iou(probability > t, truth) for t in grid]))])


@dataclass
class Trained:
    checkpoint: Path | None
    line: str
    steps: int
    seconds: float
    holdout: list[float]


def train_quick(
    data: DataSet,
    work: Path,
    minutes: float,
    start: str,
    seed: int = 0,
    before: bool = False,
    log: Callable[[str], None] = print,
    recipe: int | None = None,
) -> Trained:
    """The quick preset on the data set's training volume for ``minutes`` (``start``: starter,
    scratch). ``before``: the preset as it was (percentiles 1-99.8, no intensity changes);
    ``recipe``: the preset with this normalisation recipe instead of its own."""
    folder = work / "train"
    if not folder.exists():
        write_training_image(
            folder,
            "train",
            data.train_raw.astype(np.float32),
            data.train_truth.astype(np.uint8),
            np.ones(data.train_truth.shape, np.float32),
        )
    cfg, line = quick_preset(
        str(folder),
        str(work / "runs"),
        model=data.model,
        minutes=minutes,
        image_shape=data.train_raw.shape,
        device="cpu",
        start=start,
    )
    if before:
        cfg.normalization, cfg.intensity_augmentation, cfg.acquisition_augmentation = (
            20,
            False,
            False,
        )
    elif recipe is not None:
        cfg.normalization = recipe
    cfg.seed, cfg.preview_every_n_iter = seed, 0
    log(f"  {line}")
    log(
        f"  lr {cfg.learning_rate:g} {cfg.lr_schedule}, normalization {cfg.normalization}, "
        f"intensity/acquisition augmentation {cfg.intensity_augmentation}/"
        f"{cfg.acquisition_augmentation}, finetune_from {cfg.finetune_from}"
    )
    started = time.monotonic()
    steps, last, holdout = 0, None, []
    for event in recorded_training(cfg):
        if isinstance(event, IterationEnd):
            steps = event.iteration
        elif isinstance(event, TrainingStarted):
            log(f"  precision {event.precision}, device {event.device}")
        elif isinstance(event, HoldoutScore):
            holdout.append(event.iou)
            log(
                f"  {time.monotonic() - started:5.0f} s  it {event.iteration:4d}  held-out IoU "
                f"{event.iou:.3f} (at {event.threshold:.2f}: {event.iou_at_threshold:.3f})"
            )
        elif isinstance(event, Notice):
            log(f"  {event.level}: {event.text}")
        elif isinstance(event, TrainingFinished):
            last = event.to_predict
            log(f"  finished: {event.reason} after {steps} steps")
    return Trained(last, line, steps, time.monotonic() - started, holdout)


def predict(
    reference: str | Path,
    raw: np.ndarray,
    warnings: list[str] | None = None,
    recipe: int | None = None,
) -> tuple[np.ndarray, float | None]:
    """Probabilities of ``raw`` (Z, Y, X) with a checkpoint's or starter's defaults (its
    normalisation, or ``recipe``), and the threshold its held-out slab chose (None for a
    starter)."""
    loaded = open_model(reference)
    defaults = defaults_from_checkpoint(loaded)
    cfg = defaults.config
    cfg.Threshold = -1.0
    if recipe is not None:
        cfg.Normalization = recipe
    model = model_for(loaded, cfg)
    callbacks = Callbacks(warn=warnings.append if warnings is not None else None)
    prob = segment(model, raw[None].astype(np.float32), cfg, torch.device("cpu"), callbacks)[0]
    return prob, defaults.threshold


@dataclass
class Scores:
    iou_05: float
    iou_tuned: float
    tuned: float
    f1: float

    def row(self, name: str) -> str:
        return f"{name:<34} {self.iou_05:6.3f}  {self.iou_tuned:6.3f} (at {self.tuned:.2f})  {self.f1:6.3f}"


HEADER = f"{'':<34} {'IoU@0.5':>6}  {'IoU at tuned thr.':>17}  {'inst. F1@0.5':>6}"


def scores(data: DataSet, probability: np.ndarray, tuned: float) -> Scores:
    return Scores(
        iou(probability > 0.5, data.test_truth),
        iou(probability > tuned, data.test_truth),
        tuned,
        instance_f1(data, probability, tuned),
    )


def otsu_scores(data: DataSet) -> Scores:
    smooth, thr = otsu_probability(data.test_raw)
    if data.instances == "watershed":  # the README's baseline: Otsu, then connected components
        labels = label_instances(
            (smooth > thr).astype(np.float32),
            InstanceParams(
                method="components", threshold=0.5, min_size=default_params("unet_xy_zoom").min_size
            ),
        )
        f1 = float(evaluate(labels, data.test_instances).instances.f1)
    else:
        f1 = instance_f1(data, smooth, thr)
    value = iou(smooth > thr, data.test_truth)
    return Scores(value, value, thr, f1)


def threads() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def steps_per_minute(trained: Trained) -> float:
    return trained.steps / max(trained.seconds / 60, 1e-9) if trained.steps else math.nan
