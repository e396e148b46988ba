"""``cellseg-trainer predict``: segment files or folders with a trained model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from .. import checkpoint as ckpt
from .. import config
from ..data.zarr_images import is_zarr
from ..errors import UserInputError
from ..inference.inputs import folder_data_type
from ..inference.run import defaults_from_checkpoint, run_prediction
from ..model_source import open_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a trained model",
        description=(
            "Either --config predict.yaml (the established prediction config), or the short form "
            "--checkpoint CK --input IMG that takes the model settings from the checkpoint."
        ),
    )
    p.add_argument("--config", help="prediction config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--checkpoint", help="checkpoint file (short form)")
    p.add_argument(
        "--input",
        help=(
            "image (TIFF, OME-TIFF, OME-Zarr, zarr array, CZI/ND2/LIF) or a folder of them "
            "(short form)"
        ),
    )
    p.add_argument("--output", help="output folder (short form; default: beside the input)")
    p.add_argument("--threshold", type=float, help="> 0: binary output at this threshold")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--overwrite", action="store_true", help="replace results of an earlier run")
    p.add_argument(
        "--format",
        choices=["tiff", "ome-zarr"],
        help="ome-zarr: write block by block (volumes larger than memory; resumable)",
    )
    p.add_argument(
        "--channel",
        help=(
            "the input channel, by index or by name (from the file's metadata); needed when "
            "the image has more channels than the model takes"
        ),
    )
    p.add_argument(
        "--level",
        type=int,
        help="OME-Zarr input: the resolution level to segment (default 0: the full resolution)",
    )
    p.add_argument(
        "--instances",
        nargs="?",
        const="default",
        choices=["default", "watershed", "components"],
        help=(
            "also write instance labels (<name>_instances.tiff; with --format ome-zarr into the "
            "store's labels/instances, block by block, components only): a seeded watershed "
            "that splits touching objects, or connected components; default: the model's own "
            "(unet_xy_zoom: watershed, unet_xy: components)"
        ),
    )
    p.set_defaults(run=run_predict)


def short_form_config(args: argparse.Namespace, cfg: config.PredictConfig) -> config.PredictConfig:
    """A prediction config from --checkpoint/--input/--output/--threshold, given the
    checkpoint's defaults (its model, its normalisation, size_in auto).

    A folder's results go into a folder beside it (``<folder>_segmentation``), never into it.
    """
    source = Path(args.input).expanduser()
    if source.is_dir() and not is_zarr(source):  # a zarr store is one image, not a folder
        cfg.mode.name, cfg.mode.InputDir = "folder", str(source)
        cfg.mode.DataType = folder_data_type(source)
        default_out = source.with_name(f"{source.name}_segmentation")
    else:
        cfg.mode.name, cfg.mode.InputFile = "file", str(source)
        default_out = source.parent
    cfg.OutputDir = args.output or str(default_out)
    return cfg


def run_predict(args: argparse.Namespace) -> int:
    model, defaults = None, None
    overrides = list(args.overrides)  # --threshold and --device are checked like the config
    if args.threshold is not None:
        overrides.append(f"Threshold={args.threshold!r}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.format:
        overrides.append(f"output_format={args.format}")
    if args.channel is not None:
        overrides.append(f"InputCh=[{channel_index(args.channel, args.input)}]")
    if args.level is not None:
        overrides.append(f"level={args.level}")
    if args.config:
        cfg = config.load_predict_config(args.config, overrides)
    elif args.checkpoint and args.input:
        loaded = open_model(args.checkpoint)  # the one read
        defaults = defaults_from_checkpoint(loaded)
        data = short_form_config(args, defaults.config).to_dict()
        data = config.apply_overrides(data, overrides) if overrides else data
        cfg = config.from_mapping(config.PredictConfig, data, source="predict")
        if any(
            config.get(cfg, k) != config.get(defaults.config, k) for k in ckpt.ARCHITECTURE_KEYS
        ):
            model = None  # --set changed the model: load the weights into that one (or refuse)
        else:
            model = ckpt.model_for(loaded, cfg)
        if cfg.Normalization == defaults.config.Normalization:
            print(defaults.note, file=sys.stderr)
        else:
            print(
                f"warning: Normalization {cfg.Normalization!r} differs from the training's "
                f"({defaults.config.Normalization}); the model may see unfamiliar intensities",
                file=sys.stderr,
            )
        if not any(o.startswith("InputCh") for o in overrides):
            _check_channel_chosen(cfg)
        if not any(o.startswith("ResizeRatio") for o in overrides):
            _match_voxel_size(cfg, defaults)
        if defaults.threshold is not None and args.threshold is None:
            print(
                f"the model's best threshold on its held-out data is {defaults.threshold:.2f}: "
                f"--threshold {defaults.threshold:.2f} writes a mask",
                file=sys.stderr,
            )
    else:
        raise config.ConfigError(
            [config.Problem("", "give --config FILE, or --checkpoint CK and --input IMG")]
        )
    if args.threshold is not None:
        cfg.Threshold = args.threshold
    if args.device:
        cfg.device = args.device
    progress = TileProgress()
    instances = _instance_params(args, cfg, defaults)
    written = run_prediction(
        cfg,
        progress=progress,
        model=model,
        overwrite=args.overwrite,
        notes=progress.note,
        instances=instances,
    )
    for path in written:
        print(path)
    return 0


def _match_voxel_size(cfg: config.PredictConfig, defaults) -> None:
    """ResizeRatio that brings a file of another voxel size to the model's (short form, file).

    A block-by-block prediction cannot resize: it is refused, naming the OME-Zarr level whose
    voxel size is nearest the model's when there is one.
    """
    from ..data.images import read_microscopy
    from ..inference.run import resize_for

    if cfg.mode.is_folder or defaults.voxel_size is None:
        return
    try:
        voxel = read_microscopy(cfg.mode.InputFile, header_only=True, level=cfg.level).voxel_size
    except UserInputError:  # reported, naming the file, when its pixels are read
        return
    ratio = resize_for(voxel, defaults.voxel_size)
    if ratio is None:
        return
    model = list(defaults.voxel_size)
    if cfg.output_format == "ome-zarr":
        raise config.ConfigError(
            [
                config.Problem(
                    "--input",
                    f"{Path(cfg.mode.InputFile).name} has voxel size {list(voxel)} um, the "
                    f"model was trained at {model} um, and a block-by-block prediction cannot "
                    "resize;"
                    f"{_nearer_level(cfg, defaults.voxel_size)} or --set ResizeRatio=[1,1,1] "
                    "predicts at the image's own voxel size",
                )
            ]
        )
    cfg.ResizeRatio = ratio
    print(
        f"voxel size differs from the training's {model} um: resizing "
        f"by {ratio} (z, y, x) for the model, results at the file's size; "
        "--set ResizeRatio=[1,1,1] turns this off",
        file=sys.stderr,
    )


def _nearer_level(cfg: config.PredictConfig, model_voxel) -> str:
    """' --level N (its voxel size)' for the OME-Zarr level whose voxel size is the model's."""
    from ..data.zarr_images import open_zarr
    from ..inference.run import resize_for

    if not is_zarr(cfg.mode.InputFile):
        return ""
    level = cfg.level + 1
    while True:
        try:
            _, voxel = open_zarr(cfg.mode.InputFile, level)
        except UserInputError:  # no more levels
            return ""
        if voxel is not None and resize_for(voxel, model_voxel) is None:
            return f" --level {level} ({list(voxel)} um) matches it,"
        level += 1


