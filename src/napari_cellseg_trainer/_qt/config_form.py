"""A form generated from a config schema: one magicgui widget per field, grouped, with tooltips.

The form edits one schema object (``form.cfg``) in place: every edit is converted by the field's
own type and written into the object, or, if it does not convert, the field is marked and the
object keeps its last good value. Cross-field rules (size_in valid for the model, ...) come from
``config.validate`` so the form, the CLI and YAML loading report the same problems in the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from magicgui import widgets
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .. import config as config_mod
from ..config.fields import FieldSpec, Problem, VType, get_value, iter_fields, set_value
from ..models import geometry

_ERROR_STYLE = "border: 2px solid #e0393e;"
_BIG = 1_000_000


def _list_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # "auto"
        return value
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


class _FieldEditor:
    """One field: a magicgui widget plus how to read a YAML-like value from it and write one back."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.widget, self._read, self._write = _make_widget(spec)
        self.widget.label = f"{spec.kind.value} {spec.label}"
        if isinstance(self.widget, widgets.CheckBox):  # a form shows a check box's text only
            self.widget.text = self.widget.label
        self.widget.tooltip = spec.tooltip()
        self.error: str = ""

    def read(self) -> Any:
        """The widget's value as a YAML value (before the field's own type check)."""
        return self._read()

    def write(self, value: Any) -> None:
        with self.widget.changed.blocked():
            self._write(value)

    def mark(self, message: str) -> None:
        """Show ``message`` on the field (empty clears the mark)."""
        self.error = message
        native = self.widget.native
        native.setStyleSheet(_ERROR_STYLE if message else "")
        tip = self.spec.tooltip()
        self.widget.tooltip = f"⚠ {message}\n\n{tip}" if message else tip


def _parse_text(text: str) -> Any:
    """Text typed into a line edit, read as YAML (``1e-5``, ``null``, ``[0, 1]``); empty is null."""
    text = text.strip()
    if not text:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _make_widget(
    spec: FieldSpec,
) -> tuple[widgets.Widget, Callable[[], Any], Callable[[Any], None]]:
    vt = spec.vtype
    if spec.derived:  # computed from other fields: shown, never typed
        w = widgets.LineEdit(value=_list_text(spec.default), enabled=False)
        return w, lambda: _parse_list(w.value), lambda v: setattr(w, "value", _list_text(v))
    if vt.kind == "bool":
        w = widgets.CheckBox(value=bool(spec.default))
        return w, lambda: w.value, lambda v: setattr(w, "value", bool(v))
    if vt.kind == "choice":
        return _choice_widget(spec, vt)
    if vt.kind == "int" and not vt.optional:
        w = widgets.SpinBox(
            value=spec.default,
            min=int(vt.minimum) if vt.minimum is not None else -_BIG,
            max=int(vt.maximum) if vt.maximum is not None else _BIG,
        )
        return w, lambda: w.value, lambda v: setattr(w, "value", v)
    numbers = vt.item is not None and vt.item.kind in ("int", "float")
    if vt.kind == "list" and vt.length and numbers and not (vt.auto or vt.optional):
        return _tuple_widget(spec, vt)
    if spec.path:
        return _path_widget(spec, mode="d" if spec.path == "dir" else "r")
    return _text_widget(spec, vt)


def _choice_widget(spec: FieldSpec, vt: VType) -> tuple[widgets.Widget, Callable, Callable]:
    choices = [("off (null)" if c is None else str(c), c) for c in vt.choices]
    if vt.optional:
        choices.insert(0, ("off (null)", None))
    w = widgets.ComboBox(choices=choices, value=spec.default)
    return w, lambda: w.value, lambda v: setattr(w, "value", v)


def _text_widget(spec: FieldSpec, vt: VType) -> tuple[widgets.Widget, Callable, Callable]:
    """Optional ints, floats, variable-length lists and text: typed as YAML."""
    w = widgets.LineEdit(value=_to_text(spec.default, vt))
    if vt.kind == "str":
        return w, lambda: w.value, lambda v: setattr(w, "value", v or "")
    if vt.kind == "list":  # "0, 3" or "[0, 3]" (or "auto" where allowed)
        return w, lambda: _parse_list(w.value), lambda v: setattr(w, "value", _to_text(v, vt))
    return w, lambda: _parse_text(w.value), lambda v: setattr(w, "value", _to_text(v, vt))


def _required(problem: Problem) -> bool:
    return problem.message.startswith("is required")


def _parse_list(text: str) -> Any:
    """A list typed as ``0, 3`` or ``[0, 3]``; other words (``auto``) as they are."""
    text = text.strip()
    if not text or text.startswith("[") or text[0].isalpha():
        return _parse_text(text)
    return _parse_text(f"[{text}]")


