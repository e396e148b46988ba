"""Scores of a prediction against ground truth: IoU and Dice, object matching, an error map.

Kinds of arrays (see ``kind_of``): a *probability* map is real-valued in [0, 1] and becomes a
mask at ``threshold``; a *binary* mask is integer or boolean with one non-zero value (0/1 or
0/255); *labels* are integers with several distinct non-zero values, one per object. A real
array holding whole numbers above 1 (labels saved as float) counts as integers.

Semantic scores (IoU, Dice) compare the foregrounds. Instance scores (``match_instances``)
compare objects and need labels for the truth; a prediction without labels is split into its
connected components (corners included) for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np

from .instances import connected_components
from .matching import EvaluationError, InstanceScores, check_same_shape, match_instances

Kind = Literal["probability", "binary", "labels"]

ERROR_CORRECT, ERROR_FALSE_POSITIVE, ERROR_FALSE_NEGATIVE = 0, 1, 2

__all__ = [
    "ERROR_CORRECT",
    "ERROR_FALSE_NEGATIVE",
    "ERROR_FALSE_POSITIVE",
    "Evaluation",
    "as_binary",
    "error_map",
    "evaluate",
    "kind_of",
    "semantic_scores",
]


def kind_of(array: np.ndarray) -> Kind:
    """``"probability"``, ``"binary"`` or ``"labels"``: how ``evaluate`` reads ``array``.

    Raises
    ------
    EvaluationError
        For non-numeric arrays, NaN or infinite values, negative labels, or real values that
        are neither probabilities in [0, 1] nor whole numbers.
    """
    array = np.asarray(array)
    if array.dtype.kind == "b":
        return "binary"
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise EvaluationError("the array holds NaN or infinite values")
        if array.size == 0 or (array.min() >= 0 and array.max() <= 1):
            return "probability"
        if not np.array_equal(array, np.round(array)):
            raise EvaluationError(
                f"real values from {array.min():g} to {array.max():g} are neither "
                "probabilities in [0, 1] nor whole-number labels"
            )
    elif array.dtype.kind not in "iu":
        raise EvaluationError(f"cannot score an array of dtype {array.dtype} (not numeric)")
    return _integer_kind(array)


def _integer_kind(array: np.ndarray) -> Kind:
    """Binary when one non-zero value at most (0/1, or 0/255 as image tools save masks)."""
    if array.size == 0:
        return "binary"
    low, high = array.min(), array.max()
    if low < 0:
        raise EvaluationError(f"labels must be >= 0, found {low:g}")
    if high <= 1:
        return "binary"
    if high == 255 and not np.any((array != 0) & (array != 255)):
        return "binary"
    return "labels"


def as_binary(array: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The foreground of ``array`` as a boolean array.

    A real array is a probability (``> threshold``, or ``> 0`` when it holds whole-number
    labels above 1); a boolean array is itself; an integer array is ``> 0``.
    """
    array = np.asarray(array)
    if array.dtype.kind == "b":
        return array
    if kind_of(array) == "probability":
        return array > threshold
    return array > 0


def _as_labels(array: np.ndarray) -> np.ndarray:
    """Integer labels of an array ``kind_of`` calls ``"labels"`` (real ones cast to int64)."""
    return array.astype(np.int64) if array.dtype.kind == "f" else array


