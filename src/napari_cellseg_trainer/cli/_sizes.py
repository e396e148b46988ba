"""``cellseg-trainer sizes``: size_out for a size_in, or the nearest valid sizes."""

from __future__ import annotations

import argparse

from ..models import geometry


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sizes",
        help="print size_out for a model and size_in",
        description="Print size_out (z y x) for a size_in; an invalid size_in exits 2 naming the nearest valid ones.",
    )
    p.add_argument("--model", choices=geometry.MODEL_NAMES, default="unet_xy")
    p.add_argument("--zoom-ratio", type=int, default=3, help="only for unet_xy_zoom")
    p.add_argument("--size-in", type=int, nargs=3, required=True, metavar=("Z", "Y", "X"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = geometry.size_out(args.model, args.size_in, args.zoom_ratio)
    print(" ".join(str(v) for v in out))
    return 0
