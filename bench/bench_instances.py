"""Instance segmentation and its scores on real nuclei: the GoNuclear crop in ../shared/data.

Scores ``nuclei_1136`` (100^3 voxels, 32 nuclei; the test volume, never trained on)
against its hand-curated instance labels:

- the classic baseline, Gaussian smoothing (sigma 1) then an Otsu threshold (the data's README
  gives IoU 0.491 on it), split into objects by connected components and by the
  distance-seeded watershed (``default_params("unet_xy_zoom")``);
- the ground truth itself thresholded (> 0) and split the same two ways: an upper bound of how
  well the instance step alone separates touching nuclei, whatever the network.

    python bench/bench_instances.py [--data ../shared/data/nuclei_1136]

Prints figures only; exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from napari_cellseg_trainer.evaluation import (
    InstanceParams,
    default_params,
    evaluate,
    label_instances,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei_1136"
HALF = np.s_[...]  # the whole volume
COLUMNS = "IoU     Dice    F1@0.5  matched split merged missed FP  objects seconds"


def otsu_mask(raw: np.ndarray) -> np.ndarray:
    """Smoothed (sigma 1) raw image above its Otsu threshold, both taken on the scored half."""
    smooth = ndi.gaussian_filter(raw.astype(np.float32), sigma=1)[HALF]
    return smooth > threshold_otsu(smooth)


def instances_row(name: str, mask: np.ndarray, truth: np.ndarray, params: InstanceParams) -> str:
    start = time.perf_counter()
    labels = label_instances(mask.astype(np.float32), params)
    seconds = time.perf_counter() - start
    result = evaluate(labels, truth)
    s = result.instances
    return (
        f"{name:<28} {result.iou:.4f}  {result.dice:.4f}  {s.f1:.4f}  {s.matched:>7} "
        f"{s.split:>5} {s.merged:>6} {s.missed:>6} {s.false_positives:>3} {s.n_pred:>8} "
        f"{seconds:>7.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the nuclei_1136 folder")
    args = parser.parse_args(argv)
    raw_path = args.data / "1136_mini_raw.ome.tif"
    labels_path = args.data / "1136_mini_labels.ome.tif"
    if not (raw_path.is_file() and labels_path.is_file()):
        print(f"skipped: {args.data} does not hold the nuclei_1136 crop")
        return 0
    raw, labels = tifffile.imread(raw_path), tifffile.imread(labels_path)
    truth = labels[HALF]
    baseline = otsu_mask(raw)
    semantic = evaluate(baseline, truth > 0)
    print(f"nuclei_1136: {truth.shape} voxels, {len(np.unique(truth)) - 1} nuclei")
    print(f"smoothed Otsu: IoU {semantic.iou:.4f} Dice {semantic.dice:.4f} (README: IoU 0.491)")
    components = InstanceParams(
        method="components", min_size=default_params("unet_xy_zoom").min_size
    )
    watershed = default_params("unet_xy_zoom")
    print(f"watershed: {watershed}")
    print(f"{'':<28} {COLUMNS}")
    for name, mask in (("Otsu", baseline), ("truth > 0", truth > 0)):
        print(instances_row(f"{name} + components", mask, truth, components))
        print(instances_row(f"{name} + watershed", mask, truth, watershed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
