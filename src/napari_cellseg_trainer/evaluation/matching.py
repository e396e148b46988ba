"""Matching predicted objects to true ones: a contingency table of two label images.

Everything is computed from the overlaps that exist (the voxels where both images are non-zero),
never from a dense objects x objects matrix over the volume, so a volume with many thousands of
objects costs a few sorts of its foreground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as graph_components

from ..errors import UserInputError

# A predicted object "lies in" a true one (and vice versa) when at least this share of its
# own voxels is inside it; see InstanceScores.split and .merged.
MAJORITY = 0.5

__all__ = ["EvaluationError", "InstanceScores", "check_same_shape", "match_instances"]


class EvaluationError(UserInputError, ValueError):
    """Arrays that cannot be compared (shape, dtype, values) or a bad threshold."""


@dataclass(frozen=True)
class InstanceScores:
    """Object-level scores of predicted labels against true labels.

    Attributes
    ----------
    iou_threshold
        The IoU a predicted and a true object need to be a match.
    n_pred, n_truth
        Objects (distinct non-zero labels) in the prediction and in the truth.
    matched
        True positives: one-to-one pairs with IoU >= ``iou_threshold``. Above 0.5 each object
        has at most one such partner; at or below 0.5 the pairs are chosen by optimal
        assignment (``linear_sum_assignment``) maximising the summed IoU of the candidates.
    false_positives
        Predicted objects in no pair: ``n_pred - matched``.
    missed
        True objects in no pair (false negatives): ``n_truth - matched``. Above 0.5 these are
        exactly the true objects that no predicted object overlaps at IoU >= the threshold.
    split
        True objects in which two or more predicted objects each lie with at least half of
        their own voxels: the object was cut into pieces (over-segmentation).
    merged
        Predicted objects in which two or more true objects each lie with at least half of
        their own voxels: several objects were fused into one (under-segmentation).
    precision, recall, f1
        ``matched / n_pred``, ``matched / n_truth`` and ``2 TP / (2 TP + FP + FN)``. With no
        objects on either side all three are 1.0; a side with no objects gives 0.0 otherwise.
    mean_matched_iou
        Mean IoU of the matched pairs (segmentation quality of what was found); 1.0 when both
        sides are empty, 0.0 when nothing matched.
    """

    iou_threshold: float
    n_pred: int
    n_truth: int
    matched: int
    false_positives: int
    missed: int
    split: int
    merged: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float


@dataclass(frozen=True)
class _Overlaps:
    """The contingency table: object sizes and the voxel counts of every overlapping pair."""

    pred_sizes: np.ndarray  # voxels of predicted object i (index, not label)
    truth_sizes: np.ndarray  # voxels of true object j
    pred_index: np.ndarray  # per overlapping pair
    truth_index: np.ndarray
    shared: np.ndarray  # voxels in both

    @property
    def iou(self) -> np.ndarray:
        union = self.pred_sizes[self.pred_index] + self.truth_sizes[self.truth_index]
        return self.shared / (union - self.shared)


def match_instances(
    pred_labels: np.ndarray, truth_labels: np.ndarray, iou_threshold: float = 0.5
) -> InstanceScores:
    """Match predicted objects to true ones and count the kinds of error (see InstanceScores).

    Parameters
    ----------
    pred_labels, truth_labels
        Integer label images of one shape; 0 is background, any other value one object (labels
        need not be consecutive).
    iou_threshold
        In (0, 1]: the IoU a pair needs to match.
    """
    pred, truth = np.asarray(pred_labels), np.asarray(truth_labels)
    _check_labels(pred, truth, iou_threshold)
    table = _contingency(pred, truth)
    matched_iou = _one_to_one(table, iou_threshold)
    split, merged = _split_and_merged(table)
    return _scores(table, matched_iou, split, merged, iou_threshold)


def check_same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    """Raise EvaluationError, naming both shapes, unless ``pred`` and ``truth`` have one shape."""
    if pred.shape != truth.shape:
        raise EvaluationError(
            f"prediction shape {pred.shape} does not match truth shape {truth.shape}"
        )


def _check_labels(pred: np.ndarray, truth: np.ndarray, iou_threshold: float) -> None:
    check_same_shape(pred, truth)
    for name, labels in (("prediction", pred), ("truth", truth)):
        if labels.dtype.kind not in "biu":
            raise EvaluationError(f"{name} labels must be integers, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise EvaluationError(f"{name} labels must be >= 0, found {labels.min()}")
    if not 0.0 < iou_threshold <= 1.0:
        raise EvaluationError(f"IoU threshold must be in (0, 1], got {iou_threshold}")


def _contingency(pred: np.ndarray, truth: np.ndarray) -> _Overlaps:
    pred, truth = pred.ravel(), truth.ravel()
    pred_ids, pred_sizes = np.unique(pred[pred > 0], return_counts=True)
    truth_ids, truth_sizes = np.unique(truth[truth > 0], return_counts=True)
    both = (pred > 0) & (truth > 0)
    # Object indices (not labels) keep the pair key small whatever the label values are.
    pi = np.searchsorted(pred_ids, pred[both]).astype(np.int64)
    ti = np.searchsorted(truth_ids, truth[both]).astype(np.int64)
    n_truth = max(len(truth_ids), 1)
    keys, shared = np.unique(pi * n_truth + ti, return_counts=True)
    return _Overlaps(pred_sizes, truth_sizes, keys // n_truth, keys % n_truth, shared)


def _one_to_one(table: _Overlaps, iou_threshold: float) -> np.ndarray:
    """The IoUs of the matched pairs: each object in one pair at most, summed IoU maximal."""
    iou = table.iou
    keep = iou >= iou_threshold
    pi, ti, iou = table.pred_index[keep], table.truth_index[keep], iou[keep]
    if _unique(pi) and _unique(ti):
        return iou  # no object has two candidates: nothing to choose (always so above 0.5)
    # Objects compete only within a connected group of candidate pairs; solving each group on
    # its own keeps every assignment matrix small however many objects the volume holds.
    n_pred = len(table.pred_sizes)
    nodes = n_pred + len(table.truth_sizes)
    graph = coo_matrix((np.ones(len(pi)), (pi, ti + n_pred)), shape=(nodes, nodes))
    _, group = graph_components(graph, directed=False)
    return np.concatenate([_assign(pi, ti, iou, group[pi] == g) for g in np.unique(group[pi])])


def _unique(values: np.ndarray) -> bool:
    return len(np.unique(values)) == len(values)


def _assign(pi: np.ndarray, ti: np.ndarray, iou: np.ndarray, in_group: np.ndarray) -> np.ndarray:
    rows, r = np.unique(pi[in_group], return_inverse=True)
    cols, c = np.unique(ti[in_group], return_inverse=True)
    weights = np.zeros((len(rows), len(cols)))
    weights[r, c] = iou[in_group]
    chosen_r, chosen_c = linear_sum_assignment(weights, maximize=True)
    chosen = weights[chosen_r, chosen_c]
    return chosen[chosen > 0]  # a zero is a pair that is no candidate, filled in to square up


def _split_and_merged(table: _Overlaps) -> tuple[int, int]:
    pred_inside = table.shared >= MAJORITY * table.pred_sizes[table.pred_index]
    truth_inside = table.shared >= MAJORITY * table.truth_sizes[table.truth_index]
    pieces = np.bincount(table.truth_index[pred_inside], minlength=len(table.truth_sizes))
    fused = np.bincount(table.pred_index[truth_inside], minlength=len(table.pred_sizes))
    return int(np.count_nonzero(pieces >= 2)), int(np.count_nonzero(fused >= 2))


def _scores(
    table: _Overlaps, matched_iou: np.ndarray, split: int, merged: int, iou_threshold: float
) -> InstanceScores:
    n_pred, n_truth, tp = len(table.pred_sizes), len(table.truth_sizes), len(matched_iou)
    fp, fn = n_pred - tp, n_truth - tp
    nothing = n_pred == 0 and n_truth == 0
    return InstanceScores(
        iou_threshold=float(iou_threshold),
        n_pred=n_pred,
        n_truth=n_truth,
        matched=tp,
        false_positives=fp,
        missed=fn,
        split=split,
        merged=merged,
        precision=tp / n_pred if n_pred else float(nothing),
        recall=tp / n_truth if n_truth else float(nothing),
        f1=2 * tp / (2 * tp + fp + fn) if not nothing else 1.0,
        mean_matched_iou=float(matched_iou.mean()) if tp else float(nothing),
    )
