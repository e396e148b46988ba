"""Reading and writing configs as YAML: safe, bounded, every problem reported at once.

A config file is small and plain. A hostile one can still be tiny and expensive: YAML aliases
that expand exponentially (a 400-byte "billion laughs"), nesting deep enough to exhaust the
parser's recursion, or megabytes of text. The file is therefore read in two passes: an event
scan that counts what the document would expand to (no objects built), then the safe loader,
which never constructs Python objects from tags and refuses duplicate keys.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..models import geometry
from .checks import problems_of
from .fields import ConfigError, Problem, from_dict, short_repr, to_dict
from .network import NetworkFields
from .predict import PredictConfig
from .train import TrainConfig

AnyConfig = TypeVar("AnyConfig", TrainConfig, PredictConfig, NetworkFields)

MAX_FILE_BYTES = 1 << 20  # a config is a few KB; the established ones are under 2 KB
MAX_VALUES = 100_000  # scalars and collections after expanding aliases
MAX_DEPTH = 40
# Which fields each cross-field rule reads: a rule is not applied when one of them was rejected
# (its value would be the default, and the rule's message about it misleading).
_RULE_INPUTS = {
    "size_in": ("size_in", "model"),
    "size_out": ("size_in", "size_out", "model"),
    "loss.ignore_index": ("loss.ignore_index", "nclass"),
    "validation.OutputCh": ("validation.OutputCh", "nclass"),
    "OutputCh": ("OutputCh", "nclass"),
    "InputCh": ("InputCh", "nchannel"),
}


class _Loader(yaml.SafeLoader):
    """The safe loader (no Python object tags), refusing a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: the constructor reports it
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {short_repr(key)} appears twice in one mapping (line {line}); "
                    "keep one of them",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> Any:
    """The plain data of a YAML file; ConfigError (one line) for anything unreadable or hostile."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _refusal(path, f"is {size / 2**20:.1f} MB; a config is a few KB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("", f"config file {str(path)!r} does not exist")]) from None
    except IsADirectoryError:
        raise _refusal(path, "is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem("", f"cannot read config file {str(path)!r}: {err}")]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str = "config") -> Any:
    """Parse YAML text within the bounds above."""
    try:
        _check_expansion(yaml.parse(text, Loader=_Loader), source)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(
            [Problem("", f"{source}: not valid YAML: {_yaml_problem(err)}")]
        ) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The parser's complaint and its line, without the echo of the document."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    where = f" (line {mark.line + 1})" if mark is not None and "line" not in problem else ""
    return f"{problem}{where}"[:300]


def _refusal(path: Path, why: str) -> ConfigError:
    return ConfigError([Problem("", f"{path}: refused: {why}")])


def _check_expansion(events: Iterable[yaml.Event], source: str) -> None:
    """Count the values the document expands to, aliases included, without building it."""
    counts = [0]  # values inside each open collection (the outermost: the document)
    anchors: list[str | None] = []
    sizes: dict[str, int] = {}
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            if len(counts) > MAX_DEPTH:
                raise _bounds(source, f"nested more than {MAX_DEPTH} levels deep")
            counts.append(1)
            anchors.append(event.anchor)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            added = counts.pop()
            anchor = anchors.pop()
            if anchor:
                sizes[anchor] = added
        elif isinstance(event, yaml.ScalarEvent):
            added = 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            added = sizes.get(event.anchor, 1)
        else:
            continue
        counts[-1] += added
        if counts[-1] > MAX_VALUES:
            raise _bounds(source, f"expands to more than {MAX_VALUES:,} values (YAML aliases?)")


def _bounds(source: str, why: str) -> ConfigError:
    return ConfigError([Problem("", f"{source}: refused: {why}; a config is a few keys")])


def check_plain(data: Any, source: str) -> None:
    """Refuse data (e.g. a checkpoint's embedded config) too big or deep to be a config.

    Counts every value reached, shared ones as often as they are reached, so an object graph
    that shares sub-lists exponentially is refused after ``MAX_VALUES`` steps.
    """
    stack, seen = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES or depth > MAX_DEPTH:
            raise _bounds(source, "the embedded config is too large or nested too deep")
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
            stack += [(k, depth + 1) for k in value]
        elif isinstance(value, list | tuple):
            stack += [(v, depth + 1) for v in value]


def from_mapping(
    cls: type[AnyConfig],
    data: Any,
    source: str = "",
    checks: Callable[[Any], list[Problem]] | None = None,
) -> AnyConfig:
    """Build and validate a config from plain data; ConfigError lists every problem at once.

    Field problems (types, bounds, unknown keys), the cross-field rules whose fields were read,
    and what ``checks(cfg)`` finds (e.g. the folders a run will touch) are reported together,
    so a file with three kinds of mistake needs one round, not three.
    """
    cfg, problems = parse_mapping(cls, data, source)
    if checks is not None:
        rejected = {p.key for p in problems}
        problems += [p for p in checks(cfg) if not _reads_rejected(p.key, rejected)]
    if problems:
        raise ConfigError(problems, source)
    return cfg


def parse_mapping(cls: type[AnyConfig], data: Any, source: str = "") -> tuple[AnyConfig, list]:
    """(config, problems) from plain data; the config holds defaults where a value was rejected."""
    check_plain(data, source or "config")
    problems: list[Problem] = []
    cfg = from_dict(cls, _fill_size_out(data if data is not None else {}), problems)
    rejected = {p.key for p in problems}
    if "(top level)" in rejected:  # not a mapping at all: nothing else was read
        return cfg, problems
    problems += [p for p in problems_of(cfg) if not _reads_rejected(p.key, rejected)]
    return cfg, problems


def _reads_rejected(key: str, rejected: set[str]) -> bool:
    inputs = _RULE_INPUTS.get(key, (key,))
    return any(r == i or r.startswith(f"{i}.") for r in rejected for i in inputs)


def _fill_size_out(data: Any) -> Any:
    """A file may leave size_out out: it is fully determined by size_in and the model."""
    if not isinstance(data, dict) or "size_out" in data or "size_in" not in data:
        return data
    if data["size_in"] == "auto":
        return {**data, "size_out": "auto"}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    try:
        out = geometry.size_out(
            model.get("name", "unet_xy"), data["size_in"], model.get("zoom_ratio", 3)
        )
    except (geometry.InvalidSizeError, TypeError, ValueError):
        return data  # the size_in problem is reported by validation
    return {**data, "size_out": list(out)}


def load_config(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    checks: Callable[[Any], list[Problem]] | None = None,
) -> TrainConfig:
    """Load a training config from YAML, apply ``key.path=value`` overrides, validate."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return from_mapping(TrainConfig, data, source=str(path), checks=checks)


def load_predict_config(
    path: str | os.PathLike, overrides: list[str] | None = None
) -> PredictConfig:
    """Load a prediction config from YAML, apply overrides, validate."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return from_mapping(PredictConfig, data, source=str(path))


def apply_overrides(data: Any, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` strings (value parsed as YAML) to a nested dict copy."""
    out = copy.deepcopy(data) if isinstance(data, dict) else {}
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(key or item, f"--set needs key.path=value, got {item!r}"))
            continue
        try:
            value = parse_yaml(text, f"--set {key}")
        except ConfigError:
            value = text
        node = out
        *head, last = key.split(".")
        for part in head:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
        if key == "size_in" or key.startswith("model."):
            out.pop("size_out", None)  # recomputed from the new size_in / model
    if problems:
        raise ConfigError(problems)
    return out


class _Dumper(yaml.SafeDumper):
    """Lists of numbers in flow style (``[48, 148, 148]``) as users write them."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, int | float | str) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_config(cfg: TrainConfig | PredictConfig) -> str:
    """YAML text of a config in the established layout."""
    data = to_dict(cfg)
    if isinstance(cfg, PredictConfig):
        data["mode"] = {k: v for k, v in data["mode"].items() if v is not None}
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def save_config(cfg: TrainConfig | PredictConfig, path: str | os.PathLike) -> Path:
    """Write a config as YAML, atomically: a crash never leaves half a file."""
    from ..files import write_atomically

    return write_atomically(path, dump_config(cfg).encode("utf-8"))
