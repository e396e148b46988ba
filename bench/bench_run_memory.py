"""Memory over a long training run: what the process holds vs what it uses, epoch by epoch.

A new buffer every epoch (the worst case for churn) on the sample data. After each epoch it
reads RSS, hands freed pages back (:func:`devices.release_freed_memory`, as the panel does
when a run ends), reads RSS again, reads the C heap's bytes in use (glibc's ``mallinfo2``) and
counts live tensors and Python objects. A leak shows as a rising heap or count; RSS
("held") wanders with the pages the C allocator keeps.

    python bench/bench_run_memory.py [--epochs 72] [--size-in 32 100 100] [--size-out 4 12 12]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.devices import heap_bytes_in_use, release_freed_memory, resident_bytes
from napari_cellseg_trainer.training import EpochEnd, train


def rss_mb() -> float:
    return resident_bytes() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=72)
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 100, 100])
    parser.add_argument("--size-out", type=int, nargs=3, default=[4, 12, 12])
    parser.add_argument("--save-every", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_run_memory_"))
    write_sample_folder(work / "data", kind="filaments", n_images=3, seed=0)
    cfg = config.template("unet_xy")
    cfg.size_in, cfg.size_out = args.size_in, args.size_out
    cfg.loader.datafolder, cfg.checkpoint_dir = str(work / "data"), str(work / "checkpoints")
    cfg.loader.batch_size, cfg.loader.PatchPerBuffer, cfg.loader.epoch_shuffle = 1, 1, 1
    cfg.epochs, cfg.save_every_n_epoch, cfg.device, cfg.seed = (
        args.epochs,
        args.save_every,
        "cpu",
        0,
    )
    cfg.preview_every_n_iter = 1
    print(f"unet_xy {cfg.size_in} -> {cfg.size_out}, {args.epochs} epochs, a new buffer each")
    held, in_use, heap, counts = [], [], [], []
    started = time.perf_counter()
    for event in train(cfg):
        if not isinstance(event, EpochEnd):
            continue
        held.append(rss_mb())
        release_freed_memory()
        in_use.append(rss_mb())
        heap.append((heap_bytes_in_use() or 0) / 2**20)
        with warnings.catch_warnings():  # isinstance touches torch's deprecated lazy aliases
            warnings.simplefilter("ignore", FutureWarning)
            tensors = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
        counts.append((tensors, len(gc.get_objects())))
        print(
            f"epoch {event.epoch:3d}: RSS {held[-1]:7.1f} MB, after release {in_use[-1]:7.1f} MB, "
            f"heap in use {heap[-1]:8.3f} MB, "
            f"{tensors} tensors, {counts[-1][1]} objects ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    half = len(held) // 2
    print(
        f"RSS:           min {min(held):.1f}, max {max(held):.1f} MB\n"
        f"after release: min {min(in_use):.1f}, max {max(in_use):.1f} MB; median of the second "
        f"half minus the first: {statistics.median(in_use[half:]) - statistics.median(in_use[:half]):+.1f} MB\n"
        f"heap in use:   epoch {half} {heap[half - 1]:.3f} MB, last {heap[-1]:.3f} MB "
        f"({(heap[-1] - heap[half - 1]) * 1024 / (len(heap) - half):+.2f} KB per epoch)\n"
        f"live tensors {sorted({c[0] for c in counts})}; objects {counts[0][1]} -> {counts[-1][1]}"
    )


if __name__ == "__main__":
    main()
