"""Instances of a volume larger than memory: connected components block by block, joined across
block faces, edges and corners, into an OME-Zarr label image that napari opens as Labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

zarr = pytest.importorskip(
    "zarr", reason="the zarr extra is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)
pytest.importorskip(
    "ome_zarr", reason="ome-zarr is not installed: pip install 'napari-cellseg-trainer[zarr]'"
)

from conftest import Counting  # noqa: E402
from napari_cellseg_trainer._reader import get_reader  # noqa: E402
from napari_cellseg_trainer.config import PredictConfig  # noqa: E402
from napari_cellseg_trainer.evaluation.block_labels import components_by_block  # noqa: E402
from napari_cellseg_trainer.evaluation.instances import (  # noqa: E402
    InstanceParams,
    label_instances,
)
from napari_cellseg_trainer.inference import predict_volume  # noqa: E402
from napari_cellseg_trainer.inference.run import run_prediction  # noqa: E402
from napari_cellseg_trainer.normalization import normalize  # noqa: E402
from test_zarr_inputs import DATA, SIZE_IN, SIZE_OUT, library_v05  # noqa: E402


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """The same partition of the voxels, whatever the numbering (background 0 in both)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def smooth_probability(shape, seed: int) -> np.ndarray:
    values = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


@pytest.mark.parametrize(
    ("threshold", "min_size", "block"),
    [(0.6, 0, (8, 16, 32)), (0.55, 5, (5, 7, 9)), (0.52, 20, (30, 70, 90)), (0.6, 3, (1, 70, 8))],
)
def test_block_labels_equal_the_whole_volume_components(threshold, min_size, block):
    probability = smooth_probability((30, 70, 90), seed=1)
    params = InstanceParams(threshold=threshold, method="components", min_size=min_size)
    expected = label_instances(probability, params)
    found = np.zeros(probability.shape, np.uint32)
    count = components_by_block(probability, found, block, threshold, min_size)
    assert count == expected.max() > 0
    assert same_objects(found, expected)
    assert sorted(np.unique(found)) == list(range(count + 1))  # numbered 1..N, no gaps


def test_objects_touching_only_at_a_block_corner_or_edge_are_one():
    mask = np.zeros((4, 4, 8), np.float32)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # across the corner where eight 2x2x2 blocks meet
    mask[3, 1, 5] = mask[3, 2, 6] = 1  # across an edge: blocks (1, 0, 2) and (1, 1, 3)
    found = np.zeros(mask.shape, np.uint32)
    assert components_by_block(mask, found, (2, 2, 2), 0.5) == 2
    assert found[1, 1, 1] == found[2, 2, 2] and found[3, 1, 5] == found[3, 2, 6]
    assert found[1, 1, 1] != found[3, 1, 5]
    assert same_objects(
        found, label_instances(mask, InstanceParams(method="components", min_size=0))
    )


