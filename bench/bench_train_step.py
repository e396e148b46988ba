"""Time per iteration of the full training loop vs the bare model step, same size and batch.

The bare step is forward + Aux loss + backward + Adam on tensors already in memory. The loop
is ``training.train`` on the sample data: patch buffer, augmentation, batching, loss,
optimiser, events and previews. Both run in this one process, so the ratio is fair.

    python bench/bench_train_step.py [--size-in 32 100 100] [--batch 2] [--iters 12]

``--modes fp32 bf16 bf16+cl bf16+cl+compile`` times the bare step in each speed setting
(precision, channels-last layout, torch.compile) against the first mode instead, with the
supervised voxels per second and the achieved multiply-adds per second against the device's
peak (on a CPU: :func:`napari_cellseg_trainer.devices.cpu_peak`, its formula printed). A
training step is counted as 3 forward passes of multiply-adds (the forward, the gradient of
the input and of the weights; the first layer's input gradient, not computed, is a rounding
error), the forward's from the exact layer shapes (``models.memory.layer_shapes``).

    python bench/bench_train_step.py --device cpu --size-in 48 124 132 --batch 1 --iters 3 \
        --modes fp32 bf16 fp32+cl bf16+cl
    python bench/bench_train_step.py --device cuda --size-in 48 148 148 --batch 8 \
        --modes fp32 bf16 bf16+cl bf16+cl+compile

On a CPU without native bfloat16 (AVX-512 BF16, AMX) the bf16 modes are skipped: torch has
no fast bfloat16 convolution there (measured: 38x slower than fp32 at [29, 92, 92]);
``--emulated`` times them anyway.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data import write_sample_folder
from napari_cellseg_trainer.devices import cpu_peak, native_cpu_bf16
from napari_cellseg_trainer.models import build_model, geometry
from napari_cellseg_trainer.models.memory import layer_shapes
from napari_cellseg_trainer.training import AuxLoss, BufferDrawn, IterationEnd, train
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
    size_in,
    size_out,
    batch: int,
    iters: int,
    warmup: int = 2,
    mode: str = "fp32",
    device="cpu",
    cpu_times: list[float] | None = None,
) -> list[float]:
    """Wall seconds of each timed step; ``cpu_times`` gets the process's CPU seconds of each."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
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
        start, cpu_start = time.perf_counter(), time.process_time()
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
            if cpu_times is not None:
                cpu_times.append(time.process_time() - cpu_start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"  {mode}: peak GPU memory {peak:.2f} GiB", flush=True)
    return times


def loop_step_times(
    size_in,
    size_out,
    batch: int,
    iters: int,
    warmup: int = 2,
    mode: str = "fp32",
    device: str = "cpu",
    epochs: int = 1,
    buffer_waits: list[float] | None = None,
    epoch_shuffle: int | None = None,
) -> list[float]:
    """Wall time between consecutive iteration events: everything the loop does per step.

    With ``epochs`` > 1 each epoch has ``iters`` iterations and the gaps include the epoch
    boundaries, where the next patch buffer (built in the background) takes over;
    ``buffer_waits`` gets the seconds the loop waited for each buffer (the first is drawn
    before training starts, the later ones in the background while the steps run);
    ``epoch_shuffle``: a new buffer every this many epochs (default: the template's).
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        z = max(48, size_in[0])
        write_sample_folder(folder, kind="filaments", n_images=3, shape=(z, 160, 160), seed=0)
        cfg = mode_config(mode)
        cfg.size_in, cfg.size_out = list(size_in), list(size_out)
        cfg.loader.datafolder, cfg.checkpoint_dir = str(folder), str(Path(tmp) / "ck")
        cfg.loader.batch_size = batch
        per_epoch = warmup + iters if epochs == 1 else iters
        cfg.loader.PatchPerBuffer = batch * per_epoch
        cfg.epochs, cfg.save_every_n_epoch = epochs, epochs
        cfg.loader.epoch_shuffle = epoch_shuffle or cfg.loader.epoch_shuffle
        cfg.preview_every_n_iter, cfg.device, cfg.seed = 5, device, 0
        stamps, waits = [], []
        for event in train(cfg):
            if isinstance(event, IterationEnd):
                stamps.append(time.perf_counter())
            elif isinstance(event, BufferDrawn):
                waits.append(event.seconds)
    if buffer_waits is not None:
        buffer_waits.extend(waits)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return gaps[warmup - 1 :]


def time_modes(args, step: tuple) -> dict[str, float]:
    """The bare step's median seconds in each of ``args.modes``, printed with its rates."""
    size_out, batch = step[1], step[2]
    work = 3 * float(layer_shapes("unet_xy").multiply_adds(*args.size_in)) * batch
    peak = cpu_peak(args.ghz, args.fma_units) if args.device == "cpu" else None
    print(
        f"torch {torch.__version__} on {args.device} ({torch.get_num_threads()} threads), unet_xy "
        f"{args.size_in} -> {list(size_out)}, batch {batch}; {work / 1e9:,.0f} G multiply-adds "
        f"a step (3 x forward)"
    )
    if peak is not None:
        print(f"CPU peak: {peak}; native bfloat16: {'yes' if native_cpu_bf16() else 'no'}")
    base, medians = None, {}
    for mode in args.modes:
        if _skipped(mode, args):
            continue
        cpu: list[float] = []
        times = bare_step_times(
            *step, warmup=args.warmup, mode=mode, device=args.device, cpu_times=cpu
        )
        medians[mode] = median = statistics.median(times)
        base = base or median
        rate = work / median
        print(
            f"{mode:>18}: median {median:.3f} s per step (of {len(times)}), "
            f"{base / median:.2f}x of {next(iter(medians))}; "
            f"{math.prod(size_out) * batch / median:,.0f} supervised voxels/s; "
            f"{rate / 1e9:.1f} GMAC/s",
            flush=True,
        )
        if peak is not None:
            print(" " * 20 + _against_peak(mode, rate, statistics.median(cpu) / median, peak))
    return medians


