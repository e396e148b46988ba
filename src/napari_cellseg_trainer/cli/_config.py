"""``cellseg-trainer config template|check``."""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..models import geometry
from ._train import run_checks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="write a config template or check a config file")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    t = csub.add_parser("template", help="print a training config to start from (YAML)")
    t.add_argument("--model", choices=geometry.MODEL_NAMES, default="unet_xy")
    t.add_argument("--zoom-ratio", type=int, default=3)
    t.add_argument(
        "--preset",
        choices=["established", "quick", "sample"],
        default="established",
        help="established: the seed's 32 GB GPU sizes; quick: chosen for this machine (a few "
        "seconds' probe of real steps) for a good model within --minutes; sample: the small "
        "CPU demo on the sample data",
    )
    t.add_argument("--minutes", type=float, default=10.0, help="the quick preset's time budget")
    t.add_argument("--data", help="the training folder (the quick preset fits its patch to it)")
    t.add_argument("--device", default="auto", help="the quick preset's device")
    t.add_argument(
        "--start",
        default="starter",
        metavar="starter|scratch|CK",
        help="where the quick preset's training starts: the starter model that fits --model "
        "(default), random weights, or a checkpoint to fine-tune",
    )
    t.set_defaults(run=run_template)
    c = csub.add_parser("check", help="check a training config; list every problem")
    c.add_argument("file")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--no-paths", action="store_true", help="do not check that folders exist")
    c.set_defaults(run=run_check)


def run_template(args: argparse.Namespace) -> int:
    if args.start not in ("starter", "scratch"):
        from ..model_source import open_model

        open_model(args.start)  # a missing or damaged checkpoint: one line, nothing printed
    if args.preset == "quick":
        from ..data.folder import image_shapes
        from ..training.quick import quick_preset

        shapes = image_shapes(args.data) if args.data else []
        smallest = min(shapes, key=lambda s: s[0] * s[1] * s[2]) if shapes else None
        cfg, line = quick_preset(
            args.data or "./train_data",
            "./checkpoints",
            model=args.model,
            zoom_ratio=args.zoom_ratio,
            minutes=args.minutes,
            device=args.device,
            image_shape=smallest,
            start=args.start,
        )
        print(line, file=sys.stderr)
    elif args.preset == "sample":
        cfg = config.demo_config(args.data or "./sample_data", "./checkpoints")
    else:
        cfg = config.template(args.model, args.zoom_ratio)
    sys.stdout.write(config.dump_config(cfg))
    return 0


def run_check(args: argparse.Namespace) -> int:
    checks = None if args.no_paths else run_checks
    cfg = config.load_config(args.file, args.overrides, checks=checks)
    print(
        f"{args.file}: OK ({cfg.model.name}, size_in {cfg.size_in} -> size_out {cfg.size_out}, "
        f"batch_size {cfg.loader.batch_size}, {cfg.epochs} epochs)"
    )
    return 0
