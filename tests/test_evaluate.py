"""Scores against ground truth on hand-made cases whose IoU, Dice and object counts are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.errors import UserInputError
from napari_cellseg_trainer.evaluation import (
    ERROR_FALSE_NEGATIVE,
    ERROR_FALSE_POSITIVE,
    EvaluationError,
    as_binary,
    error_map,
    evaluate,
    kind_of,
    match_instances,
    semantic_scores,
)


def strips(*spans: tuple[int, int], width: int = 60) -> np.ndarray:
    """Labels 1, 2, ... on x ranges [start, stop) of a (1, 3, width) volume, 3 rows thick."""
    labels = np.zeros((1, 3, width), dtype=np.uint16)
    for value, (start, stop) in enumerate(spans, start=1):
        labels[..., start:stop] = value
    return labels


# Truth: T1 split in two pieces, T2 and T3 merged, T4 found exactly, T5 found at IoU 0.8,
# T6 missed entirely; P6 is a false positive with no truth near it.
TRUTH = strips((0, 10), (12, 17), (18, 23), (25, 30), (32, 37), (40, 45))
PRED = strips((0, 4), (4, 8), (12, 23), (25, 30), (32, 36), (50, 55))


def test_identical_masks_score_one():
    truth = strips((2, 9))
    assert semantic_scores(truth > 0, truth > 0) == (1.0, 1.0)


def test_disjoint_masks_score_zero():
    assert semantic_scores(strips((0, 5)) > 0, strips((10, 15)) > 0) == (0.0, 0.0)


def test_known_overlap_gives_hand_computed_iou_and_dice():
    # 6 and 6 voxels per row, 4 shared: IoU 4 / 8, Dice 2 * 4 / 12.
    iou, dice = semantic_scores(strips((0, 6)) > 0, strips((2, 8)) > 0)
    assert iou == pytest.approx(0.5)
    assert dice == pytest.approx(2 / 3)


def test_both_empty_score_one():
    empty = np.zeros((2, 3, 4), dtype=np.uint8)
    assert semantic_scores(empty, empty) == (1.0, 1.0)
    result = evaluate(empty, empty)
    assert (result.iou, result.dice, result.instances) == (1.0, 1.0, None)


def test_instance_scene_gives_exact_counts():
    s = match_instances(PRED, TRUTH, iou_threshold=0.5)
    assert (s.n_pred, s.n_truth) == (6, 6)
    assert s.matched == 2  # T4 and T5
    assert s.split == 1  # T1
    assert s.merged == 1  # P3 over T2 and T3
    assert s.missed == 4  # T1, T2, T3 (no piece reaches IoU 0.5) and T6
    assert s.false_positives == 4  # P1, P2, P3, P6
    tp, fp, fn = s.matched, s.false_positives, s.missed
    assert s.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn)) == pytest.approx(1 / 3)
    assert (s.precision, s.recall) == (pytest.approx(2 / 6), pytest.approx(2 / 6))
    assert s.mean_matched_iou == pytest.approx((1.0 + 0.8) / 2)


def test_evaluate_reports_semantic_and_instance_scores_of_labels():
    result = evaluate(PRED, TRUTH)
    # Per row: 33 predicted, 35 true, 27 shared voxels.
    assert result.iou == pytest.approx(27 / 41)
    assert result.dice == pytest.approx(54 / 68)
    assert (result.prediction_kind, result.truth_kind) == ("labels", "labels")
    assert result.instance_source == "labels"
    assert result.instances == match_instances(PRED, TRUTH)


def test_split_alone_and_merge_alone():
    truth = strips((0, 10), (20, 25), (26, 31))
    # T1 cut at x = 3: the larger piece (IoU 0.7) still matches it, and T1 counts as split.
    split = match_instances(strips((0, 3), (3, 10), (20, 25), (26, 31)), truth)
    assert (split.split, split.merged, split.matched, split.false_positives) == (1, 0, 3, 1)
    merged = match_instances(strips((0, 10), (20, 31)), truth)
    assert (merged.split, merged.merged, merged.matched, merged.missed) == (0, 1, 1, 2)


def test_low_iou_threshold_uses_optimal_assignment():
    # P1 (x 4..14) is a candidate for T1 (IoU 0.4) and T2 (0.3125); P2 (x 0..3) only for T1
    # (0.4). Taking the best pair first would match one; the assignment matches both.
    truth = strips((0, 10), (10, 20))
    pred = strips((4, 15), (0, 4))
    s = match_instances(pred, truth, iou_threshold=0.3)
    assert s.matched == 2 and s.missed == 0
    assert s.mean_matched_iou == pytest.approx((0.3125 + 0.4) / 2)
    assert match_instances(pred, truth, iou_threshold=0.5).matched == 0


def test_label_values_need_not_be_consecutive():
    truth = TRUTH.astype(np.uint32) * 1000
    assert match_instances(PRED, truth) == match_instances(PRED, TRUTH)


def test_probability_prediction_is_scored_through_connected_components():
    truth = strips((0, 10), (20, 30))
    probability = np.where(strips((0, 10), (20, 25)) > 0, 0.9, 0.1).astype(np.float32)
    result = evaluate(probability, truth)
    assert result.prediction_kind == "probability"
    assert result.instance_source == "connected components"
    assert (result.instances.matched, result.instances.missed) == (2, 0)
    assert result.iou == pytest.approx(15 / 20)


def test_binary_255_is_one_mask_not_instances():
    mask = (strips((0, 10), (20, 30)) > 0).astype(np.uint8) * 255
    assert kind_of(mask) == "binary"
    result = evaluate(mask, strips((0, 10), (20, 30)))
    assert result.instance_source == "connected components"
    assert result.instances.n_pred == 2 and result.instances.f1 == 1.0


def test_binary_truth_gives_no_instance_scores():
    result = evaluate(PRED, TRUTH > 0)
    assert result.truth_kind == "binary"
    assert result.instances is None and result.instance_source is None
    assert [line.split()[0] for line in result.lines()] == ["IoU", "Dice"]
    assert result.to_dict()["f1"] is None


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.array([0.0, 0.3, 1.0], dtype=np.float32), "probability"),
        (np.array([0, 1, 1], dtype=np.uint8), "binary"),
        (np.array([False, True]), "binary"),
        (np.array([0, 255], dtype=np.uint8), "binary"),
        (np.array([0, 1, 2], dtype=np.uint16), "labels"),
        (np.array([0, 1, 255], dtype=np.uint8), "labels"),
        (np.array([0.0, 2.0, 3.0], dtype=np.float32), "labels"),
    ],
)
def test_kind_of(array, kind):
    assert kind_of(array) == kind


def test_as_binary_thresholds_probabilities_and_keeps_labels():
    assert as_binary(np.array([0.2, 0.5, 0.7])).tolist() == [False, False, True]
    assert as_binary(np.array([0.2, 0.5, 0.7]), threshold=0.1).tolist() == [True, True, True]
    assert as_binary(np.array([0, 3, 255], dtype=np.uint8)).tolist() == [False, True, True]


def test_mask_ignores_voxels_outside_it():
    truth = strips((0, 10), (20, 30))
    pred = strips((0, 10), (22, 30))
    counted = np.zeros(truth.shape, dtype=bool)
    counted[..., :15] = True
    changed = pred.copy()
    changed[..., 15:] = 7  # a big false positive, outside the mask only
    first = evaluate(pred, truth, mask=counted)
    second = evaluate(changed, truth, mask=counted)
    assert first == second
    assert (first.iou, first.instances.n_truth, first.instances.f1) == (1.0, 1, 1.0)
    assert evaluate(changed, truth).iou < 1.0


def test_error_map_marks_false_positives_and_negatives():
    errors = error_map(strips((0, 6)) > 0, strips((2, 8)) > 0)
    assert errors.dtype == np.uint8
    row = errors[0, 0]
    assert row[:2].tolist() == [ERROR_FALSE_POSITIVE] * 2
    assert row[2:6].tolist() == [0] * 4
    assert row[6:8].tolist() == [ERROR_FALSE_NEGATIVE] * 2
    counted = np.ones(errors.shape, dtype=bool)
    counted[..., :2] = False
    assert error_map(strips((0, 6)) > 0, strips((2, 8)) > 0, counted)[0, 0, :2].tolist() == [0, 0]


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(EvaluationError, match=r"\(1, 3, 60\).*\(1, 3, 50\)") as err:
        evaluate(PRED, strips(width=50))
    assert isinstance(err.value, UserInputError)


@pytest.mark.parametrize(
    "bad",
    [np.array(["a", "b", "c"]), np.array([0.0, np.nan, 1.0]), np.array([0.5, 1.5, 2.0])],
)
def test_unreadable_values_are_user_errors(bad):
    with pytest.raises(EvaluationError):
        evaluate(bad, np.zeros(3, dtype=np.uint8))


def test_lines_and_dict_are_stable():
    result = evaluate(PRED, TRUTH)
    lines = result.lines()
    assert lines[0] == f"IoU {27 / 41:.4f}"
    assert lines[2] == "F1@0.5 0.3333"
    assert "matched 2 / split 1 / merged 1 / missed 4" in lines
    row = result.to_dict()
    assert json.loads(json.dumps(row)) == row
    assert row["matched"] == 2 and row["instance_source"] == "labels"


# --- the command line -----------------------------------------------------------------------


def write(path, data, axes="ZYX"):
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes})
    return str(path)


def test_cli_prints_the_scores(tmp_path, capsys):
    pred = write(tmp_path / "pred.ome.tif", PRED)
    truth = write(tmp_path / "truth.ome.tif", TRUTH)
    assert main(["evaluate", "--prediction", pred, "--truth", truth]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == evaluate(PRED, TRUTH).lines()
    assert out[1] == f"Dice {54 / 68:.4f}"


def test_cli_json_parses(tmp_path, capsys):
    probability = np.where(PRED > 0, 0.8, 0.0).astype(np.float32)
    pred = write(tmp_path / "prob.ome.tif", probability)
    truth = write(tmp_path / "truth.ome.tif", TRUTH)
    argv = ["evaluate", "--prediction", pred, "--truth", truth, "--json", "--iou", "0.3"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["prediction_kind"] == "probability"
    assert row["instance_source"] == "connected components"
    assert row["iou_threshold"] == 0.3
    assert row["iou"] == pytest.approx(27 / 41)


def test_cli_shape_mismatch_exits_2_with_one_line(tmp_path, capsys):
    pred = write(tmp_path / "pred.ome.tif", PRED)
    truth = write(tmp_path / "truth.ome.tif", strips(width=50))
    assert main(["evaluate", "--prediction", pred, "--truth", truth]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.err
    assert "(1, 3, 60)" in err[0] and "(1, 3, 50)" in err[0]


def test_cli_needs_a_channel_for_multichannel_images(tmp_path, capsys):
    two = np.stack([np.zeros_like(PRED), PRED], axis=1)  # Z C Y X
    pred = write(tmp_path / "two.ome.tif", two, axes="ZCYX")
    truth = write(tmp_path / "truth.ome.tif", TRUTH)
    assert main(["evaluate", "--prediction", pred, "--truth", truth]) == 2
    assert "--channel" in capsys.readouterr().err
    assert main(["evaluate", "--prediction", pred, "--truth", truth, "--channel", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == evaluate(PRED, TRUTH).lines()
    assert main(["evaluate", "--prediction", pred, "--truth", truth, "--channel", "2"]) == 2
    assert "channels 0..1" in capsys.readouterr().err