def _against_peak(mode: str, rate: float, cpu_per_wall: float, peak) -> str:
    """The achieved rate against the peak, per wall second and per CPU second received.

    Other processes on the cores take some of the wall time; the rate per CPU second the step
    got (its threads' busy time, spin-waits included) is the efficiency while it ran.
    """
    precision = "bf16" if mode.startswith("bf16") else "fp32"
    whole = peak.macs_per_second(precision)
    busy = cpu_per_wall / peak.cores  # the share of the cores this process had
    return (
        f"{rate / whole:.0%} of the {precision} peak; the step had {busy:.0%} of the "
        f"{peak.cores} cores (CPU {cpu_per_wall:.2f} s per second): "
        f"{rate / busy / whole:.0%} of the peak per CPU second received"
    )


def _skipped(mode: str, args) -> bool:
    if not mode.startswith("bf16") or args.device != "cpu" or native_cpu_bf16() or args.emulated:
        return False
    print(f"{mode:>18}: skipped: this CPU has no native bfloat16 (--emulated times it anyway)")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 100, 100])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", help="time the bare step in these speed settings")
    parser.add_argument("--emulated", action="store_true", help="time bf16 without native bf16")
    parser.add_argument("--ghz", type=float, help="the CPU clock for the peak (default: read)")
    parser.add_argument("--fma-units", type=int, help="FMA units per core (default: assumed)")
    parser.add_argument(
        "--loop",
        metavar="MODE",
        help="with --modes: also time the full loop in this setting against its bare step",
    )
    parser.add_argument("--loop-epochs", type=int, default=3)
    parser.add_argument("--loop-shuffle", type=int, help="a new buffer every N epochs (1: quick)")
    args = parser.parse_args()
    size_out = geometry.size_out("unet_xy", args.size_in)
    step = (args.size_in, size_out, args.batch, args.iters)
    if args.modes:
        medians = time_modes(args, step)
        if args.loop:
            where = {"mode": args.loop, "device": args.device}
            bare = medians.get(args.loop) or statistics.median(bare_step_times(*step, **where))
            waits: list[float] = []
            gaps = loop_step_times(
                *step,
                **where,
                epochs=args.loop_epochs,
                buffer_waits=waits,
                epoch_shuffle=args.loop_shuffle,
            )
            median, mean = statistics.median(gaps), statistics.fmean(gaps)
            print(
                f"full loop, {args.loop}, {args.loop_epochs} epochs of {args.iters} iterations:"
                f" median {median:.3f} s, mean {mean:.3f} s (epoch boundaries included),"
                f" max {max(gaps):.3f} s; loop/bare = {median / bare:.3f} (median),"
                f" {mean / bare:.3f} (mean)"
            )
            print(
                f"waits for the patch buffer: the first {waits[0]:.2f} s (before training), "
                f"then {', '.join(f'{w:.3f}' for w in waits[1:])} s (built in the background)"
            )
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, unet_xy "
        f"{args.size_in} -> {list(size_out)}, batch {args.batch}, {args.iters} timed iterations"
    )
    bare, loop = bare_step_times(*step), loop_step_times(*step)
    b, lp = statistics.median(bare), statistics.median(loop)
    print(f"bare step (forward+loss+backward+Adam): median {b:.3f} s  (min {min(bare):.3f})")
    print(f"full loop iteration:                    median {lp:.3f} s  (min {min(loop):.3f})")
    print(f"loop / bare = {lp / b:.3f}  ({(lp / b - 1) * 100:+.1f}% overhead)")


if __name__ == "__main__":
    main()
