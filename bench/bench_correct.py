"""Instances and correct-and-retrain on real data, from a checkpoint of bench_learning.py.

On ../shared/data/nuclei_1136 (the test volume: the checkpoint trained on nuclei_1135 only):
1. instance F1@0.5 (with split / merged / missed) of the model's instances against the curated
   labels, next to smoothed Otsu + connected components;
2. a correction round as a user would do it in napari: the worst 10-plane slab of the
   prediction is found, ``--slices`` of its planes are corrected (painted from the curated
   labels as sparse labels: 1 background, 2 structure, other planes unpainted), the model is
   fine-tuned on them from the checkpoint for ``--minutes`` (weights kept, a new run folder),
   and IoU and F1 are measured before and after on the planes that were NOT corrected.

    python bench/bench_correct.py --checkpoint CK [--slices 5] [--minutes 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_cellseg_trainer import checkpoint as ckpt
from napari_cellseg_trainer.data.layer_sets import LayerSet, images_from_layers
from napari_cellseg_trainer.evaluation import connected_components, evaluate, label_instances
from napari_cellseg_trainer.evaluation.instances import InstanceParams
from napari_cellseg_trainer.inference.run import defaults_from_checkpoint, segment
from napari_cellseg_trainer.model_source import open_model
from napari_cellseg_trainer.training import recorded_training
from napari_cellseg_trainer.training.events import CheckpointSaved, IterationEnd
from napari_cellseg_trainer.training.quick import fine_tune_preset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei_1136"
NUCLEI = InstanceParams(method="watershed", seeds="distance", min_distance=4, min_size=30)


def predict(checkpoint: Path, image: np.ndarray) -> tuple[np.ndarray, float]:
    loaded = open_model(checkpoint)
    defaults = defaults_from_checkpoint(loaded)
    cfg = defaults.config
    cfg.Threshold = -1.0
    model = ckpt.model_for(loaded, cfg)
    prob = segment(model, image[None].astype(np.float32), cfg, torch.device("cpu"))[0]
    return prob, defaults.threshold or 0.5


def scores(prob: np.ndarray, threshold: float, truth: np.ndarray, planes=None) -> str:
    keep = np.ones(truth.shape[0], bool) if planes is None else planes
    params = dataclasses.replace(NUCLEI, threshold=threshold)
    labels = label_instances(prob, params)
    result = evaluate(labels[keep], truth[keep], threshold=threshold)
    semantic = evaluate(prob[keep], truth[keep] > 0, threshold=threshold)
    s = result.instances
    return (
        f"IoU {semantic.iou:.3f}  F1@0.5 {s.f1:.3f}  matched {s.matched} / split {s.split} / "
        f"merged {s.merged} / missed {s.missed} / false positives {s.false_positives}"
    )


def fine_tune(
    checkpoint: Path, raw: np.ndarray, painted: np.ndarray, minutes: float, work: Path
) -> Path:
    """The panel's Fine-tune: the checkpoint's config, weights kept, sparse corrected labels."""
    cfg = fine_tune_preset(checkpoint, minutes)  # what the panel's Fine-tune runs
    cfg.checkpoint_dir = str(work / "finetune")
    cfg.preview_every_n_iter = 0
    recipe = cfg.normalization if cfg.normalization is not None else 0
    images = images_from_layers(
        [LayerSet("corrected", raw, painted, sparse=True)], 1, 2, cfg.size_out, recipe
    )
    last, iterations = None, 0
    for event in recorded_training(cfg, images=images):
        if isinstance(event, CheckpointSaved):
            last = event.path
        elif isinstance(event, IterationEnd):
            iterations = event.iteration
    print(f"  fine-tuned {minutes:g} min, {iterations} iterations -> {last.name}")
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    if not (DATA / "1136_mini_raw.ome.tif").exists():
        print(f"skipped: {DATA} does not hold the nuclei_1136 crop")
        return 0
    raw = tifffile.imread(DATA / "1136_mini_raw.ome.tif")
    truth = tifffile.imread(DATA / "1136_mini_labels.ome.tif")
    checkpoint = Path(args.checkpoint)
    prob, threshold = predict(checkpoint, raw)

    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(raw.astype(np.float32), 1)
    otsu = connected_components(smooth > threshold_otsu(smooth))
    o = evaluate(otsu, truth).instances
    print(f"instances on nuclei_1136 ({len(np.unique(truth)) - 1} objects):")
    print(f"  model + watershed (threshold {threshold:.2f}): {scores(prob, threshold, truth)}")
    print(
        "  smoothed Otsu + connected components: IoU "
        f"{evaluate(smooth > threshold_otsu(smooth), truth > 0).iou:.3f}"
        f"  F1@0.5 {o.f1:.3f}  matched {o.matched} / split {o.split} / merged {o.merged} / missed {o.missed}"
    )

    # the worst 10-plane slab of the prediction, and the planes of it a user corrects
    binary, gt = prob > threshold, truth > 0
    worst, worst_iou = 0, 2.0
    for z in range(0, raw.shape[0] - 10, 5):
        union = np.count_nonzero(binary[z : z + 10] | gt[z : z + 10])
        value = np.count_nonzero(binary[z : z + 10] & gt[z : z + 10]) / union if union else 1
        if value < worst_iou:
            worst, worst_iou = z, value
    corrected = np.linspace(worst, worst + 9, args.slices).round().astype(int)
    painted = np.zeros(truth.shape, np.uint8)
    painted[corrected] = np.where(gt[corrected], 2, 1)  # sparse: 1 background, 2 structure
    others = np.ones(raw.shape[0], bool)
    others[corrected] = False
    print(
        f"correcting planes {corrected.tolist()} of the worst slab (z {worst}-{worst + 9}, IoU {worst_iou:.3f})"
    )
    before = scores(prob, threshold, truth, others)
    work = Path(tempfile.mkdtemp(prefix="bench_correct_"))
    started = time.monotonic()
    tuned = fine_tune(checkpoint, raw, painted, args.minutes, work)
    prob_after, threshold_after = predict(tuned, raw)
    print(f"  round took {time.monotonic() - started:.0f} s (fine-tune and a new prediction)")
    print(f"  before, on the {int(others.sum())} uncorrected planes: {before}")
    print(
        f"  after,  on the same planes (threshold {threshold_after:.2f}): "
        f"{scores(prob_after, threshold_after, truth, others)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
