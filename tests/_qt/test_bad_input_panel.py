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


@pytest.fixture
def panel(make_napari_viewer) -> TrainWidget:
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return widget


def usable(panel: TrainWidget) -> bool:
    return not panel.training and panel.import_button.isEnabled() and panel.form.isEnabled()


@pytest.mark.parametrize("case", range(len(CONFIG_CASES)), ids=config_ids())
def test_bad_config_is_notified_with_its_key(case, panel, tiny_config, tmp_path, notes):
    path, key = broken_config(tiny_config, case, tmp_path)
    problems = panel.import_yaml(path)
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
    assert panel.start_training() is not None
    qtbot.waitUntil(lambda: not panel.training, timeout=WAIT_MS)
    errors = [m for s, m in notes if s == "error"]
    assert errors and named in errors[-1] and "Traceback" not in errors[-1]
    assert usable(panel)
    assert not list(Path(tmp_path).rglob("*.pytorch"))