def _check_channel_chosen(cfg: config.PredictConfig) -> None:
    """An image with more channels than the model takes needs --channel: guessing the first
    could segment the wrong stain without a word."""
    from ..data.images import channel_names, read_microscopy
    from ..inference.inputs import input_files

    for source in input_files(cfg):
        channels = read_microscopy(source, header_only=True, level=cfg.level).shape[1]
        if channels > cfg.nchannel:
            names = [n for n in channel_names(source) if n]
            known = f" ({', '.join(names)})" if names else ""
            raise config.ConfigError(
                [
                    config.Problem(
                        "--channel",
                        f"{source.name} has {channels} channels{known} and the model takes "
                        f"{cfg.nchannel}: choose one with --channel INDEX or NAME",
                    )
                ]
            )


def _instance_params(args: argparse.Namespace, cfg: config.PredictConfig, defaults):
    """The instance recipe asked for with --instances, or None."""
    if args.instances is None:
        return None
    from dataclasses import replace

    from ..evaluation.instances import default_params

    params = default_params(cfg.model.name)
    if args.instances != "default":
        params = replace(params, method=args.instances)
    if cfg.Threshold > 0:
        threshold = cfg.Threshold
    elif defaults is not None and defaults.threshold is not None:
        threshold = defaults.threshold
    else:
        threshold = params.threshold
    params = replace(params, threshold=float(threshold))
    print(
        f"instances: {params.method} at threshold {params.threshold:.2f}, objects of "
        f"{params.min_size}+ voxels",
        file=sys.stderr,
    )
    return params


class TileProgress:
    """One tqdm bar per image (or time point), fed with (label, tiles done, tiles in all).

    Tiles done may be fractions (a pass reports its layers), so the bar and its ETA move
    during a pass of a big tile too.
    """

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def __call__(self, label: str, done: float, total: int) -> None:
        bar = self.bars.get(label)
        if bar is None:
            bar = self.bars[label] = tqdm(
                total=total, desc=label, unit="tile", file=sys.stderr, bar_format=_BAR
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def note(self, label: str, line: str) -> None:
        tqdm.write(f"{label}: {line}", file=sys.stderr)


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total} tiles [{elapsed}<{remaining}]"


def channel_index(channel: str, source: str | None) -> int:
    """A channel given by index (``2``) or by name (``DAPI``, from the file's metadata)."""
    if channel.lstrip("-").isdigit():
        return int(channel)
    from ..data.images import channel_names

    names = channel_names(source) if source else []
    if channel in names:
        return names.index(channel)
    known = ", ".join(names) if names else "none recorded in the file"
    raise config.ConfigError(
        [config.Problem("--channel", f"{channel!r} is not a channel name ({known})")]
    )
