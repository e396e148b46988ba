"""The prediction panel in a real napari viewer (run under Xvfb by scripts/test.sh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from qtpy.QtWidgets import QPushButton

from napari_cellseg_trainer._qt.predict_widget import PredictWidget
from napari_cellseg_trainer.cli import main
from napari_cellseg_trainer.models import build_model

pytestmark = pytest.mark.gui

WAIT_MS = 120_000
# Prediction may use bigger tiles than training (the network is fully convolutional): fewer tiles.
TILES = [32, 164, 164]


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def panel(viewer, stand_in_checkpoint, stand_in_predictor) -> PredictWidget:
    """The panel with a checkpoint loaded; the network is the stand-in (milliseconds a tile)."""
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    assert widget.load_checkpoint(stand_in_checkpoint)
    widget.form.set_value("size_in", TILES)
    widget.form.set_value("tiling", "established")
    widget.form.set_value("device", "cpu")
    return widget


def small_image(viewer, name="cells", shape=(9, 60, 70), **kwargs):
    rng = np.random.default_rng(1)
    return viewer.add_image(rng.random(shape, dtype=np.float32), name=name, **kwargs)


def run(panel, qtbot, start):
    """Start a prediction and wait for the panel to be idle again (its results shown)."""
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        worker = start()
        assert worker is not None
    return worker


@pytest.fixture
def inferences(monkeypatch):
    """The number of times the panel ran the network (each whole volume or preview is one)."""
    from napari_cellseg_trainer._qt import predict_run

    calls = []
    real = predict_run.run_segmentation

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(predict_run, "run_segmentation", counted)
    return calls


def test_checkpoint_fills_the_model_settings(panel, stand_in_checkpoint):
    cfg = panel.form.cfg
    assert cfg.model.name == "unet_xy" and cfg.nclass == [2, 2, 2] and cfg.InputCh == [0]
    assert cfg.model_path == str(stand_in_checkpoint)
    assert cfg.size_out == [4, 76, 76]  # follows the bigger tiles chosen above


def test_preview_segments_the_planes_around_the_current_z(panel, viewer, qtbot, monkeypatch):
    from napari_cellseg_trainer import devices

    released = []
    monkeypatch.setattr(devices, "release_freed_memory", lambda: released.append(1))
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    image = viewer.layers["sample filaments"]
    image.scale = (3, 1, 1)
    image.translate = (0, 5, 0)
    panel.set_image(image)
    viewer.dims.set_point(0, 3 * 20)  # world z of plane 20
    run(panel, qtbot, panel.preview)
    prob_name, labels_name = panel.layer_names()
    prob, labels = viewer.layers[prob_name], viewer.layers[labels_name]
    assert prob.data.shape == labels.data.shape == image.data.shape
    assert np.flatnonzero(panel.result.done).tolist() == [18, 19, 20, 21]  # size_out z = 4 planes
    assert prob.data[18:22].max() > 0 and prob.data[:18].max() == 0
    assert 0 <= prob.data.min() and prob.data.max() <= 1
    assert tuple(prob.scale) == tuple(labels.scale) == (3, 1, 1)
    assert tuple(prob.translate) == (0, 5, 0)
    assert "planes" in panel.status.text()
    assert released == []  # a few planes, often: no gc pass in napari's process for them


def test_threshold_moves_the_labels_without_a_new_inference(
    panel, viewer, qtbot, monkeypatch, inferences
):
    from napari_cellseg_trainer import devices

    released = []
    monkeypatch.setattr(devices, "release_freed_memory", lambda: released.append(1))
    layer = small_image(viewer)
    panel.set_image(layer)
    run(panel, qtbot, panel.predict_whole)
    assert len(inferences) == 1 and panel.result.complete
    assert released == [1]  # the whole volume's transient memory went back to the OS
    prob = viewer.layers[panel.layer_names()[0]].data
    labels = viewer.layers[panel.layer_names()[1]]
    panel.threshold.value = float(np.median(prob))
    cut = panel.threshold.value  # the slider's own value (it moves in steps of 0.01)
    first = labels.data.copy()
    assert np.array_equal(first, (prob > cut).astype(np.uint8)) and 0 < first.sum() < first.size
    panel.threshold.value = min(1.0, cut + 0.05)
    assert not np.array_equal(first, labels.data)
    assert len(inferences) == 1
    assert len([n for n in viewer.layers if n.name.startswith("cells ")]) == 2


def test_save_writes_what_the_cli_reproduces(panel, viewer, qtbot, tmp_path):
    layer = small_image(viewer)
    panel.set_image(layer)
    panel.form.set_value("OutputDir", str(tmp_path / "out"))
    panel.outputs.save_probability.value = True
    run(panel, qtbot, panel.predict_whole)
    panel.threshold.value = float(np.median(panel.result.probability))
    written = panel.outputs.save()
    names = sorted(p.name for p in written)
    # The image was made in napari (no file behind it): it is saved too, for the YAML.
    assert names == [
        "cells.ome.tif",
        "cells_predict.yaml",
        "cells_struct_segmentation.tiff",
        "cells_struct_segmentation_probability.tiff",
    ]
    seg_path = tmp_path / "out" / "cells_struct_segmentation.tiff"
    saved = tifffile.imread(seg_path)
    assert saved.dtype == np.uint8 and set(np.unique(saved)) <= {0, 255}
    assert np.array_equal(saved > 0, viewer.layers[panel.layer_names()[1]].data > 0)
    prob = tifffile.imread(tmp_path / "out" / "cells_struct_segmentation_probability.tiff")
    np.testing.assert_allclose(prob, panel.result.probability[0])
    # The saved prediction config reproduces the segmentation from the command line.
    seg_path.unlink()
    assert main(["predict", "--config", str(tmp_path / "out" / "cells_predict.yaml")]) == 0
    assert np.array_equal(tifffile.imread(seg_path), saved)


def test_save_refuses_a_preview_only_result(panel, viewer, qtbot, tmp_path, notes):
    panel.set_image(small_image(viewer, shape=(30, 60, 70)))
    panel.form.set_value("OutputDir", str(tmp_path / "out"))
    run(panel, qtbot, panel.preview)
    assert not panel.result.complete
    assert panel.outputs.save() == []
    assert any("Whole volume" in m for s, m in notes if s == "error")
    assert not (tmp_path / "out").exists()


def test_cancel_keeps_the_panel_usable(panel, viewer, qtbot, notes):
    panel.set_image(small_image(viewer, shape=(40, 200, 200)))
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.predict_whole() is not None
        panel.cancel()
    assert panel.result is None
    assert "cancelled" in panel.status.text()
    assert panel.whole_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_a_mismatched_checkpoint_gives_a_notification(viewer, qtbot, tmp_path, notes):
    other = tmp_path / "two_channel.pytorch"
    torch.save(build_model("unet_xy", nchannel=2).state_dict(), other)  # no config inside
    panel = PredictWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Predict")
    assert panel.load_checkpoint(other)
    assert "carries no config" in panel.status.text()
    panel.form.set_value("size_in", TILES)
    panel.form.set_value("device", "cpu")
    panel.set_image(small_image(viewer))
    run(panel, qtbot, panel.predict_whole)
    errors = [m for s, m in notes if s == "error"]
    assert errors and "does not match" in errors[-1]
    assert panel.result is None and panel.whole_button.isEnabled()


def test_training_panel_previews_the_latest_checkpoint_in_the_predict_tab(
    viewer, stand_in_checkpoint, stand_in_predictor, qtbot
):
    from napari_cellseg_trainer._qt.dock import SegmentationDock

    dock = SegmentationDock(viewer)
    viewer.window.add_dock_widget(dock, name="Segmentation")
    dock.train.form.set_value("checkpoint_dir", str(stand_in_checkpoint.parent))
    layer = small_image(viewer, shape=(6, 12, 12))
    viewer.layers.selection.active = layer
    assert dock.currentWidget() is dock.train
    with qtbot.waitSignal(dock.predict.idle, timeout=WAIT_MS):
        assert dock.train.preview_latest_checkpoint()
    assert dock.currentWidget() is dock.predict
    assert dock.predict.form.cfg.model_path == str(stand_in_checkpoint)
    assert dock.predict.result is not None and dock.predict.result.done.any()
    assert "cells probability" in viewer.layers


def test_preview_checkpoint_prefers_the_best_held_out_checkpoint(
    viewer, stand_in_checkpoint, stand_in_predictor, qtbot, tmp_path
):
    from napari_cellseg_trainer._qt.dock import SegmentationDock
    from napari_cellseg_trainer.training import events as ev

    dock = SegmentationDock(viewer)
    viewer.window.add_dock_widget(dock, name="Segmentation")
    layer = small_image(viewer, shape=(6, 12, 12))
    viewer.layers.selection.active = layer
    dock.train._on_event(ev.CheckpointSaved(2, 8, stand_in_checkpoint, best=True))
    dock.train._on_event(ev.CheckpointSaved(5, 20, tmp_path / "checkpoint_epoch_5.pytorch"))
    assert dock.train.last_checkpoint.name == "checkpoint_epoch_5.pytorch"
    with qtbot.waitSignal(dock.predict.idle, timeout=WAIT_MS):
        assert dock.train.preview_latest_checkpoint()
    assert dock.predict.form.cfg.model_path == str(stand_in_checkpoint)


def test_a_zarr_layer_is_predicted_block_by_block_into_an_ome_zarr_it_is_shown_from(
    panel, viewer, qtbot, tmp_path, notes, inferences, stand_in_checkpoint
):
    import dask.array as da
    import zarr

    data = np.random.default_rng(2).random((12, 70, 80), dtype=np.float32)
    source = zarr.create_array(
        store=str(tmp_path / "in.zarr"), shape=data.shape, chunks=(6, 35, 40), dtype="float32"
    )
    source[:] = data
    layer = viewer.add_image(source, name="big")
    assert not isinstance(layer.data, np.ndarray)  # napari keeps it on disk
    panel.set_image(layer)
    out = tmp_path / "out"
    store = out / "big_struct_segmentation.ome.zarr"
    # OutputDir is where the volume goes: without it, a notification and nothing started
    assert panel.predict_whole() is None
    assert any("OutputDir" in m for s, m in notes if s == "error")
    panel.form.set_value("OutputDir", str(out))
    # a setting that needs the whole volume in memory: refused before anything is written
    run(panel, qtbot, panel.predict_whole)  # the fixture's tiling is "established"
    assert any("tiling" in m and "blend" in m for s, m in notes if s == "error")
    assert not store.exists() and panel.result is None

    panel.form.set_value("tiling", "blend")
    run(panel, qtbot, panel.predict_whole)
    assert inferences == []  # not the in-memory route
    assert store.is_dir() and panel.result.store == store and not panel.result.in_memory
    assert any(store.name in m for s, m in notes if s == "info")
    prob_name, labels_name = panel.layer_names()
    prob, labels = viewer.layers[prob_name], viewer.layers[labels_name]
    assert isinstance(prob.data, da.Array) and isinstance(labels.data, da.Array)
    assert prob.data.shape == labels.data.shape == data.shape
    on_disk = zarr.open_array(str(store), path="0", mode="r+")
    written = on_disk[0]
    np.testing.assert_array_equal(np.asarray(prob.data), written)
    assert 0 <= written.min() and written.max() <= 1 and written.std() > 0
    # the layers read the store (nothing was loaded): a change on disk shows through them
    on_disk[0, 0] = 0.0
    assert np.asarray(prob.data[0]).max() == 0 and np.asarray(prob.data[1]).max() > 0
    on_disk[0, 0] = written[0]
    panel.threshold.value = float(np.median(written))
    cut = panel.threshold.value
    np.testing.assert_array_equal(np.asarray(labels.data), (written > cut).astype(np.uint8))
    assert not panel.outputs.save_button.isEnabled()  # already on disk
    # the same image in memory gives the same probabilities (the same tiles and weights)
    panel.set_image(viewer.add_image(data, name="in memory"))
    run(panel, qtbot, panel.predict_whole)
    assert len(inferences) == 1
    np.testing.assert_allclose(panel.result.probability[0], written, atol=1e-5)
    # the store is resumed by the weights that made it (complete: nothing computed again) ...
    panel.set_image(layer)
    on_disk[0, 0] = 0.0  # were a block computed again, this plane would be rewritten
    run(panel, qtbot, panel.predict_whole)
    assert panel.result.store == store and np.asarray(prob.data[0]).max() == 0
    on_disk[0, 0] = written[0]
    # ... and refused to other weights, which would mix two predictions in one store
    other = _other_weights(stand_in_checkpoint, tmp_path / "other.pytorch")
    assert panel.load_checkpoint(other)
    panel.form.set_value("size_in", TILES)
    run(panel, qtbot, panel.predict_whole)
    assert any("other weights" in m for s, m in notes if s == "error")
    np.testing.assert_array_equal(on_disk[0], written)


def test_a_layer_opened_from_ome_zarr_keeps_its_scale_and_name_in_the_result(
    panel, viewer, qtbot, tmp_path, notes
):
    import zarr
    from ome_zarr.writer import write_image

    from napari_cellseg_trainer.data.images import open_lazy

    data = np.random.default_rng(3).random((12, 70, 80), dtype=np.float32)
    path = tmp_path / "cells.ome.zarr"
    scale = {"z": 1.0, "y": 0.3, "x": 0.3}
    write_image(data, zarr.open_group(str(path), mode="w"), axes="zyx", scale=scale)
    (layer,) = viewer.open(str(path), plugin="napari-cellseg-trainer")
    assert layer.name == "cells" and tuple(layer.scale) == pytest.approx((1.0, 0.3, 0.3))
    panel.set_image(layer)
    panel.form.set_value("tiling", "blend")
    panel.form.set_value("OutputDir", str(tmp_path / "out"))
    run(panel, qtbot, panel.predict_whole)
    store = tmp_path / "out" / "cells_struct_segmentation.ome.zarr"
    assert panel.result.store == store
    assert panel.layer_names() == ("cells probability", "cells segmentation")
    for name in panel.layer_names():
        assert tuple(viewer.layers[name].scale) == pytest.approx((1.0, 0.3, 0.3))
    assert open_lazy(store)[1] == pytest.approx((1.0, 0.3, 0.3))  # the store's own scale
    # the store opens again as the image it was made from
    (again, *_) = viewer.open(str(store), plugin="napari-cellseg-trainer")
    assert again.name == "cells_struct_segmentation"
    assert tuple(again.scale) == pytest.approx((1.0, 0.3, 0.3))


def _other_weights(checkpoint, path):
    """A copy of ``checkpoint`` whose weights differ a little."""
    from napari_cellseg_trainer.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in loaded.model_state.items()}
    return save_checkpoint(
        path,
        model_state=state,
        optimizer_state=None,
        epoch=1,
        num_iterations=1,
        device="cpu",
        config=loaded.config,
        extra=loaded.extra,
    )


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # bioimageio.spec leaves files open
def test_export_bioimageio_writes_the_package_in_a_worker(viewer, qtbot, tmp_path, notes):
    import gc
    import warnings
    import zipfile

    from napari_cellseg_trainer import config
    from napari_cellseg_trainer.checkpoint import save_checkpoint

    pytest.importorskip("bioimageio.spec", reason="the bioimageio extra is not installed")
    cfg = config.TrainConfig()  # an untrained unet_xy: the package's content is not the point
    cfg.size_in, cfg.size_out = [32, 100, 100], [4, 12, 12]
    checkpoint = save_checkpoint(
        tmp_path / "checkpoint_epoch_1.pytorch",
        model_state=build_model("unet_xy").state_dict(),
        optimizer_state=None,
        epoch=1,
        num_iterations=1,
        device="cpu",
        config=cfg.to_dict(),
    )
    panel = PredictWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Predict")
    assert panel.load_checkpoint(checkpoint) and panel.outputs.export_button.isEnabled()
    # bad input: a notification naming the problem, nothing written
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.outputs.export_bioimageio(tmp_path / "nowhere" / "model.zip") is not None
    assert any("does not exist" in m for s, m in notes if s == "error")
    assert not (tmp_path / "nowhere").exists()
    # a path without .zip gets it; the work runs in the worker thread (the panel is busy)
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.outputs.export_bioimageio(tmp_path / "model") is not None
        assert panel.busy and not panel.outputs.export_button.isEnabled()
    package = tmp_path / "model.zip"
    with zipfile.ZipFile(package) as zipped:
        names = set(zipped.namelist())
    assert {"weights_torchscript.pt", "weights_state_dict.pt", "test_input.npy"} <= names
    assert any("model.zip" in m for s, m in notes if s == "info")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([package.name, checkpoint.name])
    with warnings.catch_warnings():  # close what bioimageio left open while it is ignored
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_evaluate_correct_and_fine_tune_work_on_the_kept_probabilities(
    panel,
    viewer,
    qtbot,
    tmp_path,
    notes,
    inferences,
    monkeypatch,
    stand_in_checkpoint,
    stand_in_network,
):
    import shutil

    from napari_cellseg_trainer._qt import results

    own = shutil.copy(stand_in_checkpoint, tmp_path / "checkpoint_epoch_1.pytorch")
    assert panel.load_checkpoint(own)  # its fine-tuned run goes beside it, in this test's folder
    panel.form.set_value("size_in", TILES)
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    panel.set_image(viewer.layers["sample filaments"])
    tools = panel.results
    assert tools.evaluate() is None  # nothing segmented yet: said, not raised
    assert any("segment the whole volume first" in m for s, m in notes if s == "error")
    run(panel, qtbot, panel.predict_whole)
    # scores against the ground truth, the errors coloured in their own layer
    tools.truth.value = viewer.layers["sample filaments ground truth"]
    tools.show_errors.value = True
    scores = tools.evaluate()
    assert scores is not None and "IoU" in tools.figures.text()
    errors = viewer.layers["sample filaments errors"]
    assert set(np.unique(errors.data)) <= {0, 1, 2} and errors.data.any()
    # instances from the same probabilities; a new parameter redraws them, no new inference
    instances = tools.make_instances()
    assert instances is not None and viewer.layers["sample filaments instances"].data.max() >= 1
    tools.min_size.value = 10**6  # every object is smaller: none is left
    assert viewer.layers["sample filaments instances"].data.max() == 0
    assert len(inferences) == 1
    # correct: the segmentation as labels to paint on; fine-tune on it, then segment again
    corrected = tools.make_editable()
    assert corrected.mode == "paint" and viewer.layers.selection.active is corrected
    monkeypatch.setattr(results, "FINE_TUNE_MINUTES", 0.05)  # 3 s of stand-in steps
    idles = []
    panel.idle.connect(lambda: idles.append(1))  # before the wait's own slot: counted first
    with qtbot.waitSignal(
        panel.idle, timeout=WAIT_MS, check_params_cb=lambda *_: len(idles) == 2
    ):  # the fine-tuning, then the new segmentation
        assert tools.fine_tune() is not None
    tuned = Path(panel.form.cfg.model_path)
    assert tuned != own and tuned.is_file() and tuned.parent.parent == tmp_path
    assert len(inferences) == 2 and panel.result.complete
    assert tools.before and "IoU" in tools.before[0]  # the scores before, to compare
    assert any("fine-tuned" in m for s, m in notes if s == "info")


def test_a_volume_unlike_the_training_data_is_warned_beside_the_preview(
    panel, viewer, qtbot, notes
):
    from napari_cellseg_trainer.data import make_sample

    like_training, _, _ = make_sample("filaments", (9, 60, 70), seed=5)
    viewer.add_image(like_training, name="like")
    panel.set_image(viewer.layers["like"])
    run(panel, qtbot, panel.preview)
    assert panel.shift_label.isHidden()
    bright = viewer.add_image(np.sqrt(np.sqrt(like_training + 0.2)), name="bright")
    panel.set_image(bright)
    run(panel, qtbot, panel.preview)
    assert not panel.shift_label.isHidden() and "percentile" in panel.shift_label.text()
    assert any("differ from the training data" in message for _, message in notes)
    panel.set_image(viewer.layers["like"])
    run(panel, qtbot, panel.preview)
    assert panel.shift_label.isHidden()  # cleared by the next prediction
    clipped = viewer.add_image(np.minimum(like_training, np.median(like_training)), name="clip")
    panel.set_image(clipped)
    run(panel, qtbot, panel.preview)
    said = panel.shift_label.text().split("\n")  # each warning a line of its own
    assert any("voxels lie at its maximum" in line and "lower gain" in line for line in said)
    assert all(line.startswith("⚠ ") for line in said)
    assert any("detector saturated" in message for _, message in notes)


def test_a_starter_button_loads_the_starter_model(viewer, notes):
    from napari_cellseg_trainer.config.starters import STARTERS

    widget = PredictWidget(viewer)
    installed = [s for s in STARTERS.values() if s.installed]
    assert installed, "the starters ship with the package"
    for starter in installed:
        (button,) = [
            b for b in widget.findChildren(QPushButton) if b.text() == f"Starter: {starter.name}"
        ]
        button.click()
        cfg = widget.form.cfg
        assert cfg.model_path == starter.reference and cfg.model.name == starter.model
        assert cfg.Normalization == 22 and "recipe 22" in widget.status.text()
