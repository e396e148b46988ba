"""The prediction panel in a real napari viewer (run under Xvfb by scripts/test.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

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
