"""Learning on real data: the quick preset for N minutes on one half of a real volume, scored on
the other half against a smoothed-Otsu threshold. It prints the step setting the quick preset's
probe chose (precision, channels-last, threads) and the steps done.

The volume is ../shared/data/nuclei_1137 (100^3 confocal nuclei with curated labels; see its
README). The half x < 50 becomes a training folder, the quick preset is chosen for this machine
(a probe of real steps) and trains for ``--minutes`` (a held-out slab of the half scores each
epoch, and the best weights are kept); then the half x >= 50 is predicted with them and the
checkpoint's defaults (its normalisation, the automatic tile) and scored: IoU at 0.5, and at
the threshold the held-out slab chose.
Smoothed Otsu (Gaussian sigma 1) is scored on the same half. The supervised voxels per second of
the chosen patch and of the Sample preset's are measured in the same run (real steps).

    python bench/bench_learning.py [--minutes 10] [--seed 0] [--keep DIR]
        [--raw RAW.tif --labels LABELS.tif] [--test-raw RAW2.tif --test-labels LABELS2.tif]

``--raw``/``--labels`` put another volume (your own) in place of nuclei_1137, split the same
way; ``--test-raw``/``--test-labels`` score a second volume as a whole instead of the other half
(the whole first volume then trains). Skips with a message (exit 0) when the data are absent.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.data import write_training_image
from napari_cellseg_trainer.data.quality import neighbour_correlation
from napari_cellseg_trainer.inference.run import defaults_from_checkpoint, segment
from napari_cellseg_trainer.training import recorded_training
from napari_cellseg_trainer.training.events import (
    HoldoutScore,
    IterationEnd,
    Notice,
    TrainingFinished,
    TrainingStarted,
)
from napari_cellseg_trainer.training.probe import random_batch, step_config
from napari_cellseg_trainer.training.quick import quick_preset
from napari_cellseg_trainer.training.step import TrainingStep

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei_1137"
SPLIT = 50  # x < 50 trains, x >= 50 is scored


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return np.count_nonzero(pred & truth) / union if union else 1.0


def otsu_iou(raw: np.ndarray, truth: np.ndarray) -> float:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(raw.astype(np.float32), 1)
    return iou(smooth > threshold_otsu(smooth), truth)


def voxels_per_second(
    size_in, batch: int, steps: int = 2, precision: str = "fp32", channels_last: bool = False
) -> float:
    """Supervised voxels per second of real training steps of this patch, here."""
    cfg = step_config("unet_xy", size_in, batch)
    cfg.precision, cfg.channels_last = precision, channels_last
    step = TrainingStep(cfg, torch.device("cpu"))
    tensors = random_batch(cfg, torch.device("cpu"))
    step(*tensors)  # the first step sets Adam up
    started = time.perf_counter()
    for _ in range(steps):
        step(*tensors)
    seconds = (time.perf_counter() - started) / steps
    return math.prod(cfg.size_out) * batch / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the run folder (checkpoints) here")
    parser.add_argument("--raw", type=Path, default=DATA / "1137_mini_raw.ome.tif")
    parser.add_argument("--labels", type=Path, default=DATA / "1137_mini_labels.ome.tif")
    parser.add_argument("--test-raw", type=Path, help="score this volume instead of the other half")
    parser.add_argument("--test-labels", type=Path)
    args = parser.parse_args()
    if not args.raw.exists():
        print(f"skipped: {args.raw} is absent (see shared/data/README.md)")
        return 0
    if (args.test_raw is None) != (args.test_labels is None):
        print("error: --test-raw and --test-labels go together", file=sys.stderr)
        return 2
    raw = tifffile.imread(args.raw)
    truth = tifffile.imread(args.labels) > 0
    if args.test_raw is None:
        train_raw, train_truth = raw[:, :, :SPLIT], truth[:, :, :SPLIT]
        test_raw, test_truth, scored = raw[:, :, SPLIT:], truth[:, :, SPLIT:], f"x >= {SPLIT}"
    else:
        train_raw, train_truth = raw, truth
        test_raw, test_truth = tifffile.imread(args.test_raw), tifffile.imread(args.test_labels) > 0
        scored = args.test_raw.name
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_learning_"))
    folder = work / "train_half"
    write_training_image(
        folder,
        "training_part",
        train_raw.astype(np.float32),
        train_truth.astype(np.uint8),
        np.ones(train_truth.shape, np.float32),
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; data {args.raw.name} "
        f"{raw.shape} {raw.dtype}, trains on {train_raw.shape}, scores {scored} {test_raw.shape}"
    )
    print(f"neighbour correlation of the raw: {neighbour_correlation(raw.astype(np.float32)):.4f}")

    cfg, line = quick_preset(
        str(folder),
        str(work / "runs"),
        minutes=args.minutes,
        image_shape=train_raw.shape,
        device="cpu",
    )
    cfg.seed = args.seed
    cfg.preview_every_n_iter = 0
    print(line)
    print(
        f"  lr {cfg.learning_rate:g} {cfg.lr_schedule}, foreground_share {cfg.foreground_share}, "
        f"normalization {cfg.normalization}, holdout {cfg.holdout}, PatchPerBuffer "
        f"{cfg.loader.PatchPerBuffer}"
    )
    started = time.monotonic()
    iterations, last, scores, step_precision = 0, None, [], "fp32"
    for event in recorded_training(cfg):
        if isinstance(event, IterationEnd):
            iterations = event.iteration
        elif isinstance(event, HoldoutScore):
            scores.append(event)
            print(
                f"  {time.monotonic() - started:5.0f} s  epoch {event.epoch:3d}  it {event.iteration:4d}"
                f"  held-out IoU {event.iou:.3f} (at {event.threshold:.2f}: {event.iou_at_threshold:.3f})",
                flush=True,
            )
        elif isinstance(event, TrainingStarted):
            step_precision = event.precision
            threads = cfg.num_threads or f"{torch.get_num_threads()} (torch's default)"
            print(f"  training on {event.device} in {event.precision}, threads {threads}")
        elif isinstance(event, Notice):
            print(f"  {event.level}: {event.text}")
        elif isinstance(event, TrainingFinished):
            print(f"  finished: {event.reason} after {iterations} iterations")
            if event.best_checkpoint:
                print(f"  predicting with the best held-out checkpoint (epoch {event.best_epoch})")
            last = event.to_predict
    trained_s = time.monotonic() - started

    loaded = ckpt.load_checkpoint(last)
    defaults = defaults_from_checkpoint(loaded)
    model = ckpt.model_for(loaded, defaults.config)
    test = test_raw[None].astype(np.float32)
    cfg_predict = defaults.config
    cfg_predict.Threshold = -1.0
    started = time.monotonic()
    prob = segment(model, test, cfg_predict, torch.device("cpu"))[0]
    predict_s = time.monotonic() - started
    learned = iou(prob > 0.5, test_truth)
    tuned = iou(prob > defaults.threshold, test_truth) if defaults.threshold else float("nan")
    otsu = otsu_iou(test_raw, test_truth)
    everything = iou(np.ones_like(test_truth), test_truth)

    sample_rate = voxels_per_second((32, 100, 100), 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads or threads)
    quick_rate = voxels_per_second(
        tuple(cfg.size_in), cfg.loader.batch_size, 2, step_precision, cfg.channels_last
    )
    torch.set_num_threads(threads)
    print()
    print(
        f"trained {trained_s / 60:.1f} min ({iterations} iterations); predicted the other half "
        f"in {predict_s:.1f} s ({defaults.note})"
    )
    print(
        f"on {scored}:  learned IoU@0.5 {learned:.3f}   smoothed Otsu {otsu:.3f}   "
        f"(all foreground {everything:.3f})"
    )
    if defaults.threshold:
        print(
            f"                learned IoU at the held-out slab's threshold {defaults.threshold:.2f}: {tuned:.3f}"
        )
    print(
        f"supervised voxels/s: quick patch {cfg.size_in} batch {cfg.loader.batch_size} "
        f"{step_precision}{'+cl' if cfg.channels_last else ''} {quick_rate:,.0f}"
        f"   Sample preset [32, 100, 100] batch 2 {sample_rate:,.0f}   ({quick_rate / sample_rate:.0f}x)"
    )
    print(f"checkpoint: {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