@pytest.mark.parametrize("binary", [False, True], ids=["probabilities", "mask"])
def test_instances_of_an_ome_zarr_result_go_into_its_labels_group(binary, tmp_path):
    source = tmp_path / "cells.ome.zarr"
    library_v05(source)
    # a threshold that leaves the top tenth: many separate objects
    prediction = predict_volume(Counting(), normalize(DATA[None], 10), SIZE_IN, SIZE_OUT)
    cut = round(float(np.quantile(prediction, 0.9)), 3)
    cfg = PredictConfig(model_path="-", OutputDir=str(tmp_path / "out"), Normalization=10)
    cfg.size_in, cfg.size_out, cfg.device = list(SIZE_IN), list(SIZE_OUT), "cpu"
    cfg.mode.InputFile, cfg.output_format = str(source), "ome-zarr"
    cfg.Threshold = cut if binary else -1.0
    params = InstanceParams(threshold=cut if not binary else 0.5, method="components", min_size=4)
    store = tmp_path / "out" / "cells_struct_segmentation.ome.zarr"
    for _ in range(2):  # a second run labels again: one label image, listed once
        written = run_prediction(cfg, model=Counting(), instances=params)
    assert written == [store, store / "labels" / "instances"]
    group = zarr.open_group(str(store), mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["instances"]
    image_label = group["labels/instances"].attrs["ome"]
    assert image_label["image-label"]["source"] == {"image": "../../"}
    scale = image_label["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([1.0, 0.3, 0.3])
    labels = group["labels/instances/0"][...]
    result = group["0"][0]
    probability = result / 255.0 if result.dtype == np.uint8 else result
    expected = label_instances(probability.astype(np.float32), params)
    assert expected.max() > 1 and same_objects(labels, expected)
    assert not any(p.name.startswith("partial") for p in (store / "labels").iterdir())

    layers = get_reader(str(store))(str(store))
    kinds = {meta["name"]: kind for _, meta, kind in layers}
    assert kinds == {"cells_struct_segmentation": "image", "instances": "labels"}
    data, meta, _ = next(layer for layer in layers if layer[2] == "labels")
    assert meta["scale"] == pytest.approx((1.0, 0.3, 0.3))
    assert type(data).__module__.startswith("dask")  # lazy: napari reads what it shows
    np.testing.assert_array_equal(np.asarray(data), labels)
    direct = get_reader(str(store / "labels" / "instances"))(str(store / "labels" / "instances"))
    assert [kind for _, _, kind in direct] == ["labels"]


def test_several_output_pairs_get_one_label_image_each(tmp_path):
    source = tmp_path / "cells.ome.zarr"
    library_v05(source, DATA[:, :40, :50])
    cfg = PredictConfig(model_path="-", OutputDir=str(tmp_path / "out"), Normalization=10)
    cfg.size_in, cfg.size_out, cfg.device = list(SIZE_IN), list(SIZE_OUT), "cpu"
    cfg.mode.InputFile, cfg.output_format, cfg.OutputCh = str(source), "ome-zarr", [0, 1, 1, 0]
    params = InstanceParams(threshold=0.55, method="components", min_size=0)
    store, *labels = run_prediction(cfg, model=Counting(), instances=params)
    assert [p.name for p in labels] == ["instances_0", "instances_1"]
    group = zarr.open_group(str(store), mode="r")
    for index in (0, 1):
        expected = label_instances(group["0"][index], params)
        assert expected.max() > 1
        assert same_objects(group[f"labels/instances_{index}/0"][...], expected)


def test_evaluate_reads_ome_zarr_predictions_and_truths_as_it_reads_tiffs(tmp_path, capsys):
    import json

    import tifffile
    from ome_zarr.writer import write_labels

    from napari_cellseg_trainer.cli import main

    truth = label_instances(
        smooth_probability((12, 40, 50), seed=3), InstanceParams(threshold=0.6, method="components")
    )
    prediction = smooth_probability((12, 40, 50), seed=4) * 0.3 + (truth > 0) * 0.6
    image = tmp_path / "cells.ome.zarr"
    library_v05(image, prediction.astype(np.float32))
    group = zarr.open_group(str(image), mode="a")
    write_labels(truth, group, name="cells", axes="zyx", scaler=None, scale_factors=())
    tifffile.imwrite(tmp_path / "p.tif", prediction.astype(np.float32))
    tifffile.imwrite(tmp_path / "t.tif", truth)
    scores = []
    for pred, true in (
        (image, image / "labels" / "cells"),
        (tmp_path / "p.tif", tmp_path / "t.tif"),
    ):
        assert main(["evaluate", "--prediction", str(pred), "--truth", str(true), "--json"]) == 0
        row = json.loads(capsys.readouterr().out)
        scores.append({k: v for k, v in row.items() if k not in ("prediction", "truth")})
    assert scores[0] == scores[1]
    assert scores[0]["iou"] > 0.5 and scores[0]["n_truth"] == truth.max() > 1
