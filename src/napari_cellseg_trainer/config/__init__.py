"""The training and prediction configs: one schema each, YAML in the established layout.

Every field is declared once (:mod:`.network`, :mod:`.train`, :mod:`.predict`) with its type, default, bounds,
kind (📌 / 💻 / 👌) and help text. The napari form, the tooltips, YAML load/save
(:mod:`.yaml_io`), the CLI's ``--set`` and the docs' config reference are generated from these
declarations; :mod:`.checks` holds the rules that need several fields; :mod:`.presets` the
starting points. The attribute names are the YAML keys, spelling included (``PatchPerBuffer``).
"""

from __future__ import annotations

from typing import Any

from .checks import check_paths, problems_of, unwritable_dir, validate, validate_predict
from .fields import ConfigError, FieldSpec, Kind, Problem, get_value, iter_fields, set_value
from .network import ModelSection, NetworkFields
from .predict import PredictConfig, PredictMode
from .presets import SCRATCH, STARTER, demo_config, starting_point, template
from .train import PRECISIONS, LoaderSection, LossSection, TrainConfig, ValidationSection
from .yaml_io import (
    apply_overrides,
    check_plain,
    dump_config,
    from_mapping,
    load_config,
    load_predict_config,
    parse_mapping,
    parse_yaml,
    read_yaml,
    save_config,
)

__all__ = [
    "PRECISIONS",
    "SCRATCH",
    "STARTER",
    "ConfigError",
    "FieldSpec",
    "Kind",
    "LoaderSection",
    "LossSection",
    "ModelSection",
    "NetworkFields",
    "PredictConfig",
    "PredictMode",
    "Problem",
    "TrainConfig",
    "ValidationSection",
    "apply_overrides",
    "check_paths",
    "check_plain",
    "demo_config",
    "dump_config",
    "fields",
    "from_mapping",
    "get",
    "load_config",
    "load_predict_config",
    "parse_mapping",
    "parse_yaml",
    "problems_of",
    "read_yaml",
    "starting_point",
    "save_config",
    "set_field",
    "template",
    "unwritable_dir",
    "validate",
    "validate_predict",
]


def fields(cls: type = TrainConfig) -> list[FieldSpec]:
    """Every leaf field of a config class, with its dotted key, in file order."""
    return list(iter_fields(cls))


def get(cfg: Any, key: str) -> Any:
    """Value at a dotted key (``loader.batch_size``)."""
    return get_value(cfg, key)


def set_field(cfg: Any, key: str, value: Any) -> None:
    """Set the value at a dotted key after converting it with the field's type; raise ConfigError."""
    spec = {f.key: f for f in iter_fields(type(cfg))}.get(key)
    if spec is None:
        raise ConfigError([Problem(key, "unknown key")])
    try:
        set_value(cfg, key, spec.vtype.convert(value))
    except ValueError as err:
        raise ConfigError([Problem(key, str(err))]) from None
