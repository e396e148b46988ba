"""What a prediction reads and what each input will write, checked before any tile is computed.

An input is an image file (TIFF, OME-TIFF, CZI, ...), a zarr store (an OME-Zarr image, a plain
zarr array) or a folder holding several of them. Zarr stores are folders on disk, yet each is
one image: a folder is a folder of images only when it is no zarr store itself.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import PredictConfig
from ..data.images import ImageReadError, read_microscopy
from ..data.zarr_images import is_zarr
from ..devices import available_ram
from .outputs import instance_paths, is_result_file, output_paths

# The whole-volume prediction holds about three float32 copies of its input and its output
# (normalised input, sums, weights): the estimate of :func:`.run.choose_tile_for` too.
COPIES = 3


def endings(data_type: str) -> list[str]:
    """The file endings of ``mode.DataType``, several separated by commas."""
    return [e.strip().lower() for e in data_type.split(",") if e.strip()]


def is_input(path: Path, wanted: list[str]) -> bool:
    """An image of one of the ``wanted`` endings: a file, or a zarr store (a folder)."""
    name = path.name.lower()
    if not any(name.endswith(e) for e in wanted) or is_result_file(path):
        return False
    return is_zarr(path) if path.is_dir() else path.is_file()


def input_files(cfg: PredictConfig) -> list[Path]:
    """The images a config asks to segment (file mode: one; folder mode: all of DataType).

    In folder mode, results of this tool (``*_struct_segmentation.tiff``, ``.ome.zarr``, ...)
    are left out: a second run never segments the first run's results.
    """
    if not cfg.mode.is_folder:
        return [Path(cfg.mode.InputFile).expanduser()]
    folder = Path(cfg.mode.InputDir).expanduser()
    if not folder.is_dir():
        raise ImageReadError(f"mode.InputDir: folder {str(folder)!r} does not exist")
    wanted = endings(cfg.mode.DataType)
    files = sorted(p for p in folder.iterdir() if is_input(p, wanted))
    if not files:
        raise ImageReadError(f"mode.InputDir: no {cfg.mode.DataType} images in {str(folder)!r}")
    return files


def folder_data_type(folder: Path) -> str:
    """The DataType that takes every image of ``folder``: its TIFF ending and zarr stores."""
    found = {p.suffix.lower() for p in folder.iterdir() if not p.is_dir()}
    tiff = ".tif" if ".tif" in found and ".tiff" not in found else ".tiff"
    stores = any(is_zarr(p) and p.name.lower().endswith(".zarr") for p in folder.iterdir())
    if not stores:
        return tiff
    return f"{tiff},.zarr" if found & {".tif", ".tiff"} else ".zarr"


def planned_outputs(cfg: PredictConfig, source: Path, instances: bool = False) -> list[Path]:
    """The files one input will write (all time points of a time-lapse), after checking that
    it can be read as asked: its time points, its channels, and, for TIFF results, its size."""
    if cfg.level and not is_zarr(source):
        raise ImageReadError(
            f"{source}: level {cfg.level}: only OME-Zarr inputs have levels; this image has one"
        )
    header = read_microscopy(source, header_only=True, level=cfg.level)
    count, channels, *zyx = header.shape
    if not cfg.mode.timelapse and count > 1:
        raise ImageReadError(
            f"{source}: has {count} time points; set mode.timelapse: true to segment each"
        )
    bad = [c for c in cfg.InputCh if not -channels <= c < channels]
    if bad:
        raise ImageReadError(
            f"{source}: InputCh {cfg.InputCh} asks for channel {bad[0]}, but the image has "
            f"{channels}"
        )
    if cfg.output_format != "ome-zarr":
        check_fits_in_memory(cfg, source, tuple(zyx))
    times = [None] if not cfg.mode.timelapse else list(range(count))
    paths = [p for t in times for p in output_paths(cfg, source, t)]
    return paths + (instance_paths(paths) if instances else [])


def memory_needed(cfg: PredictConfig, shape: tuple[int, ...]) -> int:
    """Bytes a whole-volume prediction of a (Z, Y, X) volume holds, about."""
    voxels = math.prod(shape) * math.prod(cfg.ResizeRatio)
    return int(COPIES * 4 * voxels * (cfg.nchannel + len(cfg.OutputCh) // 2))


def check_fits_in_memory(cfg: PredictConfig, source: Path, shape: tuple[int, ...]) -> None:
    """A TIFF result is made in memory: refuse, with the sizes, a volume that cannot fit."""
    need, have = memory_needed(cfg, shape), available_ram()
    if need > have:
        voxels = " x ".join(map(str, shape))
        raise ImageReadError(
            f"{source}: {voxels} voxels need about {_size(need)} in memory for a TIFF result, "
            f"{_size(have)} are available; use --format ome-zarr (block by block, bounded "
            "memory)"
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
