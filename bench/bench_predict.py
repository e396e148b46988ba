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
                                  [--volumes 256x2048x2048 ...] [--inputs ome-zarr tiff]

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
uint16 volumes, the largest several times the memory the process may use (its address space is
capped with ``RLIMIT_AS`` at ``--memory-gb`` before torch loads: exceeding it fails the run),
with the stand-in network, through the command line's path (``run_prediction``, OME-Zarr
output). Each volume is given as an OME-Zarr input (chunks of 64 x 256 x 256) and as an OME-TIFF
(one strip per plane, read lazily through tifffile's zarr store): for each, in a fresh process,
the seconds and the peak RSS. Memory that stays flat as the volume grows is what this shows;
``--volumes 256x2048x2048 --inputs ome-zarr`` runs one.
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
    parser.add_argument(
        "--volumes",
        nargs="+",
        default=["x".join(map(str, v)) for v in ZARR_SHAPES],
        help="with --zarr: the volumes, as ZxYxX",
    )
    parser.add_argument("--inputs", nargs="+", choices=INPUT_KINDS, default=list(INPUT_KINDS))
    parser.add_argument("--zarr-one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--precisions", nargs="+", help="the automatic tile in each (see above)")
    parser.add_argument("--emulated", action="store_true", help="bf16 without native bf16")
    args = parser.parse_args()
    if args.zarr_one:
        zarr_one(Path(args.zarr_one[0]), Path(args.zarr_one[1]), float(args.zarr_one[2]))
        return
    if args.zarr:
        shapes = [tuple(int(n) for n in v.split("x")) for v in args.volumes]
        zarr_bench(args.folder, args.memory_gb, shapes, args.inputs)
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
ZARR_VOXEL = (1.0, 0.5, 0.5)
INPUT_KINDS = ("ome-zarr", "tiff")


def input_slabs(shape: tuple[int, int, int], depth: int = 16):
    """The benchmark volume, uint16, ``depth`` planes at a time (never whole in memory)."""
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], depth):
        yield rng.integers(0, 4000, (min(depth, shape[0] - z), *shape[1:]), dtype=np.uint16)


def write_input_zarr(path: Path, shape: tuple[int, int, int]) -> None:
    """A uint16 OME-Zarr (C=1) of ``shape``, written slab by slab."""
    import zarr
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import write_multiscales_metadata

    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("0", shape=(1, *shape), chunks=(1, 64, 256, 256), dtype=np.uint16)
    z = 0
    for slab in input_slabs(shape):
        array[0, z : z + len(slab)] = slab
        z += len(slab)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    transform = [{"type": "scale", "scale": [1.0, *ZARR_VOXEL]}]
    write_multiscales_metadata(
        group,
        [{"path": "0", "coordinateTransformations": transform}],
        fmt=CurrentFormat(),
        axes=axes,
    )


def write_input_tiff(path: Path, shape: tuple[int, int, int]) -> None:
    """The same volume as an OME-TIFF as microscopes and Fiji write it (one strip per plane)."""
    import tifffile

    planes = (plane for slab in input_slabs(shape) for plane in slab)
    meta = {
        "axes": "ZYX",
        **dict(zip(("PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX"), ZARR_VOXEL, strict=True)),
    }
    tifffile.imwrite(path, planes, shape=shape, dtype=np.uint16, ome=True, metadata=meta)


def zarr_one(source: Path, output: Path, memory_gb: float) -> None:
    """One out-of-core prediction under a memory cap (called in a fresh process), through the
    command line's own path (:func:`run_prediction`) with the stand-in network."""
    cap = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from napari_cellseg_trainer.inference.run import run_prediction

    cfg = PredictConfig(model_path="-", OutputDir=str(output), Normalization=10, Threshold=-1.0)
    cfg.mode.InputFile, cfg.output_format, cfg.device = str(source), "ome-zarr", "cpu"
    cfg.size_in, cfg.size_out = list(ZARR_TILE), list(geometry.size_out("unet_xy", ZARR_TILE))
    started = time.perf_counter()
    run_prediction(cfg, model=StandIn(cfg.size_in, cfg.size_out))
    print(f"{time.perf_counter() - started:.1f} {peak_rss_mb():.0f}")


def zarr_bench(folder: Path, memory_gb: float, shapes, kinds) -> None:
    print(
        f"out-of-core prediction, stand-in network, tile {list(ZARR_TILE)}, address space capped "
        f"at {memory_gb:.2f} GiB, {os.cpu_count()} CPU cores (shared with other jobs)"
    )
    print(
        f"{'volume (z, y, x)':>22} {'input':>9} {'input+output':>13} {'seconds':>8} {'peak RSS':>9}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    # glibc reserves 64 MiB of address space per thread's malloc arena: two arenas keep the cap
    # about memory used, not about how many threads zarr's reader starts
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    for shape in shapes:
        for kind in kinds:
            name = f"in_{'x'.join(map(str, shape))}"
            source = folder / (f"{name}.ome.zarr" if kind == "ome-zarr" else f"{name}.ome.tif")
            output = folder / "out"
            (write_input_zarr if kind == "ome-zarr" else write_input_tiff)(source, shape)
            subprocess.run(["rm", "-rf", str(output)], check=True)
            done = subprocess.run(
                [sys.executable, __file__, "--zarr-one", str(source), str(output), str(memory_gb)],
                capture_output=True,
                text=True,
                env=env,
            )
            subprocess.run(["rm", "-rf", str(source), str(output)], check=True)
            if done.returncode != 0:
                print(f"{shape} {kind}: failed under the cap:\n{done.stderr[-2000:]}")
                continue
            seconds, rss = done.stdout.split()[-2:]
            io_gb = int(np.prod(shape)) * (2 + 4) / 2**30  # uint16 in, float32 out
            print(
                f"{str(shape):>22} {kind:>9} {io_gb:>10.2f} GiB {float(seconds):>8.1f} "
                f"{float(rss):>6.0f} MB",
                flush=True,
            )


def r_note(r: dict) -> str:
    return r["note"] or "?"


if __name__ == "__main__":
    main()
