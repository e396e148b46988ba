"""Where prediction results go, and writing them so that nothing is lost or overwritten.

The rules (checked before any tile is computed):
- results are named as the established trainer names them: ``<stem>_struct_segmentation.tiff``
  for one output pair, ``<stem>_seg_<index>.tiff`` for several, ``_T_<ttt>`` for time points;
- in folder mode the results never go into the input folder, and files that are results of
  this tool are never taken as inputs;
- two inputs never write the same result, a result never replaces an input, and an existing
  result is replaced only when asked (``overwrite``);
- every file is written atomically (a temporary file renamed at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import PredictConfig
from ..data.images import write_ome_tiff
from ..errors import UserInputError

_STEM_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".czi",
    ".nd2",
    ".lif",
    ".ome.zarr",
    ".zarr",
)
RESULT_MARKERS = ("_struct_segmentation", "_seg_", "_instances", "_probability")


class OutputError(UserInputError, ValueError):
    """Results that would overwrite an input or each other, or cannot be written."""


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in _STEM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_result_file(path: Path) -> bool:
    """A file this tool wrote as a result (never segmented again in folder mode)."""
    stem = stem_of(path)
    return any(marker in stem for marker in RESULT_MARKERS)


def output_paths(cfg: PredictConfig, source: Path, time_index: int | None = None) -> list[Path]:
    """``<stem>_struct_segmentation.tiff`` for one output pair, ``<stem>_seg_<i>.tiff`` for several."""
    stem = stem_of(source)
    if time_index is not None:
        stem = f"{stem}_T_{time_index:03d}"
    out = Path(cfg.OutputDir).expanduser()
    if cfg.output_format == "ome-zarr":  # one store holds every output pair (its channels)
        return [out / f"{stem}_struct_segmentation.ome.zarr"]
    pairs = cfg.OutputCh[::2]
    if len(pairs) == 1:
        return [out / f"{stem}_struct_segmentation.tiff"]
    return [out / f"{stem}_seg_{index}.tiff" for index in pairs]


def check_outputs(
    cfg: PredictConfig,
    sources: Sequence[Path],
    planned: dict[Path, list[Path]],
    overwrite: bool = False,
) -> None:
    """Refuse, before any work, results that collide with inputs, each other or existing files.

    ``planned`` maps each input to the result files it will write.
    """
    out_dir = Path(cfg.OutputDir).expanduser()
    if cfg.mode.is_folder and out_dir.resolve() == Path(cfg.mode.InputDir).expanduser().resolve():
        raise OutputError(
            f"OutputDir {str(out_dir)!r} is the input folder: results there would be taken as "
            "inputs next time; choose another folder"
        )
    inputs = {p.resolve() for p in sources}
    writers: dict[Path, Path] = {}
    for source, paths in planned.items():
        for path in paths:
            key = path.resolve()
            if key in inputs:
                raise OutputError(f"{path}: the result would replace an input image")
            if key in writers:
                raise OutputError(
                    f"{writers[key].name} and {source.name} would both write {path.name}; "
                    "rename one of them or segment them separately"
                )
            writers[key] = source
    existing = sorted(p for p in writers if p.exists())
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputError(
            f"{existing[0]} already exists{more}: choose another output folder, or replace "
            "earlier results with --overwrite"
        )
    from ..config import unwritable_dir

    problem = unwritable_dir(out_dir)
    if problem:
        raise OutputError(f"OutputDir: {problem}")


def write_results(
    paths: Sequence[Path], results: Sequence[np.ndarray], voxel_size=None
) -> list[Path]:
    """Write one result array per path (OME-TIFF, atomically)."""
    return [
        write_ome_tiff(path, result, voxel_size=voxel_size)
        for path, result in zip(paths, results, strict=True)
    ]


def save_prediction(
    cfg: PredictConfig,
    probability: np.ndarray,
    threshold: float,
    source: Path | None,
    image: np.ndarray | None,
    name: str,
    *,
    with_probability: bool = False,
    overwrite: bool = False,
    voxel_size=None,
) -> list[Path]:
    """Write a prediction made in the panel: labels, optionally probabilities, and the YAML.

    ``probability`` is (n_pairs, Z, Y, X). ``source`` is the image file it came from; an image
    made in napari (``source`` None) is written too, as ``<name>.ome.tif``, so the YAML
    reproduces the result with ``cellseg-trainer predict --config``.
    """
    from ..config import save_config
    from ..data.layer_sets import safe_name

    out = Path(cfg.OutputDir).expanduser()
    cfg = cfg.copy()
    cfg.Threshold = float(threshold)
    source_path = source if source is not None else out / f"{safe_name(name)}.ome.tif"
    cfg.mode.name, cfg.mode.InputFile, cfg.mode.timelapse = "file", str(source_path), False
    labels_paths = output_paths(cfg, source_path)
    extra = [out / f"{stem_of(source_path)}_predict.yaml"]
    if with_probability:
        extra += [probability_path(p) for p in labels_paths]
    planned = {source_path: labels_paths + extra}
    check_outputs(cfg, [source_path] if source is not None else [], planned, overwrite)
    written = []
    if source is None:
        data = image if image is not None else probability
        written.append(write_ome_tiff(source_path, data, axes="CZYX", voxel_size=voxel_size))
    for path, prob in zip(labels_paths, probability, strict=True):
        labels = np.where(prob > threshold, np.uint8(255), np.uint8(0))
        written.append(write_ome_tiff(path, labels, voxel_size=voxel_size))
        if with_probability:
            written.append(write_ome_tiff(probability_path(path), prob, voxel_size=voxel_size))
    written.append(save_config(cfg, extra[0]))
    return written


def instance_paths(result_paths: Sequence[Path]) -> list[Path]:
    """``<stem>_instances.tiff`` beside each ``<stem>_struct_segmentation.tiff`` (or ``_seg_<i>``)."""
    return [
        p.with_name(
            p.name.replace("_struct_segmentation", "_instances").replace("_seg_", "_instances_")
        )
        for p in result_paths
    ]


def probability_path(labels_path: Path) -> Path:
    return labels_path.with_name(labels_path.name.replace(".tiff", "_probability.tiff"))
