"""The training folder: every broken folder gets a message naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellseg_trainer.data import (
    DataError,
    check_folder,
    images_from_arrays,
    load_folder,
    write_training_image,
)

SHAPE = (8, 20, 24)
SIZE_OUT = (4, 12, 12)


def _good_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.random(SHAPE, dtype=np.float32)
    label = (raw > 0.7).astype(np.uint8)
    costmap = np.ones(SHAPE, np.float32)
    return raw, label, costmap


@pytest.fixture
def good_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "train"
    for i, name in enumerate(["b_img", "a_img"]):
        write_training_image(folder, name, *_good_arrays(i))
    return folder


def _overwrite(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array)


# Each case breaks one file of the good folder: (file it names, what the message says).
def _drop_raw(f: Path) -> None:
    (f / "a_img.ome.tif").unlink()


def _drop_cm(f: Path) -> None:
    (f / "a_img_CM.ome.tif").unlink()


def _garbage_raw(f: Path) -> None:
    (f / "a_img.ome.tif").write_bytes(b"this is not a tiff file at all" * 4)


def _truncated_gt(f: Path) -> None:
    path = f / "a_img_GT.ome.tif"
    path.write_bytes(path.read_bytes()[:100])


def _raw_2d(f: Path) -> None:
    _overwrite(f / "a_img.ome.tif", np.zeros(SHAPE[1:], np.float32))


def _raw_5d(f: Path) -> None:
    _overwrite(f / "a_img.ome.tif", np.zeros((2, 3, *SHAPE), np.float32))


def _two_channels(f: Path) -> None:
    _overwrite(f / "a_img.ome.tif", np.zeros((2, *SHAPE), np.float32))


def _gt_shape(f: Path) -> None:
    _overwrite(f / "a_img_GT.ome.tif", np.zeros((8, 20, 30), np.uint8))


def _cm_shape(f: Path) -> None:
    _overwrite(f / "a_img_CM.ome.tif", np.ones((8, 22, 24), np.float32))


def _labels_out_of_range(f: Path) -> None:
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, :3] = [3, 7, 3]
    _overwrite(f / "a_img_GT.ome.tif", label)


def _float_labels(f: Path) -> None:
    _overwrite(f / "a_img_GT.ome.tif", np.full(SHAPE, 0.5, np.float32))


def _negative_cost(f: Path) -> None:
    cost = np.ones(SHAPE, np.float32)
    cost[1, 2, 3] = -0.5
    _overwrite(f / "a_img_CM.ome.tif", cost)


def _nan_cost(f: Path) -> None:
    cost = np.ones(SHAPE, np.float32)
    cost[1, 2, 3] = np.nan
    _overwrite(f / "a_img_CM.ome.tif", cost)


def _inf_raw(f: Path) -> None:
    raw = np.zeros(SHAPE, np.float32)
    raw[0, 0, 0], raw[1, 1, 1] = np.inf, np.nan
    _overwrite(f / "a_img.ome.tif", raw)


def _too_small(f: Path) -> None:
    small = (2, 20, 24)
    _overwrite(f / "a_img.ome.tif", np.zeros(small, np.float32))
    _overwrite(f / "a_img_GT.ome.tif", np.zeros(small, np.uint8))
    _overwrite(f / "a_img_CM.ome.tif", np.ones(small, np.float32))


BROKEN = {
    "missing raw": (_drop_raw, "a_img.ome.tif", ["missing", "raw image"]),
    "missing cost map": (_drop_cm, "a_img_CM.ome.tif", ["missing", "cost map"]),
    "corrupt raw": (_garbage_raw, "a_img.ome.tif", ["cannot be read as a TIFF"]),
    "truncated ground truth": (_truncated_gt, "a_img_GT.ome.tif", ["cannot be read as a TIFF"]),
    "raw 2-D": (_raw_2d, "a_img.ome.tif", ["2-D", "expected ZYX or CZYX"]),
    "raw 5-D": (_raw_5d, "a_img.ome.tif", ["5-D", "expected ZYX or CZYX"]),
    "channel count": (_two_channels, "a_img.ome.tif", ["2 channel(s)", "nchannel is 1"]),
    "ground truth shape": (_gt_shape, "a_img_GT.ome.tif", ["(8, 20, 30)", "(8, 20, 24)"]),
    "cost map shape": (_cm_shape, "a_img_CM.ome.tif", ["(8, 22, 24)", "(8, 20, 24)"]),
    "labels out of range": (_labels_out_of_range, "a_img_GT.ome.tif", ["3, 7", "outside 0..1"]),
    "non-integer labels": (_float_labels, "a_img_GT.ome.tif", ["non-integer"]),
    "negative cost": (_negative_cost, "a_img_CM.ome.tif", ["1 negative", "-0.5"]),
    "NaN cost": (_nan_cost, "a_img_CM.ome.tif", ["1 NaN or infinite"]),
    "NaN/Inf raw": (_inf_raw, "a_img.ome.tif", ["2 NaN or infinite"]),
    "smaller than size_out": (_too_small, "a_img_GT.ome.tif", ["smaller than size_out", "z 2 < 4"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folder_message_names_file_and_problem(good_folder, case):
    breaker, filename, fragments = BROKEN[case]
    breaker(good_folder)
    problems = check_folder(good_folder, nchannel=1, nclass=2, size_out=SIZE_OUT)
    assert len(problems) >= 1
    line = problems[0]
    assert str(good_folder / filename) in line
    for fragment in fragments:
        assert fragment in line
    # The intact image is not blamed.
    assert not any("b_img" in p for p in problems)
    with pytest.raises(DataError) as info:
        load_folder(good_folder, 1, 2, SIZE_OUT)
    assert info.value.problems == problems
    assert line in str(info.value)


def _no_folder(tmp: Path) -> Path:
    return tmp / "nowhere"


def _a_file(tmp: Path) -> Path:
    (tmp / "a_file.txt").write_text("x")
    return tmp / "a_file.txt"


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [(_no_folder, "does not exist"), (_a_file, "not a folder"), (_empty_folder, "no *_GT.ome.tif")],
    ids=["missing folder", "a file", "empty folder"],
)
def test_unusable_folder_is_named(tmp_path, make, fragment):
    folder = make(tmp_path)
    (problem,) = check_folder(folder, 1, 2, SIZE_OUT)
    assert str(folder) in problem and fragment in problem


def test_all_problems_are_reported_together(good_folder):
    _drop_cm(good_folder)
    _overwrite(good_folder / "b_img_GT.ome.tif", np.full(SHAPE, 5, np.uint8))
    problems = check_folder(good_folder, 1, 2, SIZE_OUT)
    assert len(problems) == 2
    assert "a_img_CM.ome.tif" in problems[0] and "b_img_GT.ome.tif" in problems[1]


def test_good_folder_loads_sorted_with_training_dtypes(good_folder):
    assert check_folder(good_folder, 1, 2, SIZE_OUT) == []
    images = load_folder(good_folder, 1, 2, SIZE_OUT)
    assert [im.name for im in images] == ["a_img", "b_img"]
    raw, label, costmap = _good_arrays(1)  # a_img was written second, with seed 1
    first = images[0]
    assert first.raw.shape == (1, *SHAPE) and first.raw.dtype == np.float32
    np.testing.assert_array_equal(first.raw[0], raw)
    np.testing.assert_array_equal(first.label, label)
    np.testing.assert_array_equal(first.costmap, costmap)
    assert first.label.dtype == np.uint8 and first.costmap.dtype == np.float32
    assert first.source.endswith("a_img.ome.tif")


def test_zcyx_raw_is_transposed(tmp_path):
    rng = np.random.default_rng(1)
    czyx = rng.random((2, *SHAPE), dtype=np.float32)  # Z=8 > C=2: written as ZCYX below
    label = np.zeros(SHAPE, np.uint8)
    write_training_image(tmp_path, "zc", czyx, label, np.ones(SHAPE, np.float32))
    _overwrite(tmp_path / "zc.ome.tif", czyx.transpose(1, 0, 2, 3).copy())
    (image,) = load_folder(tmp_path, 2, 2, SIZE_OUT)
    np.testing.assert_array_equal(image.raw, czyx)


def test_czyx_raw_is_kept(tmp_path):
    czyx = np.random.default_rng(2).random((2, *SHAPE), dtype=np.float32)
    write_training_image(
        tmp_path, "cz", czyx, np.zeros(SHAPE, np.uint8), np.ones(SHAPE, np.float32)
    )
    (image,) = load_folder(tmp_path, 2, 2, SIZE_OUT)
    np.testing.assert_array_equal(image.raw, czyx)


def test_ignore_index_label_is_allowed(good_folder):
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 255
    _overwrite(good_folder / "a_img_GT.ome.tif", label)
    assert len(check_folder(good_folder, 1, 2, SIZE_OUT)) == 1
    assert check_folder(good_folder, 1, 2, SIZE_OUT, ignore_index=255) == []


def test_arrays_give_the_same_images_as_their_folder(tmp_path):
    raw, label, costmap = _good_arrays(3)
    write_training_image(tmp_path, "layer", raw, label, costmap)
    (from_folder,) = load_folder(tmp_path, 1, 2, SIZE_OUT)
    (from_arrays,) = images_from_arrays(
        [(raw.astype(np.float64), label.astype(np.int32), costmap, "layer")], 1, 2, SIZE_OUT
    )
    for field in ("raw", "label", "costmap"):
        a, b = getattr(from_folder, field), getattr(from_arrays, field)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_arrays_without_costmap_weigh_everything_one():
    raw, label, _ = _good_arrays()
    (image,) = images_from_arrays([(raw, label, None, "cells")], 1, 2, SIZE_OUT)
    assert image.costmap.dtype == np.float32 and np.all(image.costmap == 1)


def test_bad_arrays_name_the_layer():
    raw, label, _ = _good_arrays()
    label = label.copy()
    label[0, 0, 0] = 4
    with pytest.raises(DataError) as info:
        images_from_arrays([(raw, label, None, "my labels")], 1, 2, SIZE_OUT)
    (problem,) = info.value.problems
    assert "'my labels'" in problem and "4" in problem
