"""Whole-volume prediction throughput and memory: a 1 x 65 x 624 x 924 float32 volume, unet_xy.

Prints seconds, voxels per second, peak resident memory, the peak of the prediction's own
arrays (numpy allocations traced by tracemalloc: padded input, output, blend weights, tiles;
not the network's activations) and how both compare with 3 x (input + output) in float32,
and the share of the time spent in the model itself: the model is wrapped in a timer, so
"bare model time for the same tiles" is measured in the same run as the whole prediction.

    python bench/bench_predict.py [--size-in 48 308 308] [--tiling blend] [--batch 1] [--device cpu]

``--stand-in`` replaces the U-Net by a network with the same geometry that costs nothing
(a crop): it measures the tiling machinery alone (its time and memory) in seconds.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np
import torch

from napari_cellseg_trainer.devices import describe_device, select_device
from napari_cellseg_trainer.inference import predict_volume
from napari_cellseg_trainer.models import build_model, geometry

SHAPE = (1, 65, 624, 924)


class TimedModel(torch.nn.Module):
    """The model, with the time of every forward pass added up.

    On CUDA the time is the GPU's, between events recorded around each pass: no
    synchronisation, so the prediction may overlap its CPU work with the model as it does
    unmeasured. On the CPU it is wall time.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.wall = 0.0
        self.events: list = []
        self.calls = 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.model(x)
            end.record()
            self.events.append((start, end))
            return out
        start = time.perf_counter()
        out = self.model(x)
        self.wall += time.perf_counter() - start
        return out

    @property
    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.wall + sum(s.elapsed_time(e) for s, e in self.events) / 1000


class StandIn(torch.nn.Module):
    """unet_xy's geometry (crop of the margin) and outputs, at no cost."""

    def __init__(self, size_in, size_out) -> None:
        super().__init__()
        self.margin = [(i - o) // 2 for i, o in zip(size_in, size_out, strict=True)]
        self.size_out = list(size_out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        (mz, my, mx), (oz, oy, ox) = self.margin, self.size_out
        y = x[:, :1, mz : mz + oz, my : my + oy, mx : mx + ox]
        out = torch.log_softmax(torch.cat([-y, y], 1), 1)
        return [out, out, out]


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-in", type=int, nargs=3, default=[48, 308, 308])
    parser.add_argument("--tiling", choices=["blend", "established"], default="blend")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stand-in", action="store_true", help="a no-cost network (see above)")
    args = parser.parse_args()

    device = select_device(args.device)
    size_out = geometry.size_out("unet_xy", args.size_in)
    rng = np.random.default_rng(0)
    image = rng.random(SHAPE, dtype=np.float32)
    baseline = peak_rss_mb()
    net = StandIn(args.size_in, size_out) if args.stand_in else build_model("unet_xy")
    model = TimedModel(net.to(device), device)
    tiles_done = [0, 0]

    def progress(done: int, total: int) -> None:
        tiles_done[:] = [done, total]
        print(f"\r  tiles {done}/{total}", end="", file=sys.stderr, flush=True)

    tracemalloc.start()
    start = time.perf_counter()
    prob = predict_volume(
        model,
        image,
        args.size_in,
        list(size_out),
        tiling=args.tiling,
        overlap=args.overlap,
        batch_size=args.batch,
        device=device,
        progress=progress,
    )
    total = time.perf_counter() - start
    what = "stand-in for unet_xy" if args.stand_in else "unet_xy"
    arrays_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(file=sys.stderr)
    voxels = int(np.prod(SHAPE[1:]))
    io_mb = (image.nbytes + prob.nbytes) / 2**20
    peak = peak_rss_mb()
    print(
        f"torch {torch.__version__} on {describe_device(device)}, {torch.get_num_threads()} threads"
    )
    print(
        f"volume {SHAPE} float32, {what} size_in {args.size_in} -> size_out {list(size_out)}, "
        f"tiling {args.tiling} (overlap {args.overlap}), {tiles_done[1]} tiles, batch {args.batch}"
    )
    print(f"total {total:.1f} s   {voxels / total:,.0f} voxels/s")
    print(
        f"model time {model.seconds:.1f} s in {model.calls} forward passes;"
        f" model/total = {model.seconds / total:.3f}"
    )
    print(
        f"peak RSS {peak:.0f} MB (before the model: {baseline:.0f} MB);"
        f" input+output {io_mb:.0f} MB, 3x = {3 * io_mb:.0f} MB;"
        f" peak/(input+output) = {peak / io_mb:.2f}"
    )
    # The input was allocated before tracing began: the prediction's memory is it plus the
    # traced peak (output, padded input, blend weights, tiles).
    held = image.nbytes / 2**20 + arrays_peak
    print(
        f"prediction arrays: input {image.nbytes / 2**20:.0f} MB + traced peak {arrays_peak:.0f} MB"
        f" (numpy allocations during the call) = {held:.0f} MB;"
        f" (input + arrays)/(input+output) = {held / io_mb:.2f}"
    )


if __name__ == "__main__":
    main()
