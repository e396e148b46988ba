"""The plugin's dock in a real viewer: it fits the screen and guides the user through their data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from qtpy.QtWidgets import QApplication, QScrollArea
from superqt import QCollapsible

from napari_cellseg_trainer import config
from napari_cellseg_trainer._qt.dock import SegmentationDock
from napari_cellseg_trainer._qt.preview import FRAMES, NAMES
from napari_cellseg_trainer.training.events import PreviewPatch

pytestmark = pytest.mark.gui
WAIT_MS = 120_000


@pytest.fixture
def dock(make_napari_viewer) -> SegmentationDock:
    viewer = make_napari_viewer(show=True)
    widget = SegmentationDock(viewer)
    viewer.window.add_dock_widget(widget, name="Segmentation", area="right")
    yield widget
    widget.train.shutdown()


def _settle() -> None:
    for _ in range(5):
        QApplication.processEvents()


def test_at_1280_by_800_with_every_panel_open_the_window_fits_and_nothing_scrolls_sideways(dock):
    window = dock.viewer.window._qt_window
    window.resize(1280, 800)
    dock.viewer.open_sample("napari-cellseg-trainer", "filaments")
    for tab in (dock.predict, dock.train):
        dock.setCurrentWidget(tab)
        sections = tab.findChildren(QCollapsible)
        assert len(sections) >= 5, tab
        for section in sections:  # every group of the form, the layer sets, the result tools
            section.expand(animate=False)
        _settle()
        assert all(section.isExpanded() for section in sections)
        assert window.width() <= 1280 and window.height() <= 800, window.size()
        for area in tab.findChildren(QScrollArea):
            bar = area.horizontalScrollBar()
            assert not bar.isVisible() and bar.maximum() == 0, tab
            content = area.widget()
            assert content.width() <= area.viewport().width()
            # nothing is cut off at the right either: the content fits at its smallest
            assert content.minimumSizeHint().width() <= area.viewport().width(), tab
        # the canvas keeps most of the window: the dock never widens it
        assert dock.width() <= 420, dock.width()
    # the controls that matter are reachable: inside their scrolling area, not cut off
    assert dock.predict.outputs.save_button.isVisibleTo(dock.predict)
    assert dock.predict.outputs.export_button.isVisibleTo(dock.predict)


def test_previews_are_framed_titled_and_in_the_cameras_view(dock):
    viewer = dock.viewer
    viewer.window._qt_window.resize(1280, 800)
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    _settle()
    previews = dock.train.previews
    shape = (4, 12, 12)
    previews.prepare(shape)
    rng = np.random.default_rng(0)
    patch = PreviewPatch(
        0,
        7,
        rng.random(shape, dtype=np.float32),
        np.ones(shape, np.uint8),
        rng.random(shape, dtype=np.float32),
    )
    previews.show(patch)
    _settle()
    canvas = viewer.window._qt_viewer.canvas.size
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    center, zoom = np.array(camera.center[-2:]), camera.zoom
    half = np.array([canvas[1], canvas[0]]) / zoom / 2  # world units (y, x) of half the canvas
    low, high = center - half, center + half
    for name in NAMES:
        extent = viewer.layers[name].extent.world[:, -2:]
        assert (extent[0] >= low - 1).all() and (extent[1] <= high + 1).all(), name
        size = extent[1] - extent[0]
        assert size.min() * zoom > 80  # magnified: a good part of the canvas, not 12 pixels
    titles = list(viewer.layers[FRAMES].features["title"])
    assert titles == ["input", "ground truth", "probability\niteration 7"]
    # each frame lies around its patch: its voxel centres, and half a voxel either side
    for box, name in zip(viewer.layers[FRAMES].data, NAMES, strict=True):
        layer = viewer.layers[name]
        centres, half = layer.extent.world[:, -2:], np.asarray(layer.scale[-2:]) / 2
        edges = [centres[0] - half, centres[1] + half]
        np.testing.assert_allclose([box.min(axis=0), box.max(axis=0)], edges, atol=1e-6)
    xs = [viewer.layers[n].translate[-1] for n in NAMES]
    assert xs == sorted(xs) and xs[0] > viewer.layers["sample filaments"].extent.world[1][-1]


def test_an_integer_image_is_offered_as_ground_truth_and_becomes_labels(dock, notes):
    viewer = dock.viewer
    raw = np.random.default_rng(0).random((8, 40, 40), dtype=np.float32)
    instances = np.zeros((8, 40, 40), np.uint16)
    instances[:, 5:15, 5:15], instances[:, 20:30, 20:30] = 3, 7  # two objects, labelled 3 and 7
    viewer.add_image(raw, name="cells")
    viewer.add_image(instances, name="cells_labels")  # napari's own reader makes it an Image
    sets = dock.train.layer_data
    row = sets.rows[0]
    assert "cells_labels" in [name for name, _ in sets.labels_choices()]
    assert "cells_labels" in [name for name, _ in dock.predict.results._truths()]  # evaluate too
    assert "cells" not in [name for name, _ in sets.labels_choices()]  # a float image is not
    row.image.value, row.labels.value = viewer.layers["cells"], viewer.layers["cells_labels"]
    assert "2 labels (instances)" in sets.note.text() and "Image layer" in sets.note.text()
    (made,) = sets.sets()
    assert set(np.unique(made.label)) == {0, 3, 7}
    labels = sets.convert_ground_truth()
    assert labels.__class__.__name__ == "Labels" and row.labels.value is labels
    assert not viewer.layers["cells_labels"].visible


def test_the_reader_opens_label_files_as_labels_with_their_voxel_size(dock, tmp_path):
    path = tmp_path / "nuclei_labels.ome.tif"
    data = np.zeros((6, 20, 20), np.uint16)
    data[2:4, 5:10, 5:10] = 4
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5}
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    (layer,) = dock.viewer.open(path, plugin="napari-cellseg-trainer")
    assert layer.__class__.__name__ == "Labels" and layer.name == "nuclei_labels"
    assert tuple(layer.scale) == pytest.approx((0.5, 0.2, 0.2))
    np.testing.assert_array_equal(layer.data, data)


def test_export_from_layers_writes_the_folder_the_cli_then_trains_on(
    dock, tiny_config, tmp_path, stand_in_network, monkeypatch
):
    from napari_cellseg_trainer.cli import main
    from napari_cellseg_trainer.data import images_from_layers
    from napari_cellseg_trainer.training import run

    viewer = dock.viewer
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    panel = dock.train
    cfg = tiny_config.copy()
    cfg.loader.datafolder, cfg.epochs = "", 1  # no folder: the layers are the data
    panel.form.set_config(cfg)
    panel.layer_data.use_pair(
        viewer.layers["sample filaments"], viewer.layers["sample filaments ground truth"]
    )
    path = panel.tools.export_yaml(tmp_path / "train.yaml")
    assert path is not None
    saved = config.load_config(path)
    folder = Path(saved.loader.datafolder)
    assert folder == tmp_path / "train_data" and folder.is_dir()
    # What `cellseg-trainer train --config train.yaml` trains on ...
    trained_on = []
    prepared = run.prepared_images

    def spy(run_cfg, images):
        out = prepared(run_cfg, images)
        trained_on.append(out[0])
        return out

    monkeypatch.setattr(run, "prepared_images", spy)
    assert main(["train", "--config", str(path)]) == 0
    assert list(Path(saved.checkpoint_dir).rglob("checkpoint_epoch_1.pytorch"))
    # ... is what the panel trains on from the layers (read from the folder, not the layers)
    (from_cli,) = trained_on[0]
    recipe = 0 if cfg.normalization is None else cfg.normalization
    layers = images_from_layers(panel.layer_data.sets(), 1, 2, cfg.size_out, recipe)
    (from_panel,) = prepared(saved, layers)[0]
    assert str(folder) in str(from_cli.source) and str(folder) not in str(from_panel.source)
    np.testing.assert_array_equal(from_cli.raw, from_panel.raw)
    np.testing.assert_array_equal(from_cli.label, from_panel.label)
    np.testing.assert_array_equal(from_cli.costmap, from_panel.costmap)


def test_a_failed_import_keeps_the_forms_values_and_waits_to_train(
    dock, tiny_config, tmp_path, notes
):
    panel = dock.train
    cfg = tiny_config.copy()
    cfg.learning_rate, cfg.validation.leaveout = 3e-4, [0]
    panel.form.set_config(cfg)
    assert panel.train_button.isEnabled()
    bad = tmp_path / "bad.yaml"
    text = config.dump_config(cfg).replace("learning_rate: 0.0003", "learning_rate: fast")
    bad.write_text(text.replace("epochs: 2", "epochs: 7"))
    problems = panel.tools.import_yaml(bad)
    assert [p.key for p in problems] == ["learning_rate"]
    assert panel.form.cfg.learning_rate == pytest.approx(3e-4)  # kept, not the default 1e-5
    assert panel.form.cfg.epochs == 7  # what could be read was read
    assert not panel.train_button.isEnabled() and "learning_rate" in panel.train_button.toolTip()
    assert panel.form.editors["learning_rate"].error
    panel.form.set_value("learning_rate", "1e-4")
    assert "learning_rate" not in panel.train_button.toolTip()
    # a round trip keeps the types: leaveout [0] stays [0], not [0.0]
    path = panel.tools.export_yaml(tmp_path / "again.yaml")
    assert "leaveout: [0]" in path.read_text()


def test_required_fields_are_not_red_before_anything_was_asked(dock):
    form = dock.predict.form
    editor = form.editors["OutputDir"]
    assert not editor.error and "is required" not in form.problem_label.text()
    assert "OutputDir" in {p.key for p in form.problems()}  # still a problem for Save


def test_train_offers_the_open_layers_when_there_is_no_data_folder(
    dock, tiny_config, qtbot, stand_in_network, tmp_path
):
    viewer = dock.viewer
    panel = dock.train
    cfg = tiny_config.copy()
    cfg.loader.datafolder, cfg.epochs = "", 1
    panel.form.set_config(cfg)
    assert not panel.offer_button.isVisibleTo(panel)
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    assert panel.offer_button.isVisibleTo(panel)
    assert "'sample filaments' (image)" in panel.offer_label.text()
    assert "'sample filaments ground truth' (ground truth)" in panel.offer_label.text()
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.train_on_suggested_layers() is not None
    assert panel.layer_data.use_layers.value
    assert panel.last_checkpoint is not None and panel.last_checkpoint.exists()
