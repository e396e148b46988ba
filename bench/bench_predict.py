"""Prediction speed: the training tile against the automatic one, on the same model and volume.

A checkpoint trained with the CPU preset's patch (``[32, 100, 100] -> [4, 12, 12]``) predicts a
volume either with that tile (what a user got before ``size_in: auto``) or with the automatic
tile (:func:`napari_cellseg_trainer.inference.tile_choice.choose_tile`). Both run here, in one
process, through the same code (``inference.run.segment``); the model is wrapped in a timer, so
model/total is measured in the same run. The training tile needs thousands of passes: it runs for
``--seconds`` and its total is extrapolated from its rate (every tile is the same work), unless
``--full``. The preview of the 5 planes around the middle (what the panel's Preview computes) is
timed too.

    python bench/bench_predict.py [--checkpoint CK] [--shape 100 100 100] [--size-in 32 100 100]
                                  [--seconds 120] [--full] [--device cpu] [--stand-in]
    python bench/bench_predict.py --precisions fp32 bf16 [--checkpoint CK] [--emulated]
    python bench/bench_predict.py --zarr [--memory-gb 3] [--folder /tmp/bench_zarr]

Without ``--checkpoint`` a fresh unet_xy is used (its weights do not change the time). The volume
is the real nuclei crop in ../shared/data when it is there and ``--shape`` is 100^3, else random.
``--stand-in`` replaces the U-Net by a no-cost crop with its geometry (the tiling machinery
alone). The prediction's own arrays (numpy allocations, traced) are compared with
3 x (input + output).

``--precisions fp32 bf16``: the automatic tile in each precision (``PredictConfig.precision``) on
the same model and volume: the time and the largest difference of any probability from the
first precision's. ``--shape`` smaller than 100^3 crops the real volume's centre. On a CPU
without native bfloat16, bf16 is skipped unless ``--emulated`` (tens of times slower there).

``--zarr``: out-of-core prediction (:mod:`napari_cellseg_trainer.inference.chunked`) of three
uint16 OME-Zarr volumes, the largest several times the memory the process may use (its address
space is capped with ``RLIMIT_AS`` at ``--memory-gb`` before torch loads: exceeding it fails the
run), with the stand-in network: for each size, in a fresh process, the seconds and the peak RSS.
Memory that stays flat as the volume grows is what this shows.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from napari_cellseg_trainer.config import PredictConfig
from napari_cellseg_trainer.devices import describe_device, native_cpu_bf16, select_device
from napari_cellseg_trainer.inference.predict import PredictionCancelled
from napari_cellseg_trainer.inference.run import Callbacks, plane_window, segment
from napari_cellseg_trainer.inference.tiling import TilePlan
from napari_cellseg_trainer.model_source import model_from_checkpoint
from napari_cellseg_trainer.models import build_model, geometry

REAL = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "nuclei_1136"
    / "1136_mini_raw.ome.tif"
)


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

    def __getattr__(self, name: str):
        # the wrapped network's geometry (model_name, yx_grid, zoom_ratio, nchannel)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

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


def volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    if shape == (100, 100, 100) and REAL.exists():
        import tifffile

        return tifffile.imread(REAL).astype(np.float32)[None], f"real nuclei crop ({REAL.name})"
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32), "random"


def config(size_in) -> PredictConfig:
    cfg = PredictConfig(model_path="-", OutputDir="-", Normalization=0, Threshold=-1.0)
    cfg.mode.InputFile = "-"
    if size_in == "auto":
        cfg.size_in = cfg.size_out = "auto"
    else:
        cfg.size_in, cfg.size_out = list(size_in), list(geometry.size_out("unet_xy", size_in))
    return cfg


def run(model, image, cfg, device, seconds=None, planes=None, keep=False):
    """Segment with ``cfg``; stop after ``seconds`` (the rate then gives the total).

    ``keep``: also return the probabilities (a pair: the figures, the result)."""
    notes: list[str] = []
    seen = [0.0, 1]
    started = time.perf_counter()
    model.wall, model.events, model.calls = 0.0, [], 0

    def progress(done: float, total: int) -> None:
        seen[:] = [done, total]
        print(f"\r  {done:8.2f}/{total} tiles", end="", file=sys.stderr, flush=True)

    def cancel() -> bool:
        return seconds is not None and time.perf_counter() - started > seconds

    tracemalloc.start()
    try:
        result = segment(
            model, image, cfg, device, Callbacks(progress, cancel, notes.append), planes
        )
        finished = True
    except PredictionCancelled:
        finished = False
    arrays = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    wall = time.perf_counter() - started
    print(file=sys.stderr)
    done, total = seen
    estimate = wall if finished else wall / max(done, 1e-9) * total
    figures = dict(
        finished=finished,
        wall=wall,
        estimate=estimate,
        model=model.seconds,
        tiles=total,
        done=done,
        note="; ".join(notes),
        arrays=arrays,
    )
    return (figures, result[0]) if keep else figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 100, 100])
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 100, 100])
    parser.add_argument("--seconds", type=float, default=120.0, help="for the training tile")
    parser.add_argument("--full", action="store_true", help="run the training tile to the end")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stand-in", action="store_true", help="a no-cost network (see above)")
    parser.add_argument("--zarr", action="store_true", help="out-of-core, three sizes (see above)")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="the cap with --zarr")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_zarr"))
    parser.add_argument("--zarr-one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--precisions", nargs="+", help="the automatic tile in each (see above)")
    parser.add_argument("--emulated", action="store_true", help="bf16 without native bf16")
    args = parser.parse_args()
    if args.zarr_one:
        zarr_one(Path(args.zarr_one[0]), Path(args.zarr_one[1]), float(args.zarr_one[2]))
        return
    if args.zarr:
        zarr_bench(args.folder, args.memory_gb)
        return

    device = select_device(args.device)
    image, what = volume(tuple(args.shape))
    if args.stand_in:
        net = StandIn(args.size_in, geometry.size_out("unet_xy", args.size_in))
    elif args.checkpoint:
        net, _ = model_from_checkpoint(args.checkpoint)
    else:
        net = build_model("unet_xy").eval()
    model = TimedModel(net.to(device), device)
    print(
        f"torch {torch.__version__} on {describe_device(device)}, {torch.get_num_threads()} threads"
    )
    if args.precisions:
        compare_precisions(model, args, device)
        return
    print(f"volume {image.shape[1:]} ({what}), blend tiling, overlap 0.25")
    io_mb = (image.nbytes * 2) / 2**20

    # imports and caches (scipy, the layer shapes) happen once, outside the traced runs
    run(model, np.zeros((1, 2, 8, 8), np.float32), config("auto"), device)
    training = config(args.size_in)
    plan = TilePlan.make(image.shape[1:], training.size_in, training.size_out, grid=8)
    trained = run(model, image, training, device, None if args.full else args.seconds)
    auto = run(model, image, config("auto"), device)
    depth = image.shape[1]
    window = plane_window(depth, depth // 2, config("auto"))
    preview = run(model, image, config("auto"), device, planes=window)
    for name, r, extra in (
        (f"training tile {args.size_in}", trained, f"{len(plan.corners)} tiles"),
        ("automatic tile", auto, r_note(auto)),
        (f"preview of planes {window[0]}-{window[1] - 1} (auto)", preview, r_note(preview)),
    ):
        if r["finished"]:
            time_text = f"{r['wall']:.1f} s"
        else:
            time_text = (
                f"{r['estimate']:.0f} s extrapolated ({r['done']:.1f} of {r['tiles']} tiles in "
                f"{r['wall']:.0f} s)"
            )
        model_share = r["model"] / r["wall"]
        print(f"{name}: {time_text}; model/total {model_share:.3f}; {extra}")
        print(
            f"    prediction arrays (traced numpy peak) {r['arrays'] / 2**20:.0f} MB; "
            f"3 x (input + output) = {3 * io_mb:.0f} MB"
        )
    print(f"speed-up of the automatic tile: {trained['estimate'] / auto['wall']:.0f}x")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def compare_precisions(model, args, device: torch.device) -> None:
    """The automatic tile in each of ``args.precisions``: time, and probabilities against the
    first's."""
    shape = tuple(args.shape)
    image, what = volume((100, 100, 100))
    if shape != image.shape[1:] and what != "random":
        starts = [(n - s) // 2 for n, s in zip(image.shape[1:], shape, strict=True)]
        image = image[(slice(None), *(slice(a, a + s) for a, s in zip(starts, shape, strict=True)))]
        what += f", centre {list(shape)}"
    elif shape != image.shape[1:]:
        image, what = volume(shape)
    native = native_cpu_bf16()
    print(f"volume {image.shape[1:]} ({what}); native bfloat16 on this CPU: {native}")
    run(model, np.zeros((1, 2, 8, 8), np.float32), config("auto"), device)  # imports, caches
    first = None
    for precision in args.precisions:
        if precision == "bf16" and device.type == "cpu" and not (native or args.emulated):
            print(f"{precision}: skipped: this CPU has no native bfloat16 (--emulated runs it)")
            continue
        cfg = config("auto")
        cfg.precision = precision
        r, prob = run(model, image, cfg, device, keep=True)
        first = prob if first is None else first
        difference = float(np.abs(prob - first).max())
        print(
            f"{precision}: {r['wall']:.1f} s, model/total {r['model'] / r['wall']:.3f}; "
            f"largest probability difference from {args.precisions[0]}: {difference:.4f}; "
            f"{r_note(r)}",
            flush=True,
        )


ZARR_SHAPES = ((32, 1024, 1024), (128, 1024, 2048), (256, 2048, 2048))
ZARR_TILE = (64, 252, 252)  # a tile the automatic choice takes on a CPU for unet_xy


def write_input_zarr(path: Path, shape: tuple[int, int, int]) -> None:
    """A uint16 OME-Zarr (C=1) of ``shape``, written chunk by chunk (never whole in memory)."""
    import zarr
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    chunk = (1, 64, 256, 256)
    array = group.create_array("0", shape=(1, *shape), chunks=chunk, dtype=np.uint16)
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunk[1]):
        for y in range(0, shape[1], 1024):
            for x in range(0, shape[2], 1024):
                block = array[0, z : z + 64, y : y + 1024, x : x + 1024]
                array[0, z : z + 64, y : y + 1024, x : x + 1024] = rng.integers(
                    0, 4000, block.shape, dtype=np.uint16
                )
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    transform = [{"type": "scale", "scale": [1.0, 1.0, 0.5, 0.5]}]
    write_multiscales_metadata(
        group,
        [{"path": "0", "coordinateTransformations": transform}],
        fmt=CurrentFormat(),
        axes=axes,
    )


