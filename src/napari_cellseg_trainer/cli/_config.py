"""``cellseg-trainer config template|check``."""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..models import geometry


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="write a config template or check a config file")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    t = csub.add_parser("template", help="print a training config to start from (YAML)")
    t.add_argument("--model", choices=geometry.MODEL_NAMES, default="unet_xy")
    t.add_argument("--zoom-ratio", type=int, default=3)
    t.set_defaults(run=run_template)
    c = csub.add_parser("check", help="check a training config; list every problem")
    c.add_argument("file")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--no-paths", action="store_true", help="do not check that folders exist")
    c.set_defaults(run=run_check)


def run_template(args: argparse.Namespace) -> int:
    sys.stdout.write(config.dump_config(config.template(args.model, args.zoom_ratio)))
    return 0


def run_check(args: argparse.Namespace) -> int:
    cfg = config.load_config(args.file, args.overrides)
    if not args.no_paths:
        problems = config.check_paths(cfg)
        if problems:
            raise config.ConfigError(problems, args.file)
    print(
        f"{args.file}: OK ({cfg.model.name}, size_in {cfg.size_in} -> size_out {cfg.size_out}, "
        f"batch_size {cfg.loader.batch_size}, {cfg.epochs} epochs)"
    )
    return 0
