"""Time to build one patch buffer at the established tool's default sizes.

Ten synthetic images of 65 x 600 x 900, PatchPerBuffer 200, size_in [48, 148, 148],
size_out [20, 60, 60]: prints the seconds one image's augmentation takes and the total
buffer build time with 1 and 2 worker threads (``--workers 1 4 8`` for others).

    python bench/bench_buffer.py [--images 10] [--shape 65 600 900] [--patches 200] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_cellseg_trainer.data import TrainingImage, augment_image, draw_buffer
from napari_cellseg_trainer.models.geometry import margin_of


def synthetic_images(n: int, shape: tuple[int, int, int]) -> list[TrainingImage]:
    """Random raw images with thresholded labels; one shared all-ones cost map saves memory."""
    rng = np.random.default_rng(0)
    costmap = np.ones(shape, np.float32)
    images = []
    for i in range(n):
        raw = rng.random((1, *shape), dtype=np.float32)
        images.append(TrainingImage(f"im{i}", raw, (raw[0] > 0.8).astype(np.uint8), costmap, ""))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--shape", type=int, nargs=3, default=[65, 600, 900])
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--size-in", type=int, nargs=3, default=[48, 148, 148])
    parser.add_argument("--size-out", type=int, nargs=3, default=[20, 60, 60])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    images = synthetic_images(args.images, tuple(args.shape))
    margin = margin_of(args.size_in, args.size_out)
    print(f"{args.images} images of {args.shape}, {args.patches} patches of {args.size_in}")
    print(f"torch threads: {torch.get_num_threads()}")

    times = []
    for seed in range(3):
        start = time.perf_counter()
        augment_image(images[0], margin, np.random.default_rng(seed))
        times.append(time.perf_counter() - start)
    print(f"augment one image: {np.median(times):.2f} s (median of 3)")

    for workers in args.workers:
        start = time.perf_counter()
        patches = draw_buffer(
            images, args.patches, args.size_in, args.size_out, np.random.default_rng(0), workers
        )
        elapsed = time.perf_counter() - start
        size = (patches.raw.nbytes + patches.label.nbytes + patches.costmap.nbytes) / 2**20
        print(
            f"workers={workers}: buffer built in {elapsed:.1f} s "
            f"({elapsed / args.images:.2f} s per image, {size:.0f} MB of patches)"
        )
        del patches


if __name__ == "__main__":
    main()
