"""``cellseg-trainer export bioimageio``: a checkpoint as a bioimage.io model package."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to another tool's format",
        description="Export a checkpoint (one saved by this plugin's training) to another format.",
    )
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    b = formats.add_parser(
        "bioimageio",
        help="a bioimage.io model package (.zip) for bioimage.io consumers",
        description=(
            "Write a bioimage.io model package (format 0.5): TorchScript and state-dict weights, "
            "test tensors from the sample data, a cover, a README and the training config. "
            "Needs: pip install 'napari-cellseg-trainer[bioimageio]'."
        ),
    )
    b.add_argument("--checkpoint", required=True, help="checkpoint file that carries its config")
    b.add_argument("--output", required=True, help="package to write, e.g. model.zip")
    b.add_argument("--name", help="model name (letters, digits, spaces, _+-(); 5+ characters)")
    b.add_argument(
        "--author", dest="authors", action="append", metavar="NAME", help="repeat for several"
    )
    b.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    b.set_defaults(run=run_bioimageio)


def run_bioimageio(args: argparse.Namespace) -> int:
    from ..export import export_bioimageio  # torch and bioimageio load only for this command

    path = export_bioimageio(
        args.checkpoint,
        args.output,
        name=args.name,
        authors=args.authors,
        overwrite=args.overwrite,
        note=lambda line: print(f"note: {line}", file=sys.stderr),
    )
    print(path)
    return 0