def _to_text(value: Any, vt: VType) -> str:
    if value is None:
        return ""
    if vt.kind == "list" and value != "auto":
        return _list_text(value)
    if vt.kind == "any" and not isinstance(value, (int, float, str)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _tuple_widget(spec: FieldSpec, vt: VType) -> tuple[widgets.Widget, Callable, Callable]:
    item = vt.item
    assert item is not None and vt.length is not None
    if item.kind == "int":
        options = {"min": int(item.minimum) if item.minimum is not None else -_BIG, "max": _BIG}
        w = widgets.TupleEdit(value=tuple(spec.default), options=options)
    else:
        options = {
            "min": item.minimum if item.minimum is not None else -_BIG,
            "max": _BIG,
            "step": 0.1,
        }
        w = widgets.TupleEdit(value=tuple(float(v) for v in spec.default), options=options)
    cast = int if item.kind == "int" else float
    return (
        w,
        lambda: [cast(v) for v in w.value],
        lambda v: setattr(w, "value", tuple(cast(x) for x in v)),
    )


def _path_widget(spec: FieldSpec, mode: str) -> tuple[widgets.Widget, Callable, Callable]:
    w = widgets.FileEdit(mode=mode, value=spec.default or "")
    w.choose_btn.text = "…"  # "Choose directory" would not fit beside the path
    w.choose_btn.tooltip = "Choose a folder" if mode == "d" else "Choose a file"
    w.choose_btn.native.setMaximumWidth(32)

    def read() -> Any:
        text = str(w.line_edit.value).strip()
        if text in ("", "."):
            return None if spec.vtype.optional else ""
        return text

    def write(value: Any) -> None:
        w.line_edit.value = "" if value is None else str(value)

    write(spec.default)
    return w, read, write


class ConfigForm(QWidget):
    """Every field of a config class, grouped in collapsible sections, editing ``self.cfg``.

    Parameters
    ----------
    cls
        ``TrainConfig`` or ``PredictConfig``.
    groups
        Group names in display order; fields of other groups go last.
    collapsed
        Groups shown collapsed at first.
    keys
        Show only these fields (dotted keys); the others keep their values in ``cfg`` and
        their problems are left to the panel.
    """

    changed = Signal()  # the config or its problems changed

    def __init__(
        self,
        cls: type = config_mod.TrainConfig,
        groups: tuple[str, ...] = (
            "model",
            "patch size",
            "training",
            "data",
            "learning",
            "validation",
            "runtime",
        ),
        collapsed: tuple[str, ...] = ("learning", "validation", "runtime"),
        keys: tuple[str, ...] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.cfg = cls()
        self.editors: dict[str, _FieldEditor] = {}
        self.sections: dict[str, QCollapsible] = {}
        self._problems: list[Problem] = []
        # "is required" is not shown in red until the user asks for what needs the field
        self.show_required = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        by_group: dict[str, list[FieldSpec]] = {}
        for spec in iter_fields(cls):
            if keys is None or spec.key in keys:
                by_group.setdefault(spec.group, []).append(spec)
        order = [g for g in groups if g in by_group] + [g for g in by_group if g not in groups]
        for group in order:
            container = widgets.Container(labels=True)
            for spec in by_group[group]:
                editor = _FieldEditor(spec)
                editor.widget.changed.connect(lambda *_, key=spec.key: self._edited(key))
                container.append(editor.widget)
                self.editors[spec.key] = editor
            section = QCollapsible(group.capitalize(), self)
            section.setDuration(0)
            section.addWidget(container.native)
            if group in collapsed:
                section.collapse(animate=False)
            else:
                section.expand(animate=False)
            layout.addWidget(section)
            self.sections[group] = section
        self.problem_label = QLabel("", self)
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #e0393e;")
        layout.addWidget(self.problem_label)
        layout.addStretch(1)
        self._refresh()

    # ------------------------------------------------------------------ reading and writing

    def set_config(self, cfg: Any, unread: dict[str, str] | None = None) -> None:
        """Copy every value of ``cfg`` into the form's config object and widgets.

        ``unread`` maps keys a file could not give a value for to the reason: those fields
        keep the form's value, marked with the reason until edited (so Train waits for them).
        """
        unread = unread or {}
        for spec in iter_fields(type(self.cfg)):
            editor = self.editors.get(spec.key)
            if spec.key in unread:
                if editor is not None:
                    editor.error = unread[spec.key]
                continue
            value = get_value(cfg, spec.key)
            set_value(self.cfg, spec.key, value)
            if editor is not None:
                editor.write(value)
                editor.error = ""
        self._refresh()

    def reveal_required(self) -> None:
        """Mark empty required fields too (once the user asked for what needs them)."""
        self.show_required = True
        self._refresh()

    def set_value(self, key: str, value: Any) -> None:
        """Set one field as a user would (converted and checked); used by panels and tests."""
        self.editors[key].write(value)
        self._edited(key)

    def problems(self) -> list[Problem]:
        """Every problem of the form now: fields that did not convert, then cross-field rules."""
        return list(self._problems)

    # ------------------------------------------------------------------ internals

    def _edited(self, key: str) -> None:
        editor = self.editors[key]
        try:
            value = editor.spec.vtype.convert(editor.read())
        except ValueError as err:
            editor.error = str(err)
        else:
            set_value(self.cfg, key, value)
            editor.error = ""
        self._refresh()

    def _refresh(self) -> None:
        cfg = self.cfg
        if hasattr(cfg, "size_out"):
            self._sync_size_out()
        if "model.zoom_ratio" in self.editors:
            self.editors["model.zoom_ratio"].widget.visible = cfg.model.name == "unet_xy_zoom"
        field_problems = [Problem(k, e.error) for k, e in self.editors.items() if e.error]
        rule_problems = [
            p
            for p in config_mod.problems_of(cfg)
            if p.key in self.editors and p.key not in {q.key for q in field_problems}
        ]
        self._problems = field_problems + rule_problems
        shown = [p for p in self._problems if self.show_required or not _required(p)]
        marks = {p.key: p.message for p in reversed(shown)}
        for key, editor in self.editors.items():
            editor.mark(marks.get(key, ""))
        self.problem_label.setText("\n".join(f"• {p}" for p in shown))
        self.changed.emit()

    def _sync_size_out(self) -> None:
        """size_out follows size_in: computed from the size rules, never typed."""
        cfg = self.cfg
        if cfg.size_in == "auto":
            cfg.size_out = "auto"
            self.editors["size_out"].write("auto")
            return
        try:
            out = list(geometry.size_out(cfg.model.name, cfg.size_in, cfg.model.zoom_ratio))
        except geometry.InvalidSizeError:
            self.editors["size_out"].write(None)
            return
        cfg.size_out = out
        self.editors["size_out"].write(out)
