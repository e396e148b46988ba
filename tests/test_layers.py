"""The core (config, models, data, training, inference, CLI) never imports Qt, napari or magicgui."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import napari_cellseg_trainer

PACKAGE = Path(napari_cellseg_trainer.__file__).parent
GUI_ROOTS = {
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "napari",
    "magicgui",
    "superqt",
    "vispy",
}
GUI_PLACES = ("_qt", "_sample_data.py")


def _core_modules() -> list[Path]:
    return [
        p
        for p in PACKAGE.rglob("*.py")
        if not any(part in GUI_PLACES for part in p.relative_to(PACKAGE).parts)
    ]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_sources_import_no_gui_package():
    modules = _core_modules()
    assert len(modules) > 15
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & GUI_ROOTS) for p in modules
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _loaded_after_import(modules: list[str], watched: set[str]) -> list[str]:
    """Which of ``watched`` (or their submodules) a fresh interpreter holds after importing."""
    code = (
        f"import sys, {', '.join(modules)}\n"
        f"print(sorted(m for m in sys.modules if any(m == w or m.startswith(w + '.') "
        f"for w in {sorted(watched)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout)


def test_importing_the_core_loads_no_gui_package():
    core = ["napari_cellseg_trainer.cli", "napari_cellseg_trainer.training"]
    assert _loaded_after_import([*core, "napari_cellseg_trainer.inference"], GUI_ROOTS) == []


def test_opening_the_panels_waits_for_no_heavy_import():
    """torch, matplotlib and scipy.ndimage cost the panels seconds to open: they load later
    (torch in the worker, matplotlib in the loss plot's drawing thread, scipy when used)."""
    panels = [
        "napari_cellseg_trainer._qt.train_widget",
        "napari_cellseg_trainer._qt.predict_widget",
    ]
    assert _loaded_after_import(panels, {"torch", "matplotlib", "scipy.ndimage"}) == []
