"""The checks every training image passes (from a folder or from layers): labels, cost map, shapes.

Each check appends one line per problem, naming the file, to ``problems``: the caller reports
them all at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_label_array(
    label: np.ndarray, source: str, nclass: int, ignore_index: int | None, problems: list[str]
) -> None:
    """Labels must be whole numbers in [0, nclass - 1] (or ``ignore_index``)."""
    if label.dtype.kind == "f":
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            problems.append(
                f"{source}: ground truth holds non-integer values; expected class labels"
            )
            return
    elif label.dtype.kind not in "iub":
        problems.append(f"{source}: ground truth has data type {label.dtype}; expected integers")
        return
    if label.size == 0:
        return
    # min/max is one cheap pass; the offending values are only gathered when there are some.
    if label.min() >= 0 and label.max() <= nclass - 1:
        return
    outside = (label < 0) | (label > nclass - 1)
    if ignore_index is not None:
        outside &= label != ignore_index
    if outside.any():
        values = np.unique(label[outside])
        shown = ", ".join(str(v) for v in values[:10].tolist()) + (
            " ..." if len(values) > 10 else ""
        )
        problems.append(
            f"{source}: ground truth has label value(s) {shown} outside 0..{nclass - 1} "
            f"(nclass is {nclass})"
        )


def check_costmap_array(costmap: np.ndarray, source: str, problems: list[str]) -> None:
    """A cost map is finite and >= 0."""
    if costmap.dtype.kind not in "fiub":
        problems.append(f"{source}: cost map has data type {costmap.dtype}; expected numbers")
        return
    if costmap.dtype.kind == "f" and not np.isfinite(costmap).all():
        count = costmap.size - np.count_nonzero(np.isfinite(costmap))
        problems.append(f"{source}: cost map has {count} NaN or infinite value(s)")
    elif costmap.size and costmap.min() < 0:
        problems.append(
            f"{source}: cost map has {np.count_nonzero(costmap < 0)} negative value(s) "
            f"(minimum {costmap.min()}); weights must be >= 0"
        )


def check_shapes(
    raw: np.ndarray | None,
    label: np.ndarray,
    costmap: np.ndarray,
    label_source: str,
    costmap_source: str,
    size_out: Sequence[int],
    problems: list[str],
) -> None:
    """Raw (spatial part), label and cost map agree, and are at least ``size_out``."""
    if raw is not None and raw.shape[1:] != label.shape:
        problems.append(
            f"{label_source}: ground truth shape {label.shape} differs from the raw image's "
            f"ZYX shape {raw.shape[1:]}"
        )
    if costmap.shape != label.shape:
        problems.append(
            f"{costmap_source}: cost map shape {costmap.shape} differs from the ground truth "
            f"shape {label.shape}"
        )
    if label.ndim == len(size_out):
        small = [
            f"{axis} {have} < {need}"
            for axis, have, need in zip("zyx", label.shape, size_out, strict=True)
            if have < need
        ]
        if small:
            problems.append(
                f"{label_source}: image {label.shape} is smaller than size_out {list(size_out)} "
                f"({', '.join(small)}); no output patch fits"
            )
