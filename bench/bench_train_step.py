"""Time per iteration of the full training loop vs the bare model step, same size and batch.

The bare step is forward + Aux loss + backward + Adam on tensors already in memory. The loop
is ``training.train`` on the sample data: patch buffer, augmentation, batching, loss,
optimiser, events and previews. Both run in this one process, so the ratio is fair.

    python bench/bench_train_step.py [--size-in 32 100 100] [--batch 2] [--iters 12]

On a GPU, ``--modes fp32 bf16 bf16+cl bf16+cl+compile`` times the bare step in each speed
setting (precision, channels-last layout, torch.compile) against fp32 eager instead:

    python bench/bench_train_step.py --device cuda --size-in 48 148 148 --batch 8 \
        --modes fp32 bf16 bf16+cl bf16+cl+compile
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.models import build_model, geometry
from napari_cellseg_trainer.training import AuxLoss, IterationEnd, train
from napari_cellseg_trainer.training.precision import maybe_compile, step_options


def mode_config(mode: str) -> config.TrainConfig:
    """``fp32``, ``bf16``, ``fp16``, with ``+cl`` (channels-last) and ``+compile``."""
    parts = mode.split("+")
    cfg = config.template("unet_xy")
    cfg.precision = parts[0]
    cfg.channels_last = "cl" in parts
    cfg.compile = "compile" in parts
    return cfg


def bare_step_times(
    size_in, size_out, batch: int, iters: int, warmup: int = 2, mode: str = "fp32", device="cpu"
) -> list[float]:
    device = torch.device(device)
    cfg = mode_config(mode)
    options = step_options(cfg, device)
    net = build_model("unet_xy").to(device)
    if options.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    model = maybe_compile(net, cfg, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5, weight_decay=0.005)
    loss_fn = AuxLoss()
    raw = options.layout(torch.rand(batch, 1, *size_in, device=device))
    label = torch.randint(0, 2, (batch, *size_out), device=device)
    cost = torch.ones(batch, *size_out, device=device)
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        with options.autocast(device):
            outputs = model(raw)
        loss = loss_fn([o.float() for o in outputs], label, cost)
        optimizer.zero_grad(set_to_none=True)
        if options.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            options.scaler.scale(loss).backward()
            options.scaler.step(optimizer)
            options.scaler.update()
        float(loss.detach())  # waits for the GPU
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def loop_step_times(size_in, size_out, batch: int, iters: int, warmup: int = 2) -> list[float]:
    """Wall time between consecutive iteration events: everything the loop does per step."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_sample_folder(folder, kind="filaments", n_images=3, shape=(48, 160, 160), seed=0)
        cfg = config.template("unet_xy")
        cfg.size_in, cfg.size_out = list(size_in), list(size_out)
        cfg.loader.datafolder, cfg.checkpoint_dir = str(folder), str(Path(tmp) / "ck")
        cfg.loader.batch_size = batch
        cfg.loader.PatchPerBuffer = batch * (warmup + iters)
        cfg.epochs, cfg.save_every_n_epoch = 1, 1
        cfg.preview_every_n_iter, cfg.device, cfg.seed = 5, "cpu", 0
        stamps = [time.perf_counter() for e in train(cfg) if isinstance(e, IterationEnd)]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return gaps[warmup - 1 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 100, 100])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", help="time the bare step in these speed settings")
    args = parser.parse_args()
    size_out = geometry.size_out("unet_xy", args.size_in)
    if args.modes:
        print(
            f"torch {torch.__version__} on {args.device}, unet_xy {args.size_in}, batch {args.batch}"
        )
        base = None
        for mode in args.modes:
            times = bare_step_times(
                args.size_in, size_out, args.batch, args.iters, mode=mode, device=args.device
            )
            median = statistics.median(times)
            base = base or median
            print(
                f"{mode:>18}: median {median:.3f} s per step, {base / median:.2f}x of {args.modes[0]}"
            )
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, unet_xy "
        f"{args.size_in} -> {list(size_out)}, batch {args.batch}, {args.iters} timed iterations"
    )
    bare = bare_step_times(args.size_in, size_out, args.batch, args.iters)
    loop = loop_step_times(args.size_in, size_out, args.batch, args.iters)
    b, lp = statistics.median(bare), statistics.median(loop)
    print(f"bare step (forward+loss+backward+Adam): median {b:.3f} s  (min {min(bare):.3f})")
    print(f"full loop iteration:                    median {lp:.3f} s  (min {min(loop):.3f})")
    print(f"loop / bare = {lp / b:.3f}  ({(lp / b - 1) * 100:+.1f}% overhead)")


if __name__ == "__main__":
    main()
