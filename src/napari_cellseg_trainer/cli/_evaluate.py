"""``cellseg-trainer evaluate``: IoU, Dice and object scores of a prediction against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..data.images import read_image
from ..evaluation import EvaluationError, evaluate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a prediction against ground truth",
        description=(
            "Print IoU and Dice of a prediction (probability map, binary mask or instance "
            "labels) against ground truth (binary mask or instance labels); with instance "
            "labels as truth also F1 at an IoU threshold and the matched / split / merged / "
            "missed object counts."
        ),
    )
    p.add_argument(
        "--prediction",
        required=True,
        help="prediction image (TIFF/OME-TIFF, OME-Zarr or its labels/NAME, zarr array, ...)",
    )
    p.add_argument("--truth", required=True, help="ground-truth image, same Z Y X shape")
    p.add_argument("--mask", help="optional image: only voxels where it is > 0 are scored")
    p.add_argument("--threshold", type=float, default=0.5, help="for a probability prediction")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for two objects to match")
    p.add_argument(
        "--channel",
        type=int,
        help="channel to read from images with several (an image with one channel gives its own)",
    )
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.set_defaults(run=run_evaluate)


def read_volume(path: str | Path, channel: int | None = None) -> np.ndarray:
    """The (Z, Y, X) volume at ``path``: its single time point and its single (or chosen) channel.

    Raises
    ------
    EvaluationError
        For an image with several time points, or several channels and no ``channel``, or
        several channels none of which is ``channel``.
    """
    data = read_image(path)
    n_time, n_channels = data.shape[:2]
    if n_time > 1:
        raise EvaluationError(f"{path}: has {n_time} time points; evaluate takes one")
    if n_channels == 1:
        # --channel picks among a prediction's channels; a one-channel truth is read as it is.
        return data[0, 0]
    if channel is None:
        raise EvaluationError(f"{path}: has {n_channels} channels; choose one with --channel N")
    if not 0 <= channel < n_channels:
        raise EvaluationError(f"{path}: has channels 0..{n_channels - 1}, not {channel}")
    return data[0, channel]


def run_evaluate(args: argparse.Namespace) -> int:
    prediction = read_volume(args.prediction, args.channel)
    truth = read_volume(args.truth, args.channel)
    mask = None if args.mask is None else read_volume(args.mask, args.channel)
    result = evaluate(
        prediction, truth, threshold=args.threshold, iou_threshold=args.iou, mask=mask
    )
    if args.json:
        row = {"prediction": str(args.prediction), "truth": str(args.truth), **result.to_dict()}
        print(json.dumps(row, indent=2))
    else:
        for line in result.lines():
            print(line)
    return 0
