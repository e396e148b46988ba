"""The config schema: established files load unchanged, round trips, all problems reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from napari_cellseg_trainer import config
from napari_cellseg_trainer.config import ConfigError, Kind, PredictConfig, TrainConfig
from napari_cellseg_trainer.config.fields import from_dict

DATA = Path(__file__).parent / "data"


def seed_snippets() -> list[str]:
    text = (DATA / "seed_config.md").read_text(encoding="utf-8")
    return re.findall(r"```yaml\s*\n(.*?)```", text, flags=re.S)


def test_seed_has_the_snippets_we_expect():
    assert len(seed_snippets()) == 8


@pytest.mark.parametrize("index", range(8))
def test_every_seed_snippet_parses_without_problems(index):
    snippet = yaml.safe_load(seed_snippets()[index])
    problems: list = []
    cfg = from_dict(TrainConfig, snippet, problems)
    assert problems == []
    for key, value in _flatten(snippet).items():
        got = config.get(cfg, key)
        assert got == value, key


@pytest.mark.parametrize("model_snippet", [0, 1])
def test_seed_snippets_together_make_a_valid_config(model_snippet):
    merged: dict = {}
    for i, text in enumerate(seed_snippets()):
        if i in (0, 1) and i != model_snippet:
            continue
        merged.update(yaml.safe_load(text))
    if merged["model"]["name"] == "unet_xy_zoom":
        merged["size_in"], merged["size_out"] = [52, 420, 420], [20, 152, 152]
    cfg = config.from_mapping(TrainConfig, merged)
    assert cfg.loader.PatchPerBuffer == 200
    assert cfg.learning_rate == pytest.approx(1e-5)


def test_established_file_loads_unchanged_and_saves_same_keys(tmp_path):
    source = DATA / "established_train.yaml"
    cfg = config.load_config(source)
    assert cfg.model.name == "unet_xy_zoom" and cfg.model.zoom_ratio == 3
    assert cfg.size_out == [20, 152, 152]
    original = yaml.safe_load(source.read_text())
    out = config.save_config(cfg, tmp_path / "out.yaml")
    saved = yaml.safe_load(out.read_text())
    # Every established key keeps its spelling, nesting and value.
    for key, value in _flatten(original).items():
        assert _flatten(saved)[key] == value, key
    # Our additions are top-level keys of their own, nothing else changed.
    added = set(_flatten(saved)) - set(_flatten(original))
    assert added == {
        "minutes",
        "lr_schedule",
        "foreground_share",
        "intensity_augmentation",
        "acquisition_augmentation",
        "acquisition_per_patch",
        "normalization",
        "holdout",
        "early_stop",
        "freeze_batchnorm",
        "keep_best",
        "run_subfolder",
        "finetune_from",
        "voxel_size",
        "device",
        "seed",
        "preview_every_n_iter",
        "num_threads",
        "precision",
        "channels_last",
        "compile",
    }
    # ... and their defaults are the established behaviour (nothing new switched on)
    defaults = config.TrainConfig()
    assert (defaults.minutes, defaults.lr_schedule, defaults.foreground_share) == (
        None,
        "constant",
        0,
    )
    assert not defaults.intensity_augmentation and defaults.normalization is None
    assert (defaults.holdout, defaults.early_stop, defaults.run_subfolder) == (0, None, False)
    assert not defaults.freeze_batchnorm  # BatchNorm statistics update as they always did
    assert not defaults.acquisition_per_patch


def test_save_load_round_trip_is_identity(tmp_path):
    cfg = config.template("unet_xy")
    cfg.loader.batch_size = 3
    cfg.loss.ignore_index = 255
    cfg.validation.metric = "default"
    cfg.resume = "/x/checkpoint_epoch_5.pytorch"
    cfg.learning_rate = 3e-4
    path = config.save_config(cfg, tmp_path / "c.yaml")
    assert config.load_config(path) == cfg
    # lists are written the way users write them
    assert "size_in: [48, 148, 148]" in path.read_text()


def test_prediction_config_round_trip(tmp_path):
    cfg = PredictConfig(model_path="m.pytorch", OutputDir="out")
    cfg.mode.InputFile = "img.tiff"
    cfg.Normalization = {"ops": [{"ch": [{"name": "auto_contrast", "param": [2, 11]}]}]}
    path = config.save_config(cfg, tmp_path / "p.yaml")
    assert config.load_predict_config(path) == cfg


def test_several_problems_are_all_reported_with_dotted_keys(tmp_path):
    bad = {
        "model": {"name": "unet_xyz"},
        "size_in": [48, 150, 148],
        "loader": {"batch_size": 0, "datafolder": "d", "PatchPerBufer": 3},
        "loss": {"loss_weight": [1, 1]},
        "epochs": "many",
        "checkpoint_dir": "c",
        "learning_rate": "fast",
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    keys = {p.key for p in info.value.problems}
    assert keys == {
        "model.name",
        "loader.batch_size",
        "loader.PatchPerBufer",
        "loss.loss_weight",
        "epochs",
        "learning_rate",
    }
    text = str(info.value)
    assert "did you mean 'PatchPerBuffer'" in text
    assert "did you mean 'unet_xy'" in text
    assert str(path) in text


def test_invalid_size_in_names_the_nearest_valid_sizes():
    with pytest.raises(ConfigError) as info:
        config.from_mapping(TrainConfig, _minimal(size_in=[48, 150, 150]))
    (problem,) = info.value.problems
    assert problem.key == "size_in"
    assert "[48, 148, 148]" in problem.message and "[48, 156, 156]" in problem.message


def test_size_out_is_computed_when_missing_and_checked_when_given():
    cfg = config.from_mapping(TrainConfig, _minimal(size_in=[32, 100, 100]))
    assert cfg.size_out == [4, 12, 12]
    with pytest.raises(ConfigError, match=r"size_out: \[4, 12, 13\] does not match.*\[4, 12, 12\]"):
        config.from_mapping(TrainConfig, _minimal(size_in=[32, 100, 100], size_out=[4, 12, 13]))


def test_float_written_without_a_dot_is_accepted():
    # PyYAML reads 1e-5 as a string; users write it that way.
    cfg = config.from_mapping(
        TrainConfig, yaml.safe_load("learning_rate: 1e-5\n" + _minimal_yaml())
    )
    assert cfg.learning_rate == pytest.approx(1e-5)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("nclass", [2, 2], "must have 3 entries"),
        ("epochs", True, "must be int"),
        ("loader.NumWorkers", -1, "must be >= 0"),
        ("model.zoom_ratio", 1, "must be >= 2"),
        ("validation.metric", "dice", "must be 'default'"),
        ("device", "gpu", "must be auto, cpu"),
        ("loss.ignore_index", 1, "is a real class"),
    ],
)
def test_bad_values_are_refused_with_their_key(key, value, fragment):
    data = _minimal()
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as info:
        config.from_mapping(TrainConfig, data)
    assert [p.key for p in info.value.problems] == [key]
    assert fragment in info.value.problems[0].message


def test_yaml_object_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("epochs: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_config(path)
    assert not (tmp_path / "pwned").exists()


def test_overrides_set_nested_values_and_recompute_size_out(tmp_path):
    path = config.save_config(config.template("unet_xy"), tmp_path / "c.yaml")
    cfg = config.load_config(path, ["loader.batch_size=2", "size_in=[32, 100, 100]", "epochs=3"])
    assert (cfg.loader.batch_size, cfg.size_out, cfg.epochs) == (2, [4, 12, 12], 3)
    with pytest.raises(ConfigError, match="--set needs key.path=value"):
        config.load_config(path, ["epochs"])


def test_every_field_has_kind_help_and_a_valid_default():
    specs = config.fields(TrainConfig)
    assert len(specs) == len({s.key for s in specs}) == 46
    for spec in specs:
        assert isinstance(spec.kind, Kind)
        assert len(spec.help) > 20, spec.key
        assert spec.kind.value in spec.tooltip()
    kinds = {s.key: s.kind for s in specs}
    assert kinds["size_in"] is Kind.MACHINE and kinds["loader.batch_size"] is Kind.MACHINE
    assert kinds["epochs"] is Kind.PIN and kinds["loader.PatchPerBuffer"] is Kind.PIN
    assert kinds["learning_rate"] is Kind.OK and kinds["loader.NumWorkers"] is Kind.OK


def test_check_paths_reports_missing_and_unwritable_folders(tmp_path):
    cfg = config.template()
    cfg.loader.datafolder = str(tmp_path / "nope")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg.checkpoint_dir = str(blocker / "sub")
    cfg.resume = str(tmp_path / "missing.pytorch")
    keys = {p.key: p.message for p in config.check_paths(cfg)}
    assert set(keys) == {"loader.datafolder", "checkpoint_dir", "resume"}
    assert "is a file" in keys["checkpoint_dir"]


def test_template_for_each_model_is_valid():
    for model in ("unet_xy", "unet_xy_zoom"):
        cfg = config.template(model)
        assert config.validate(cfg) == []
    assert config.template("unet_xy_zoom").size_out == [20, 152, 152]


def _minimal(**extra) -> dict:
    data = {"checkpoint_dir": "ck", "loader": {"datafolder": "data"}, "size_in": [32, 100, 100]}
    data.update(extra)
    return data


def _minimal_yaml() -> str:
    return "checkpoint_dir: ck\nloader: {datafolder: data}\nsize_in: [32, 100, 100]\n"


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_example_demo_config_is_the_panels_sample_preset():
    """examples/demo_cpu.yaml (headless main job) and the panel's preset are one config."""
    example = Path(__file__).parents[1] / "examples" / "demo_cpu.yaml"
    assert config.load_config(example) == config.demo_config("runs/sample_data", "runs/checkpoints")
