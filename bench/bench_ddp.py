"""Per-iteration time and throughput of 1 vs N training processes (torchrun, DDP).

Trains unet_xy on the embedded sample data with torchrun for each process count and reads the
per-epoch seconds from metrics.csv (the first epoch, which builds the buffer and warms up, is
left out). Every process runs a batch of ``--batch`` patches per iteration, so N processes
train on N x batch patches per iteration.

    python bench/bench_ddp.py [--procs 1 2] [--size-in 32 100 100] [--batch 1] [--epochs 4]

On a CPU machine all processes share its cores (OMP_NUM_THREADS = cores / N per process).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.models import geometry


def run(procs: int, args: argparse.Namespace, folder: Path, tmp: Path) -> tuple[float, int]:
    cfg = config.template("unet_xy")
    cfg.size_in = list(args.size_in)
    cfg.size_out = list(geometry.size_out("unet_xy", args.size_in))
    cfg.loader.datafolder = str(folder)
    cfg.loader.batch_size = args.batch
    cfg.loader.PatchPerBuffer = args.batch * procs * args.iters
    cfg.epochs = cfg.save_every_n_epoch = args.epochs
    cfg.checkpoint_dir = str(tmp / f"run{procs}")
    cfg.learning_rate, cfg.seed, cfg.device, cfg.preview_every_n_iter = 1e-3, 0, args.device, 0
    path = config.save_config(cfg, tmp / f"train{procs}.yaml")
    env = dict(os.environ)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={procs}", "-m", "napari_cellseg_trainer", "train"]
    done = subprocess.run([*cmd, "--config", str(path)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"torchrun with {procs} process(es) failed:\n{done.stderr[-3000:]}")
    with open(Path(cfg.checkpoint_dir) / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[1:]
    seconds = sum(float(r["seconds"]) for r in rows)
    return seconds / (len(rows) * args.iters), procs * args.batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 100, 100])
    parser.add_argument("--batch", type=int, default=1, help="patches per process per iteration")
    parser.add_argument("--iters", type=int, default=4, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "sample"
        # Big enough for size_in (the sample's own shape is 32 x 128 x 128).
        shape = [max(n, s + 12) for n, s in zip((32, 128, 128), args.size_in, strict=True)]
        write_sample_folder(folder, n_images=3, shape=shape)
        print(
            f"torch {torch.__version__}, {os.cpu_count()} CPU cores, device {args.device}, "
            f"unet_xy size_in {args.size_in}, batch {args.batch} per process"
        )
        base = None
        for procs in args.procs:
            per_iter, patches = run(procs, args, folder, tmp)
            rate = patches / per_iter
            base = base or rate
            print(
                f"{procs} process(es): {per_iter:.3f} s/iteration, {patches} patches/iteration, "
                f"{rate:.3f} patches/s ({rate / base:.2f}x of {args.procs[0]} process)"
            )


if __name__ == "__main__":
    main()
