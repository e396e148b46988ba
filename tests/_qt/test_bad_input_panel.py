"""Bad input in the training panel: a notification naming the key or file, panel still usable.

The same counted cases as the command line's test (tests/bad_inputs.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_inputs import CONFIG_CASES, DATA_CASES, broken_config, broken_folder, config_ids, data_ids
from napari_cellseg_trainer._qt.train_widget import TrainWidget

pytestmark = pytest.mark.gui
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def shared_panel(qapp):
    """One viewer and panel for all cases (making and closing a viewer costs ~2 s a case)."""
    import gc

    import napari

    with pytest.MonkeyPatch.context() as patch:  # as make_napari_viewer: no status thread
        patch.setattr("napari._qt.threads.status_checker.StatusChecker.start", lambda *_: None)
        viewer = napari.Viewer(show=False, show_welcome_screen=False)
        widget = TrainWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Train")
        yield widget
        widget.shutdown()
        viewer.close()
        del viewer, widget
        gc.collect()  # the next module's make_napari_viewer finds no viewer left


@pytest.fixture
def panel(shared_panel) -> TrainWidget:
    """The shared panel, its form back to the defaults; no run may outlive a case."""
    shared_panel.tools.reset()
    yield shared_panel
    assert not shared_panel.busy


def usable(panel: TrainWidget) -> bool:
    return not panel.training and panel.tools.import_button.isEnabled() and panel.form.isEnabled()


@pytest.mark.parametrize("case", range(len(CONFIG_CASES)), ids=config_ids())
def test_bad_config_is_notified_with_its_key(case, panel, tiny_config, tmp_path, notes):
    path, key = broken_config(tiny_config, case, tmp_path)
    problems = panel.tools.import_yaml(path)
    if not problems:  # a path problem: found when Train is clicked
        assert panel.start_training() is None
    messages = [m for s, m in notes if s in ("error", "warning")]
    assert messages and key in messages[-1] and "Traceback" not in messages[-1]
    assert usable(panel)
    assert not list(Path(tmp_path).rglob("*.pytorch"))


@pytest.mark.parametrize("case", range(len(DATA_CASES)), ids=data_ids())
def test_bad_training_folder_is_notified_with_its_file(
    case, panel, tiny_config, tmp_path, qtbot, notes
):
    folder, named = broken_folder(tmp_path, case)
    tiny_config.loader.datafolder = str(folder)
    panel.form.set_config(tiny_config)
    with qtbot.waitSignal(panel.idle, timeout=WAIT_MS):
        assert panel.start_training() is not None
    errors = [m for s, m in notes if s == "error"]
    assert errors and named in errors[-1] and "Traceback" not in errors[-1]
    assert usable(panel)
    assert not list(Path(tmp_path).rglob("*.pytorch"))
