"""``cellseg-trainer advise``: the patch and batch sizes that fit a memory budget."""

from __future__ import annotations

import argparse

from ..models import geometry
from ..models.memory import advise, detected_free_memory, parse_memory


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "advise",
        help="suggest size_in, size_out and batch_size for a GPU's memory",
        description=(
            "Suggest the largest valid size_in (the model's usual depth), its size_out and a "
            "batch_size whose training step fits the memory, from a memory model of the "
            "network's activations. Without --memory: the free memory of the detected GPU."
        ),
    )
    p.add_argument("--model", choices=geometry.MODEL_NAMES, default="unet_xy")
    p.add_argument("--zoom-ratio", type=int, default=3, help="only for unet_xy_zoom")
    p.add_argument("--memory", help="memory budget, e.g. 8GB, 24GiB, 7.5G")
    p.add_argument("--nchannel", type=int, default=1)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    budget = parse_memory(args.memory) if args.memory else detected_free_memory()
    zoom = args.zoom_ratio
    if args.model == "unet_xy_zoom":
        geometry.min_size_in(args.model, zoom)  # refuses a bad zoom ratio with its message
    print(advise(args.model, budget, zoom, args.nchannel))
    return 0