def _check_shapes(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> None:
    check_same_shape(prediction, truth)
    if mask is not None and mask.shape != truth.shape:
        raise EvaluationError(f"mask shape {mask.shape} does not match truth shape {truth.shape}")


def semantic_scores(
    pred_mask: np.ndarray, truth_mask: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """(IoU, Dice) of two foregrounds, counting only voxels where ``mask`` is true.

    Parameters
    ----------
    pred_mask, truth_mask
        Foregrounds (boolean; other arrays go through ``as_binary``).
    mask
        Optional: the voxels that count (a cost map's ``> 0``, the labelled part of sparse
        annotations); voxels where it is false are ignored.

    Returns
    -------
    tuple of float
        IoU = |P ∩ T| / |P ∪ T| and Dice = 2 |P ∩ T| / (|P| + |T|). When both foregrounds are
        empty (within the mask) nothing was missed and nothing invented: both are 1.0.
    """
    pred, truth, counted = _binary_triplet(pred_mask, truth_mask, mask)
    if counted is not None:
        pred, truth = pred & counted, truth & counted
    both = int(np.count_nonzero(pred & truth))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0, 1.0
    return both / (total - both), 2 * both / total


def _binary_triplet(
    pred_mask: np.ndarray, truth_mask: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred, truth = np.asarray(pred_mask), np.asarray(truth_mask)
    counted = None if mask is None else as_binary(mask)
    _check_shapes(pred, truth, counted)
    return as_binary(pred), as_binary(truth), counted


def error_map(
    pred_mask: np.ndarray, truth_mask: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """uint8 map of the errors: 0 correct (or not counted), 1 false positive, 2 false negative.

    Shown as a napari Labels layer it colours each kind of error; voxels outside ``mask`` are 0
    because they are not scored.
    """
    pred, truth, counted = _binary_triplet(pred_mask, truth_mask, mask)
    errors = np.zeros(pred.shape, dtype=np.uint8)
    errors[pred & ~truth] = ERROR_FALSE_POSITIVE
    errors[truth & ~pred] = ERROR_FALSE_NEGATIVE
    if counted is not None:
        errors[~counted] = ERROR_CORRECT
    return errors


@dataclass(frozen=True)
class Evaluation:
    """The scores of one prediction against one ground truth.

    Attributes
    ----------
    iou, dice
        Semantic scores of the foregrounds (see ``semantic_scores``).
    prediction_kind, truth_kind
        How each array was read: ``"probability"``, ``"binary"`` or ``"labels"``.
    threshold
        The probability threshold (used only for a probability prediction).
    instances
        Object scores, or None when the truth has no instance labels (or ``instances="never"``).
    instance_source
        Where the predicted objects came from: ``"labels"`` (the prediction's own) or
        ``"connected components"`` (of a probability or binary prediction); None without
        instance scores.
    """

    iou: float
    dice: float
    prediction_kind: Kind
    truth_kind: Kind
    threshold: float
    instances: InstanceScores | None = None
    instance_source: Literal["labels", "connected components"] | None = None

    def lines(self) -> list[str]:
        """What ``cellseg-trainer evaluate`` prints, one score per line, 4 decimals.

        ``IoU x``, ``Dice x``; with instances also ``F1@t x``, ``precision x / recall x``,
        ``matched n / split n / merged n / missed n``, ``false positives n``,
        ``mean matched IoU x`` and ``objects n predicted (source) / n true``.
        """
        out = [f"IoU {self.iou:.4f}", f"Dice {self.dice:.4f}"]
        s = self.instances
        if s is not None:
            out += [
                f"F1@{s.iou_threshold:g} {s.f1:.4f}",
                f"precision {s.precision:.4f} / recall {s.recall:.4f}",
                f"matched {s.matched} / split {s.split} / merged {s.merged} / missed {s.missed}",
                f"false positives {s.false_positives}",
                f"mean matched IoU {s.mean_matched_iou:.4f}",
                f"objects {s.n_pred} predicted ({self.instance_source}) / {s.n_truth} true",
            ]
        return out

    def to_dict(self) -> dict[str, float | int | str | None]:
        """One flat row for a table or JSON: always the same keys, None where not computed."""
        row: dict[str, float | int | str | None] = {
            "iou": self.iou,
            "dice": self.dice,
            "prediction_kind": self.prediction_kind,
            "truth_kind": self.truth_kind,
            "threshold": self.threshold,
            "instance_source": self.instance_source,
        }
        names = [f.name for f in fields(InstanceScores)]
        values = asdict(self.instances) if self.instances else dict.fromkeys(names)
        row.update(values)
        return row


def evaluate(
    prediction: np.ndarray,
    truth: np.ndarray,
    *,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
    instances: Literal["auto", "never"] = "auto",
    mask: np.ndarray | None = None,
) -> Evaluation:
    """Score ``prediction`` against ``truth``: IoU, Dice and, for instance truth, object scores.

    Parameters
    ----------
    prediction
        A probability map (real, in [0, 1]), a binary mask, or instance labels.
    truth
        A binary mask or instance labels, same shape.
    threshold
        Probability threshold for a probability prediction, in [0, 1).
    iou_threshold
        IoU a predicted object needs with a true one to match it (see ``match_instances``).
    instances
        ``"auto"``: object scores whenever the truth has instance labels (a prediction without
        labels is split into connected components); ``"never"``: semantic scores only.
    mask
        Optional voxels that count; elsewhere prediction and truth are ignored (objects are
        cut to the mask, and those with no voxel left in it vanish).

    Raises
    ------
    EvaluationError
        For arrays of different shapes, non-numeric arrays, or values of no known kind.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    counted = None if mask is None else as_binary(np.asarray(mask))
    _check_shapes(prediction, truth, counted)
    _check_thresholds(threshold, iou_threshold, instances)
    pred_kind, truth_kind = kind_of(prediction), kind_of(truth)
    pred_mask = prediction > threshold if pred_kind == "probability" else prediction > 0
    iou, dice = semantic_scores(pred_mask, truth > 0, counted)
    result = Evaluation(iou, dice, pred_kind, truth_kind, threshold)
    if instances == "never" or truth_kind != "labels":
        return result
    if pred_kind == "labels":
        pred_labels, source = _as_labels(prediction), "labels"
    else:
        pred_labels, source = connected_components(pred_mask), "connected components"
    truth_labels = _as_labels(truth)
    if counted is not None:
        pred_labels, truth_labels = pred_labels * counted, truth_labels * counted
    scores = match_instances(pred_labels, truth_labels, iou_threshold)
    return Evaluation(iou, dice, pred_kind, truth_kind, threshold, scores, source)


def _check_thresholds(threshold: float, iou_threshold: float, instances: str) -> None:
    if not 0.0 <= threshold < 1.0:
        raise EvaluationError(f"threshold must be in [0, 1), got {threshold}")
    if not 0.0 < iou_threshold <= 1.0:
        raise EvaluationError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    if instances not in ("auto", "never"):
        raise EvaluationError(f"instances must be 'auto' or 'never', got {instances!r}")
