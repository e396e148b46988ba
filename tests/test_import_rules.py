"""The import rules: the core never imports Qt, napari or magicgui, and no import runs up the floors.

The floors (docs/design.md; ../shared/DESIGN.md with checkpoint.py and export/ placed):
1. errors, files, config, models, data, normalization, devices, evaluation: the schema, the
   networks and their size rules, training data, intensity recipes, scores;
2. checkpoint, model_package, distributed, inference, _sample_data, _reader: checkpoints (and
   the bioimage.io packages read back as checkpoints) rebuild a network from the schema,
   prediction loads them;
3. training, export: the loop, the Aux loss, validation, bioimage.io packages;
4. cli, _qt, __main__: the two faces.
A module may import from its own floor and the floors below, never above; and no module may
reach itself through its imports (no import circle), not even through an import inside a
function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

import napari_cellseg_trainer

PACKAGE = Path(napari_cellseg_trainer.__file__).parent
NAME = "napari_cellseg_trainer"
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


FLOORS = {
    **dict.fromkeys(
        (
            "__init__",
            "_lazy",
            "errors",
            "files",
            "config",
            "models",
            "data",
            "normalization",
            "devices",
            "evaluation",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "checkpoint",
            "model_package",
            "starters",
            "model_source",
            "distributed",
            "inference",
            "_sample_data",
            "_reader",
        ),
        2,
    ),
    **dict.fromkeys(("training", "export"), 3),
    **dict.fromkeys(("cli", "_qt", "__main__"), 4),
}


def _floor(parts: tuple[str, ...]) -> int:
    """The floor of a module given by its path parts below the package (``("data", "buffer")``)."""
    return FLOORS[parts[0].removesuffix(".py")]


def _imports_of_package(source: str, here: tuple[str, ...]) -> Iterator[tuple[tuple, tuple]]:
    """Each import of the package in ``source``: (the path below the package it names, the names
    it takes from there; empty for ``import a.b``). Imports inside functions and under
    ``TYPE_CHECKING`` count too: they still tie the two modules together.

    ``here`` is the module's folder below the package (``("data",)`` for data/buffer.py).
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)]
            target = (*base, *(node.module.split(".") if node.module else ()))
            yield target, tuple(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAME + "."):
            yield tuple(node.module.split(".")[1:]), tuple(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(NAME + "."):
                    yield tuple(a.name.split(".")[1:]), ()


def _package_imports(source: str, here: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The package's modules a module's ``source`` imports, as path parts below the package."""
    found = set()
    for target, names in _imports_of_package(source, here):
        if target:
            found.add(target)
        else:  # "from .. import x": a module of the package, or a name of its __init__
            found |= {(n,) if n in FLOORS else ("__init__",) for n in names}
    return found


def upward_imports(source: str, parts: tuple[str, ...]) -> list[str]:
    """The imports of a module (path ``parts`` below the package) that run up the floors."""
    own = _floor(parts)
    imported = _package_imports(source, parts[:-1])
    return sorted(".".join(t) for t in imported if t and _floor(t) > own)


def test_no_import_runs_up_the_floors():
    modules = list(PACKAGE.rglob("*.py"))
    assert {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules} <= set(FLOORS)
    upward = {}
    for path in modules:
        parts = path.relative_to(PACKAGE).parts
        found = upward_imports(path.read_text(encoding="utf-8"), parts)
        if found:
            upward["/".join(parts)] = found
    assert upward == {}


@pytest.mark.parametrize(
    ("source", "parts", "expected"),
    [
        ("from ..training import loop\n", ("data", "buffer.py"), ["training"]),
        ("from ..training.loss import AuxLoss\n", ("models", "memory.py"), ["training.loss"]),
        ("import napari_cellseg_trainer.cli\n", ("checkpoint.py",), ["cli"]),
        ("from . import training\n", ("config.py",), ["training"]),
        ("from .. import __version__\n", ("export", "bioimageio.py"), []),
        ("from ..models import geometry\n", ("training", "loop.py"), []),
        ("from .folder import DataError\n", ("data", "buffer.py"), []),
    ],
)
def test_the_floor_check_catches_an_upward_import(source, parts, expected):
    assert upward_imports(source, parts) == expected


# --------------------------------------------------------------------------- import circles


def _module_name(path: Path) -> str:
    """A module's dotted name below the package: ``_qt.dock``; a folder's ``__init__`` is the
    folder (``config``); the package's own is ``__init__``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Which of the package's modules each module imports (by dotted name; itself left out).

    ``from .x import y`` is an edge to the module ``x.y`` when y is one, else to ``x``.
    """
    paths = {_module_name(p): p for p in package.rglob("*.py")}

    def module(parts: tuple[str, ...]) -> str | None:
        name = ".".join(parts) or "__init__"
        return name if name in paths else None

    graph = {}
    for name, path in paths.items():
        here = path.relative_to(package).parts[:-1]
        edges = set()
        for target, names in _imports_of_package(path.read_text(encoding="utf-8"), here):
            for n in names or ("",):
                edges.add((n and module((*target, n))) or module(target))
        edges.discard(name)
        assert None not in edges, f"{name}: an import names no module of the package"
        graph[name] = edges
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` reaches through imports, with the module it was first reached
    from: breadth first, so following those back gives a shortest path."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(graph.get(module, ())):
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return came_from


def import_circles(graph: dict[str, set[str]]) -> list[str]:
    """Circles of imports (``a -> b -> a``): the shortest through each module on a circle, but
    none for a module already on one listed, so each module on a circle is named once or more."""
    reach = {module: _reach(graph, module) for module in graph}
    circles, named = [], set()
    for module in sorted(graph):
        if module in named or module not in reach[module]:
            continue
        back = [module, reach[module][module]]
        while back[-1] != module:
            back.append(reach[module][back[-1]])
        named |= set(back)
        circles.append(" -> ".join(reversed(back)))
    return circles


def test_no_module_imports_itself_through_others():
    circles = import_circles(module_graph())
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_graph_holds_imports_in_functions_and_for_type_checking():
    graph = module_graph()
    assert "_qt.predict_widget" in graph["_qt.dock"]  # at the top of the module
    assert "model_source" in graph["_qt.predict_widget"]  # inside a method
    assert "_qt.config_form" in graph["_qt.train_config"]  # under TYPE_CHECKING
    assert "config" in graph["checkpoint"]  # "from . import config as config_mod"
    assert "training.events" in graph["_qt.train_widget"]  # "from ..training import events"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, ["a -> b -> a"]),
        ({"x": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}, ["a -> b -> c -> a"]),
        (
            {"a": {"b", "c"}, "b": {"c"}, "c": {"a"}, "p": {"q"}, "q": {"p"}},
            ["a -> c -> a", "b -> c -> a -> b", "p -> q -> p"],
        ),
    ],
)
def test_the_circle_check_finds_every_circle(graph, expected):
    assert import_circles(graph) == expected


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
