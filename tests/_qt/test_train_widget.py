"""The training panel in a real napari viewer (run under Xvfb by scripts/test.sh)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from qtpy.QtGui import QImage

from napari_cellseg_trainer import config
from napari_cellseg_trainer._qt.preview import FRAMES, NAMES
from napari_cellseg_trainer._qt.train_widget import TrainWidget
from napari_cellseg_trainer.checkpoint import load_checkpoint
from napari_cellseg_trainer.devices import threads_sparing_a_core
from napari_cellseg_trainer.training.events import IterationEnd
from napari_cellseg_trainer.training.metrics import read_metrics

pytestmark = pytest.mark.gui

WAIT_MS = 120_000  # generous: one tiny step is ~3 s on 2 cores, and the first also draws a buffer


@pytest.fixture
def panel(make_napari_viewer, qtbot) -> TrainWidget:
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    yield widget
    widget.shutdown()


def test_form_lists_every_field_with_tooltip_and_kind(panel):
    specs = config.fields(config.TrainConfig)
    assert set(panel.form.editors) == {s.key for s in specs}
    for spec in specs:
        editor = panel.form.editors[spec.key]
        tip = editor.widget.tooltip
        # A field with a problem (checkpoint_dir is empty by default) shows it above the help.
        assert tip.endswith(spec.tooltip()), spec.key
        assert spec.tooltip().startswith(f"{spec.kind.value} {spec.kind.meaning}")
        assert spec.help in tip, spec.key
        assert editor.widget.label.startswith(spec.kind.value), spec.key


def test_groups_and_zoom_ratio_visibility(panel):
    form = panel.form
    assert list(form.sections)[:6] == [
        "model",
        "patch size",
        "training",
        "data",
        "learning",
        "validation",
    ]
    assert not form.sections["validation"].isExpanded()
    assert not form.sections["learning"].isExpanded()
    assert form.sections["model"].isExpanded()
    zoom = form.editors["model.zoom_ratio"].widget.native
    assert zoom.isHidden()
    form.set_value("model.name", "unet_xy_zoom")
    assert not zoom.isHidden()
    form.set_value("model.name", "unet_xy")
    assert zoom.isHidden()


def test_size_out_follows_size_in_and_an_invalid_size_is_flagged(panel):
    form = panel.form
    form.set_value("checkpoint_dir", "ck")
    form.set_value("loader.datafolder", "data")
    form.set_value("size_in", [48, 148, 148])
    assert form.editors["size_out"].widget.value == "20, 60, 60"
    assert form.cfg.size_out == [20, 60, 60]
    assert panel.train_button.isEnabled()

    form.set_value("size_in", [48, 150, 150])
    problems = {p.key: p.message for p in form.problems()}
    assert "nearest valid: [48, 148, 148] or [48, 156, 156]" in problems["size_in"]
    assert form.editors["size_in"].error
    assert "[48, 148, 148]" in form.editors["size_in"].widget.tooltip
    assert form.editors["size_out"].widget.value == ""
    assert not panel.train_button.isEnabled()

    form.set_value("model.name", "unet_xy_zoom")
    form.set_value("model.zoom_ratio", 3)
    form.set_value("size_in", [52, 420, 420])
    assert form.editors["size_out"].widget.value == "20, 152, 152"
    assert not form.problems()


def test_a_value_that_does_not_convert_is_marked_and_not_written(panel):
    form = panel.form
    before = form.cfg.learning_rate
    form.set_value("learning_rate", "fast")
    assert form.cfg.learning_rate == before
    assert "learning_rate" in {p.key for p in form.problems()}
    form.set_value("learning_rate", "1e-4")
    assert form.cfg.learning_rate == pytest.approx(1e-4)
    assert "learning_rate" not in {p.key for p in form.problems()}


def test_export_import_round_trip(panel, tmp_path, notes):
    form = panel.form
    wanted = config.demo_config(str(tmp_path / "data"), str(tmp_path / "ck"))
    wanted.loss.ignore_index = 255
    wanted.validation.metric = "default"
    wanted.validation.leaveout = [0.25]
    wanted.seed = None
    form.set_config(wanted)
    assert form.cfg == wanted
    path = panel.tools.export_yaml(tmp_path / "train.yaml")
    assert path is not None
    # The file is in the established layout and loads from the CLI's loader unchanged.
    data = yaml.safe_load(path.read_text())
    assert data["loader"]["PatchPerBuffer"] == 20 and data["model"]["name"] == "unet_xy"
    assert config.load_config(path) == wanted

    panel.tools.reset()
    assert form.cfg == config.TrainConfig()
    assert panel.tools.import_yaml(path) == []
    assert form.cfg == wanted
    # The widgets show the imported values, not just the object.
    assert form.editors["loss.ignore_index"].widget.value == "255"
    assert form.editors["validation.leaveout"].widget.value == "0.25"
    assert form.editors["loader.datafolder"].read() == str(tmp_path / "data")


def test_import_reports_every_problem_and_keeps_the_panel_usable(panel, tmp_path, notes):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\nloader:\n  batch_sise: 4\nsize_in: [48, 148, 148]\n")
    problems = panel.tools.import_yaml(bad)
    assert {"epochs", "loader.batch_sise"} <= {p.key for p in problems}
    assert any("batch_sise" in m and "did you mean" in m for _, m in notes)
    assert panel.form.cfg.epochs == config.TrainConfig().epochs
    panel.tools.import_yaml(tmp_path / "missing.yaml")
    assert any("does not exist" in m for _, m in notes)
    assert panel.tools.import_button.isEnabled()


def test_export_refuses_a_config_with_problems(panel, tmp_path, notes):
    panel.form.set_value("size_in", [48, 150, 150])
    assert panel.tools.export_yaml(tmp_path / "x.yaml") is None
    assert not (tmp_path / "x.yaml").exists()
    assert any("size_in" in m for _, m in notes)


def _tiny(panel: TrainWidget, tiny_config: config.TrainConfig, epochs: int) -> config.TrainConfig:
    cfg = tiny_config.copy()
    cfg.epochs = epochs
    cfg.save_every_n_epoch = 1000  # only the stop checkpoint
    panel.form.set_config(cfg)
    assert panel.form.problems() == []
    return cfg


def test_train_streams_loss_and_previews_then_stop_saves_a_checkpoint(
    panel, tiny_config, qtbot, notes, monkeypatch, stand_in_network
):
    from napari_cellseg_trainer.training import session

    released = []
    # where the session calls it (it imported the name; patching ``devices`` would miss it)
    monkeypatch.setattr(session, "release_freed_memory", lambda: released.append(1))
    cfg = _tiny(panel, tiny_config, epochs=1000)
    viewer = panel.viewer
    snapshots: list[np.ndarray] = []

    def enough_previews() -> bool:
        """Three different probability patches seen (each preview changes the layer's data)."""
        data = viewer.layers[NAMES[2]].data if NAMES[2] in viewer.layers else None
        if data is not None and data.any():
            if not snapshots or not np.array_equal(snapshots[-1], data):
                snapshots.append(np.array(data))
        return len(snapshots) >= 3

    worker = panel.start_training()
    assert worker is not None and panel.training
    # The preview layers are added on Train, empty, so no layer is added (a freeze) mid-run.
    assert [viewer.layers[n].data.shape for n in NAMES] == [tuple(cfg.size_out)] * 3
    assert not panel.train_button.isEnabled() and panel.stop_button.isEnabled()
    assert not panel.form.isEnabled()
    # each event is drawn by the panel before the test's check of it runs (connected later)
    with qtbot.waitSignal(
        worker.yielded,
        timeout=WAIT_MS,
        check_params_cb=lambda _: enough_previews() and bool(panel.plot.history.epoch_loss),
    ):
        pass
    # Loss points reached the plot; the three preview layers exist once each and change in place.
    assert len(panel.plot.history.iteration_loss) >= 3
    assert all(np.isfinite(panel.plot.history.iteration_loss))
    assert [n for n in viewer.layers if n.name.startswith("preview")] == [
        viewer.layers[n] for n in (*NAMES, FRAMES)
    ]
    assert not np.array_equal(snapshots[0], snapshots[-1])
    xs = [viewer.layers[n].translate[-1] for n in NAMES]
    assert xs[0] < xs[1] < xs[2]
    # torch leaves a core to napari's event loop from 4 cores up
    threads = threads_sparing_a_core("cpu") or torch.get_num_threads()
    assert f"cpu ({threads} thread" in panel.device_label.text()
    assert "ETA" in panel.status.text() and panel.progress.value() > 0

    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        panel.stop_training()
    assert not panel.training and panel.train_button.isEnabled()
    assert released == [1]  # the run's memory went back to the OS once, napari lives on
    saved = sorted(Path(cfg.checkpoint_dir).glob("checkpoint_epoch_*.pytorch"))
    assert saved and panel.last_checkpoint == saved[-1]
    assert load_checkpoint(saved[-1]).model_state
    rows = read_metrics(Path(cfg.checkpoint_dir) / "metrics.csv")  # one row per epoch ended
    assert len(rows) == len(panel.plot.history.epoch_loss) >= 1
    assert any("checkpoint saved" in m for _, m in notes)
    png = panel.plot.save_png(Path(cfg.checkpoint_dir) / "panel_curve.png")
    assert png.stat().st_size > 1000


def test_an_error_inside_training_becomes_a_notification(
    panel, tiny_config, tmp_path, qtbot, notes, stand_in_network
):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.ome.tif", "a_GT.ome.tif", "a_CM.ome.tif"):
        (broken / name).write_bytes(b"not a tiff")
    cfg = _tiny(panel, tiny_config, epochs=1)
    panel.form.set_value("loader.datafolder", str(broken))
    worker = panel.start_training()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    errors = [m for s, m in notes if s == "error"]
    assert errors and "a.ome.tif" in errors[-1]
    assert "Traceback" not in errors[-1]
    assert panel.train_button.isEnabled() and panel.form.isEnabled()
    assert not list(Path(cfg.checkpoint_dir).glob("*.pytorch"))


def test_train_refuses_a_missing_folder_with_a_notification(panel, tiny_config, tmp_path, notes):
    _tiny(panel, tiny_config, epochs=1)
    panel.form.set_value("loader.datafolder", str(tmp_path / "nowhere"))
    assert panel.start_training() is None
    assert any("loader.datafolder" in m for s, m in notes if s == "error")
    assert not panel.training


def test_closing_napari_during_training_stops_it_with_a_checkpoint(
    panel, tiny_config, qtbot, stand_in_network
):
    cfg = _tiny(panel, tiny_config, epochs=1000)
    with qtbot.waitSignal(
        panel.start_training().yielded,
        timeout=WAIT_MS,
        check_params_cb=lambda event: isinstance(event, IterationEnd),
    ):
        pass
    assert panel.training and not panel._done.is_set()  # closed while it runs
    panel.viewer.close()
    assert panel._done.is_set()
    assert list(Path(cfg.checkpoint_dir).glob("checkpoint_epoch_*.pytorch"))


def test_sample_preset_writes_the_sample_folder_once(panel, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    panel.tools.use_sample_preset()
    cfg = panel.form.cfg
    assert panel.form.problems() == []
    assert config.check_paths(cfg) == []
    assert len(list(Path(cfg.loader.datafolder).glob("*.ome.tif"))) == 9
    assert cfg.size_in == [32, 100, 100]


def test_napari_finds_the_panel_and_the_sample_data(make_napari_viewer, tmp_path, monkeypatch):
    """What scripts/launch_napari.py does: npe2 manifest -> dock widget and sample layers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    assert [layer.__class__.__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert viewer.layers[0].data.shape == viewer.layers[1].data.shape == (32, 128, 128)
    assert set(np.unique(viewer.layers[1].data)) == {0, 1}
    _, dock = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Segmentation (Train · Predict)"
    )
    panel = dock.train
    assert isinstance(panel, TrainWidget)
    panel.tools.use_sample_preset()
    assert panel.train_button.isEnabled()
    # The layers show image 0 of the folder the preset trains on.
    from napari_cellseg_trainer.data import load_folder

    images = load_folder(panel.form.cfg.loader.datafolder, 1, 2, [4, 12, 12])
    assert np.array_equal(images[0].label, viewer.layers[1].data)


def test_train_from_layers_without_a_data_folder(
    panel, tiny_config, tmp_path, qtbot, stand_in_network
):
    cfg = _tiny(panel, tiny_config, epochs=1)
    panel.form.set_value("loader.datafolder", str(tmp_path / "no_such_folder"))
    viewer = panel.viewer
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    row = panel.layer_data.rows[0]
    row.image.value = viewer.layers["sample filaments"]
    row.labels.value = viewer.layers["sample filaments ground truth"]
    panel.layer_data.use_layers.value = True
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.start_training() is not None
    assert panel.plot.history.iteration_loss  # it trained on the layers
    assert list(Path(cfg.checkpoint_dir).glob("checkpoint_epoch_1.pytorch"))


def test_layer_sets_export_as_a_training_folder_the_cli_reads(panel, tmp_path, notes):
    from napari_cellseg_trainer.data import load_folder

    viewer = panel.viewer
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    gt = viewer.layers["sample filaments ground truth"]
    mask = np.zeros(gt.data.shape, np.uint8)
    mask[:, :10] = 1
    viewer.add_labels(mask, name="leave out")
    row = panel.layer_data.rows[0]
    row.image.value = viewer.layers["sample filaments"]
    row.labels.value, row.exclude.value = gt, viewer.layers["leave out"]
    paths = panel.layer_data.export(tmp_path / "folder")
    assert sorted(p.name for p in paths) == [
        "sample_filaments.ome.tif",
        "sample_filaments_CM.ome.tif",
        "sample_filaments_GT.ome.tif",
    ]
    (image,) = load_folder(tmp_path / "folder", 1, 2, [4, 12, 12])
    assert (image.costmap[:, :10] == 0).all() and image.costmap[:, 10:].min() == 1
    assert any("wrote 3 files" in m for _, m in notes)
    panel.layer_data.rows[0].labels.value = None
    assert panel.layer_data.export(tmp_path / "again") == []
    assert any("choose an image and its ground truth" in m for s, m in notes if s == "error")


def test_zoom_suggestion_from_a_labels_layer_sets_the_model(panel, notes):
    viewer = panel.viewer
    labels = np.zeros((8, 700, 700), np.uint8)
    yy, xx = np.ogrid[:700, :700]
    labels[:, (yy - 350) ** 2 + (xx - 350) ** 2 <= 225**2] = 1  # one disc, 450 voxels across
    viewer.add_image(np.random.default_rng(0).random(labels.shape, dtype=np.float32), name="big")
    panel.layer_data.rows[0].labels.value = viewer.add_labels(labels, name="nuclei")
    advice = panel.layer_data.suggest()
    assert advice is not None and (advice.model, advice.zoom_ratio) == ("unet_xy_zoom", 3)
    cfg = panel.form.cfg
    assert (cfg.model.name, cfg.model.zoom_ratio, cfg.size_in) == (
        "unet_xy_zoom",
        3,
        [52, 420, 420],
    )
    assert "size_in" not in {p.key for p in panel.form.problems()}
    assert any("zoom_ratio 3" in m for _, m in notes)


def test_advise_sizes_fills_size_and_batch_for_a_budget(
    panel, qtbot, notes, stand_in_network, tmp_path, monkeypatch
):
    from napari_cellseg_trainer.models.memory import advise

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the step probe's cache: the test's own
    expected = advise("unet_xy", 8 * 2**30, 3, 1)
    assert list(expected.size_in) != panel.form.cfg.size_in  # the advice changes the form
    panel.tools.memory_box.setText("8GB")
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.tools.advise_sizes() is not None
    cfg = panel.form.cfg
    assert (cfg.size_in, cfg.size_out, cfg.loader.batch_size) == (
        list(expected.size_in),
        list(expected.size_out),
        expected.batch_size,
    )
    assert panel.form.editors["size_out"].widget.value == ", ".join(map(str, expected.size_out))
    assert "an iteration" in panel.status.text()  # the time from the probe of real steps
    assert any("sizes set by the advisor" in m for s, m in notes)
    panel.tools.memory_box.setText("lots")
    assert panel.tools.advise_sizes() is None  # refused at once: no worker started
    assert any("expected a size like 8GB" in m for s, m in notes if s == "error")
    assert cfg.size_in == list(expected.size_in) and not panel.busy


def test_the_loss_curve_is_drawn_outside_the_gui_thread(panel, qtbot, monkeypatch, tmp_path):
    from napari_cellseg_trainer._qt import loss_plot
    from napari_cellseg_trainer.training.events import EpochEnd, IterationEnd

    drawn: list[tuple[str, int]] = []  # (thread, points) of each drawing
    draw = loss_plot._draw

    def spy(*args):
        image = draw(*args)
        drawn.append((threading.current_thread().name, len(args[3].iterations)))
        return image

    monkeypatch.setattr(loss_plot, "_draw", spy)
    plot = panel.plot
    # the drawing of all 20 points reaches the GUI thread (queued from the drawing thread)
    # (queued: the plot's own slot, connected first, has shown the image when this one runs)
    with qtbot.waitSignal(
        plot._drawn, timeout=10_000, check_params_cb=lambda _: drawn[-1][1] == 20
    ):
        for i in range(1, 21):
            plot.add(IterationEnd(0, i, 2.0 / i, 0.1))
        plot.add(EpochEnd(1, 1.0, 20, 2.0))  # an epoch end is drawn at once, never held back
    assert {thread for thread, _ in drawn} == {"loss-plot"}
    image = plot.view._image
    assert image is not None and image.width() >= 50 and image.height() >= 50
    # the drawing has curves in it, not only a blank figure
    gray = QImage.convertToFormat(image, QImage.Format.Format_Grayscale8)
    pixels = np.frombuffer(gray.constBits().asstring(gray.sizeInBytes()), np.uint8)
    assert pixels.min() < 128 and pixels.max() == 255
    assert plot.save_png(tmp_path / "curve.png").stat().st_size > 1000


def test_start_from_chooses_the_starter_random_weights_or_a_checkpoint(
    panel, tmp_path, monkeypatch
):
    from napari_cellseg_trainer._qt import train_tools
    from napari_cellseg_trainer.config.starters import STARTERS

    tools = panel.tools
    panel.form.set_value("model.name", "unet_xy_zoom")
    tools.start_box.activated.emit(0)  # the starter model
    cfg = panel.form.cfg
    if STARTERS["nuclei"].installed:
        assert cfg.finetune_from == "starter:nuclei" and cfg.normalization == 26
        assert "starting from starter:nuclei" in panel.status.text()
    panel.form.set_value("model.zoom_ratio", 2)
    tools.start_box.activated.emit(0)
    assert panel.form.cfg.finetune_from is None
    assert "no starter model fits" in panel.status.text()
    checkpoint = tmp_path / "mine.pytorch"
    checkpoint.write_bytes(b"x")
    monkeypatch.setattr(
        train_tools.QFileDialog, "getOpenFileName", lambda *a, **k: (str(checkpoint), "")
    )
    tools.start_box.activated.emit(2)
    assert panel.form.cfg.finetune_from == str(checkpoint)
    assert tools.start_box.currentIndex() == 2
    tools.start_box.activated.emit(1)
    assert panel.form.cfg.finetune_from is None and "random weights" in panel.status.text()
    monkeypatch.setattr(train_tools.QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    tools.start_box.activated.emit(2)  # cancelled: stays on random weights
    assert tools.start_box.currentIndex() == 1 and panel.form.cfg.finetune_from is None
