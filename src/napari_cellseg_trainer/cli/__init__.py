"""The ``cellseg-trainer`` command line: the same config and engine as the napari panel."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UserInputError
from . import _advise, _config, _evaluate, _export, _predict, _pretrain, _sizes, _train

USER_ERROR = 2

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellseg-trainer",
        description="Train and use 3-D cell-structure segmentation models (unet_xy, unet_xy_zoom).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (_config, _sizes, _advise, _train, _predict, _evaluate, _export, _pretrain):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line per problem and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserInputError as err:
        for line in str(err).splitlines():
            print(f"error: {line.strip()}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