def zarr_one(source: Path, output: Path, memory_gb: float) -> None:
    """One out-of-core prediction under a memory cap (called in a fresh process)."""
    cap = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from napari_cellseg_trainer.data.images import open_lazy
    from napari_cellseg_trainer.inference.chunked import predict_to_zarr

    image, voxel = open_lazy(source)
    cfg = PredictConfig(model_path="-", OutputDir="-", Normalization=10, Threshold=-1.0)
    cfg.mode.InputFile = "-"
    size_out = geometry.size_out("unet_xy", ZARR_TILE)
    started = time.perf_counter()
    with image:
        predict_to_zarr(
            StandIn(ZARR_TILE, size_out), image, output, cfg, ZARR_TILE, size_out, voxel_size=voxel
        )
    print(f"{time.perf_counter() - started:.1f} {peak_rss_mb():.0f}")


def zarr_bench(folder: Path, memory_gb: float) -> None:
    print(
        f"out-of-core prediction, stand-in network, tile {list(ZARR_TILE)}, address space capped "
        f"at {memory_gb:.2f} GiB"
    )
    print(f"{'volume (z, y, x)':>22} {'input+output':>13} {'seconds':>8} {'peak RSS':>9}")
    folder.mkdir(parents=True, exist_ok=True)
    # glibc reserves 64 MiB of address space per thread's malloc arena: two arenas keep the cap
    # about memory used, not about how many threads zarr's reader starts
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    for shape in ZARR_SHAPES:
        source, output = folder / f"in_{'x'.join(map(str, shape))}.ome.zarr", folder / "out.zarr"
        write_input_zarr(source, shape)
        subprocess.run(["rm", "-rf", str(output)], check=True)
        done = subprocess.run(
            [sys.executable, __file__, "--zarr-one", str(source), str(output), str(memory_gb)],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            print(f"{shape}: failed under the cap:\n{done.stderr[-2000:]}")
            continue
        seconds, rss = done.stdout.split()[-2:]
        voxels = int(np.prod(shape))
        io_gb = voxels * (2 + 4) / 2**30  # uint16 in, float32 out
        print(f"{str(shape):>22} {io_gb:>10.2f} GiB {float(seconds):>8.1f} {float(rss):>6.0f} MB")
        subprocess.run(["rm", "-rf", str(source), str(output)], check=True)


def r_note(r: dict) -> str:
    return r["note"] or "?"


if __name__ == "__main__":
    main()
