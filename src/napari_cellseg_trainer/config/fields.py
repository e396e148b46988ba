"""Field descriptions for the config dataclasses: type, bounds, kind and help in one place.

A config class is a plain (possibly nested) dataclass whose fields are declared with
:func:`param`. The helpers here walk such a class to validate a dict read from YAML, to turn a
config back into a dict, and to list every field with its dotted key (for the GUI form, the CLI's
``--set`` and the generated docs). A field also says whether it is derived from others
(``size_out``) and whether it names a folder or a file, so the form needs no lists of its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import ProblemsError


class Kind(str, Enum):
    """How often a user must look at a field (the seed's three badges)."""

    PIN = "📌"
    MACHINE = "💻"
    OK = "👌"

    @property
    def meaning(self) -> str:
        return _KIND_MEANING[self]


_KIND_MEANING = {
    Kind.PIN: "specific to each training: check it every time",
    Kind.MACHINE: "specific to the machine (GPU memory): set once per machine",
    Kind.OK: "pre-defined training scheme: leave as is unless you know deep learning well",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, located by its dotted key."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(ProblemsError, ValueError):
    """A config that cannot be used; carries every problem found, not just the first."""

    what = "problem(s) in the config"


# --------------------------------------------------------------------------- value types

_REPR_CHARS = 60
# Whole numbers beyond float precision are never a sensible setting (and a 400-digit one
# would overflow the float conversion).
_LARGEST_INT = 2**53


def _short_reprs() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, 40, 40
    return short


_SHORT = _short_reprs()


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a line: a message never repeats a huge or hostile value whole."""
    text = _SHORT.repr(value)
    return text if len(text) <= _REPR_CHARS else text[: _REPR_CHARS - 3] + "..."


@dataclass(frozen=True)
class VType:
    """A value type: checks and normalises one YAML value.

    ``kind`` is one of ``int``, ``float``, ``number`` (int or float), ``bool``, ``str``,
    ``path``, ``choice``, ``list``, ``any``. Lists hold ``item`` values and may have a fixed ``length``.
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    item: VType | None = None
    length: int | None = None
    min_length: int = 0
    optional: bool = False
    auto: bool = False  # the text "auto" is accepted too: the program chooses

    def describe(self) -> str:
        """Short human description, e.g. ``int >= 1`` or ``list of 3 int``."""
        if self.kind == "choice":
            text = " or ".join(repr(c) for c in self.choices)
        elif self.kind == "list":
            count = f"{self.length} " if self.length else ""
            text = f"list of {count}{self.item.describe() if self.item else 'values'}"
        else:
            text = self.kind
            if self.minimum is not None:
                text += f" >= {self.minimum:g}"
            if self.maximum is not None:
                text += f" <= {self.maximum:g}"
        text = f"{text} or 'auto'" if self.auto else text
        return f"{text} or null" if self.optional else text

    def convert(self, value: Any) -> Any:
        """Return the normalised value or raise ``ValueError`` with a one-line reason."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"must be {self.describe()}, not null")
        if self.auto and value == "auto":
            return "auto"
        convert = getattr(self, f"_convert_{self.kind}")
        return convert(value)

    def _convert_any(self, value: Any) -> Any:
        return value

    def _convert_int(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"must be {self.describe()}, got {short_repr(value)}")
        if abs(value) > _LARGEST_INT:
            raise ValueError(f"is far too large ({len(str(abs(value)))} digits)")
        return self._bounded(value)

    def _convert_float(self, value: Any) -> float:
        # PyYAML reads ``1e-5`` (no dot) as a string; accept what parses exactly as a number.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"must be {self.describe()}, got {short_repr(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be {self.describe()}, got {short_repr(value)}")
        if isinstance(value, int) and abs(value) > _LARGEST_INT:
            raise ValueError(f"is far too large ({len(str(abs(value)))} digits)")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {short_repr(value)}")
        return self._bounded(float(value))

    def _convert_number(self, value: Any) -> int | float:
        """A float or an int, whichever it is (a whole float becomes an int: ``[0]`` stays ``[0]``)."""
        number = self._convert_float(value)
        return int(number) if number.is_integer() else number

    def _convert_bool(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {short_repr(value)}")
        return value

    def _convert_str(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be text, got {short_repr(value)}")
        return value

    def _convert_path(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a path (text), got {short_repr(value)}")
        return value

    def _convert_choice(self, value: Any) -> Any:
        if value not in self.choices:
            hint = _did_you_mean(value, self.choices)
            raise ValueError(f"must be {self.describe()}, got {short_repr(value)}{hint}")
        return value

    def _convert_list(self, value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a {self.describe()}, got {short_repr(value)}")
        if self.length is not None and len(value) != self.length:
            raise ValueError(
                f"must have {self.length} entries, got {len(value)}: {short_repr(list(value))}"
            )
        if len(value) < self.min_length:
            raise ValueError(
                f"must have at least {self.min_length} entries, got {short_repr(list(value))}"
            )
        assert self.item is not None
        try:
            return [self.item.convert(v) for v in value]
        except ValueError as err:
            raise ValueError(f"{short_repr(list(value))}: each entry {err}") from None

    def _bounded(self, value: float) -> Any:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum:g}, got {short_repr(value)}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum:g}, got {short_repr(value)}")
        return value


INT = VType("int")
POS_INT = VType("int", minimum=1)
NONNEG_INT = VType("int", minimum=0)
FLOAT = VType("float")


def int_list(length: int | None = None, minimum: float | None = None) -> VType:
    return VType("list", item=VType("int", minimum=minimum), length=length)


def float_list(length: int | None = None, minimum: float | None = None) -> VType:
    return VType("list", item=VType("float", minimum=minimum), length=length)


def choice(*options: Any, optional: bool = False) -> VType:
    return VType("choice", choices=tuple(options), optional=optional)


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldSpec:
    """Everything known about one config field; what the GUI, CLI and docs are built from."""

    key: str  # dotted YAML key path, e.g. ``loader.batch_size``
    vtype: VType
    default: Any
    kind: Kind
    help: str
    group: str
    label: str
    derived: bool = False  # computed from other fields (shown, never typed)
    path: str = ""  # "dir" or "file" when the value names one

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    def tooltip(self) -> str:
        """Help text headed by the field's badge and what the badge means."""
        return (
            f"{self.kind.value} {self.kind.meaning}\n\n{self.help}\n\nType: {self.vtype.describe()}"
        )


def param(
    default: Any,
    vtype: VType,
    kind: Kind,
    help: str,
    *,
    group: str,
    label: str = "",
    derived: bool = False,
    path: str = "",
) -> Any:
    """Declare a config field with its schema metadata (a ``dataclasses.field``).

    ``derived``: computed from other fields; ``path``: ``"dir"`` or ``"file"`` if it names one.
    """
    meta = {
        "vtype": vtype,
        "kind": kind,
        "help": help,
        "group": group,
        "label": label,
        "derived": derived,
        "path": path,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str = "") -> Any:
    """Declare a nested section (another schema dataclass)."""
    return field(default_factory=cls, metadata={"section": True, "help": help})


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def iter_fields(cls: type, prefix: str = "") -> Iterator[FieldSpec]:
    """Yield every leaf field of a schema class, depth first, in declaration order."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.metadata.get("section"):
            yield from iter_fields(f.default_factory, prefix=f"{key}.")  # type: ignore[arg-type]
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        label = f.metadata.get("label") or f.name.replace("_", " ")
        yield FieldSpec(
            key=key,
            vtype=f.metadata["vtype"],
            default=default,
            kind=f.metadata["kind"],
            help=f.metadata["help"],
            group=f.metadata["group"],
            label=label,
            derived=f.metadata["derived"],
            path=f.metadata["path"],
        )


def get_value(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def set_value(obj: Any, key: str, value: Any) -> None:
    *head, last = key.split(".")
    for part in head:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def to_dict(obj: Any) -> dict:
    """Nested plain dict (YAML-able) of a schema object, keys in declaration order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = to_dict(value) if f.metadata.get("section") else _copy(value)
    return out


def from_dict(cls: type, data: Any, problems: list[Problem], prefix: str = "") -> Any:
    """Build a schema object from a nested dict, collecting every problem found.

    Missing keys take their defaults; unknown keys and bad values become problems. The
    returned object holds defaults wherever a value was rejected, so callers must check
    ``problems`` before using it.
    """
    obj = cls()
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "(top level)"
        problems.append(
            Problem(where, f"must be a mapping of keys to values, got {short_repr(data)}")
        )
        return obj
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        f = known.get(name) if isinstance(name, str) else None
        if f is None:
            hint = _did_you_mean(name, list(known))
            where = key if isinstance(name, str) else f"{prefix}{short_repr(name)}"
            problems.append(Problem(where, f"unknown key{hint}"))
        elif f.metadata.get("section"):
            setattr(obj, name, from_dict(f.default_factory, value, problems, f"{key}."))  # type: ignore[arg-type]
        else:
            try:
                setattr(obj, name, f.metadata["vtype"].convert(value))
            except ValueError as err:
                problems.append(Problem(key, str(err)))
    return obj


def _did_you_mean(value: Any, options: Sequence[Any]) -> str:
    words = [str(o) for o in options]
    text = str(value) if isinstance(value, str | int | float) else ""
    close = difflib.get_close_matches(text[:100], words, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
