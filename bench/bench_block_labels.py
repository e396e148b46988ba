"""Connected components block by block against the whole volume in memory: time, memory, same
objects.

A smooth random probability volume (Gaussian-filtered noise, so objects cross block borders in
every direction) is stored as a zarr array in the blocks of an OME-Zarr prediction
(64 x 256 x 256). It is labelled twice: block by block from the store into a zarr label array
(:func:`napari_cellseg_trainer.evaluation.block_labels.components_by_block`), and whole in
memory (``label_instances``, method components). Printed: the seconds, the numpy memory each
held at its peak (traced), the object count, and whether the two partitions are the same.

    python bench/bench_block_labels.py [--shape 64 1024 1024] [--folder /tmp/bench_labels]
"""

from __future__ import annotations

import argparse
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage as ndi

from napari_cellseg_trainer.evaluation.block_labels import components_by_block
from napari_cellseg_trainer.evaluation.instances import InstanceParams, label_instances

BLOCK = (64, 256, 256)
THRESHOLD, MIN_SIZE = 0.55, 10


def probability(shape, path: Path):
    """The benchmark volume (made whole: smooth across every block border), stored in BLOCK
    chunks."""
    noise = np.random.default_rng(0).random(shape, dtype=np.float32)
    smooth = ndi.gaussian_filter(noise, 2.0, output=np.float32)
    smooth -= 0.5
    smooth *= 8  # spread around 0.5
    smooth += 0.5
    store = zarr.create_array(str(path), shape=shape, chunks=BLOCK, dtype=np.float32)
    store[...] = smooth
    return store


def traced(run):
    tracemalloc.start()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_labels"))
    args = parser.parse_args()
    shape = tuple(args.shape)
    shutil.rmtree(args.folder, ignore_errors=True)
    args.folder.mkdir(parents=True)
    source = probability(shape, args.folder / "prob.zarr")
    target = zarr.create_array(
        str(args.folder / "labels.zarr"), shape=shape, chunks=BLOCK, dtype=np.uint32
    )
    count, block_s, block_peak = traced(
        lambda: components_by_block(source, target, BLOCK, THRESHOLD, MIN_SIZE)
    )
    params = InstanceParams(threshold=THRESHOLD, method="components", min_size=MIN_SIZE)
    whole, whole_s, whole_peak = traced(lambda: label_instances(source[...], params))
    found = target[...]
    pairs = np.unique((found.astype(np.int64) << 32) | whole).size  # label pairs that meet
    same = np.array_equal(found > 0, whole > 0) and pairs == count + 1 == whole.max() + 1
    mb = 2**20
    print(f"volume {shape}, blocks {list(BLOCK)}, threshold {THRESHOLD}, min size {MIN_SIZE}")
    print(
        f"block by block: {block_s:6.1f} s, numpy peak {block_peak / mb:6.0f} MB, {count} objects"
    )
    print(
        f"whole volume:   {whole_s:6.1f} s, numpy peak {whole_peak / mb:6.0f} MB, {whole.max()} objects"
    )
    print(f"same objects (up to numbering): {same}")
    shutil.rmtree(args.folder)


if __name__ == "__main__":
    main()
