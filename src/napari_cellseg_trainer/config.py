"""The training and prediction configs: one schema each, YAML in the established layout.

Every field is declared once, with its type, default, bounds, kind (📌 / 💻 / 👌) and help text
(the seed's words). The napari form, the tooltips, YAML load/save, the CLI's ``--set`` and the
docs' config reference are all generated from these declarations.

The attribute names are the YAML keys, spelling included (``PatchPerBuffer``, ``NumWorkers``),
because users' existing files use them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ._schema import (
    FLOAT,
    NONNEG_INT,
    POS_INT,
    ConfigError,
    FieldSpec,
    Kind,
    Problem,
    VType,
    choice,
    float_list,
    from_dict,
    get_value,
    int_list,
    iter_fields,
    param,
    section,
    set_value,
    to_dict,
)
from .models import geometry

__all__ = [
    "ConfigError",
    "FieldSpec",
    "Kind",
    "PredictConfig",
    "Problem",
    "TrainConfig",
    "apply_overrides",
    "check_paths",
    "demo_config",
    "fields",
    "load_config",
    "load_predict_config",
    "save_config",
    "template",
]

PIN, MACHINE, OK = Kind.PIN, Kind.MACHINE, Kind.OK

# ----------------------------------------------------------------------------- help texts
# The seed's words, lightly trimmed; one place for each.

HELP_MODEL_NAME = (
    "Which model to use. `unet_xy` is suitable for smaller-scale structures, several voxels "
    "thick (e.g. tubulin, lamin B1). `unet_xy_zoom` is more suitable for larger-scale "
    "structures, more than 100 voxels in diameter (e.g. nucleus)."
)
HELP_ZOOM = (
    "Only for unet_xy_zoom: an integer (e.g. 2 or 3), estimated as the average diameter of the "
    "target objects in voxels divided by 150."
)
HELP_NCHANNEL = "Number of input channels. Related to the model architecture and fixed by default."
HELP_NCLASS = (
    "Number of classes of the main output and of the two auxiliary outputs. Related to the "
    "model architecture and fixed by default."
)
HELP_SIZE_IN = (
    "Input patch size [z, y, x]. In most situations the entire image does not fit into the "
    "memory of a single GPU, so the model sees patches. Tied to batch_size and GPU memory: "
    "unet_xy on a 32 GB GPU: [48, 148, 148] with batch_size 8; unet_xy_zoom on a 32 GB GPU: "
    "[52, 420, 420] with batch_size 8. Must be a valid size for the model."
)
HELP_SIZE_OUT = (
    "Output patch size [z, y, x]: fully determined by size_in and the model "
    "(unet_xy: [48, 148, 148] -> [20, 60, 60])."
)
HELP_CHECKPOINT_DIR = "The directory where the trained model (checkpoints) is saved."
HELP_RESUME = (
    "To start this training from a previously saved model, the path of that checkpoint "
    "(or of a folder: its newest checkpoint). Empty (null) starts from scratch."
)
HELP_LR = "Learning rate of the Adam optimiser."
HELP_WD = "Weight decay of the Adam optimiser."
HELP_LOSS_NAME = "Aux: weighted sum of the losses of the main output and the two auxiliary outputs."
HELP_LOSS_WEIGHT = "Weights of the main and the two auxiliary losses."
HELP_IGNORE = "A label value whose voxels contribute nothing to the loss; null for none."
HELP_EPOCHS = (
    "How many epochs to train (one epoch = one pass over the patch buffer). We suggest "
    "values between 300 and 600."
)
HELP_SAVE_EVERY = "A model checkpoint is saved every save_every_n_epoch epochs."
HELP_LOADER_NAME = "Data loader; fixed by default."
HELP_DATAFOLDER = (
    "The directory of training data: for each image NAME, NAME.ome.tif (raw), NAME_GT.ome.tif "
    "(ground truth) and NAME_CM.ome.tif (cost map)."
)
HELP_BATCH = (
    "Patches per training step. Related to GPU memory and patch size (see size_in): "
    "8 with [48, 148, 148] on a 32 GB GPU."
)
HELP_PPB = (
    "The number of sample patches randomly drawn in each buffer, which can be set as "
    "(number of patches to draw from each image) x (number of training images)."
)
HELP_SHUFFLE = "Epochs between redrawing the patch buffer; fixed by default."
HELP_WORKERS = (
    "Data-loading workers (threads that prepare the next patch buffer); fixed by default."
)
HELP_METRIC = (
    "Validation after every few epochs to make sure things are not going wrong. Training data "
    "are usually very limited, so by default validation is off (null); for advanced users. "
    "`default` = IoU within the cost map."
)
HELP_LEAVEOUT = (
    "Indices of the training images held out for validation; a single value in (0, 1) is the "
    "fraction of images held out."
)
HELP_OUTPUTCH = "Pairs (output index, class channel) to validate, e.g. [0, 1, 1, 1, 2, 1]."
HELP_VAL_EVERY = "Validate every this many epochs."
HELP_DEVICE = (
    "Where to train: auto (CUDA GPU, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps. "
    "Added by napari-cellseg-trainer."
)
HELP_SEED = (
    "Random seed for patch drawing and augmentation; null draws a fresh seed each run. "
    "Added by napari-cellseg-trainer."
)
HELP_PREVIEW = (
    "Send a predicted patch to the viewer every this many iterations (0 = never). "
    "Added by napari-cellseg-trainer."
)
HELP_THREADS = (
    "CPU threads torch may use (null = torch's default; in the napari panel on a machine with "
    "4 or more cores, all cores but one, which stays free for napari). Added by "
    "napari-cellseg-trainer."
)
HELP_PRECISION = (
    "Arithmetic of the training step. auto: bfloat16 mixed precision on CUDA GPUs that support "
    "it (Ampere and newer; several times faster, half the activation memory), float32 "
    "elsewhere. bf16 / fp16: mixed precision (fp16 with loss scaling); fp32: full precision. "
    "Weights and checkpoints stay float32. Added by napari-cellseg-trainer."
)
HELP_CHANNELS_LAST = (
    "Keep activations in the channels-last 3-D memory layout (faster convolutions on recent "
    "NVIDIA GPUs with mixed precision; harmless elsewhere). Added by napari-cellseg-trainer."
)
HELP_COMPILE = (
    "Compile the network with torch.compile (CUDA only: faster steps after a first step that "
    "takes a minute or more). Added by napari-cellseg-trainer."
)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------- training


@dataclass
class ModelSection:
    name: str = param("unet_xy", choice(*geometry.MODEL_NAMES), PIN, HELP_MODEL_NAME, group="model")
    zoom_ratio: int = param(3, VType("int", minimum=2, maximum=16), PIN, HELP_ZOOM, group="model")


@dataclass
class LossSection:
    name: str = param("Aux", choice("Aux"), OK, HELP_LOSS_NAME, group="training", label="loss")
    loss_weight: list = param(
        [1.0, 1.0, 1.0], float_list(3, minimum=0), OK, HELP_LOSS_WEIGHT, group="training"
    )
    ignore_index: int | None = param(
        None, VType("int", minimum=0, optional=True), OK, HELP_IGNORE, group="training"
    )


@dataclass
class LoaderSection:
    name: str = param(
        "default", choice("default"), OK, HELP_LOADER_NAME, group="data", label="loader"
    )
    datafolder: str = param(
        "", VType("str"), PIN, HELP_DATAFOLDER, group="data", label="data folder"
    )
    batch_size: int = param(8, POS_INT, MACHINE, HELP_BATCH, group="patch size")
    PatchPerBuffer: int = param(
        200, POS_INT, PIN, HELP_PPB, group="data", label="patches per buffer"
    )
    epoch_shuffle: int = param(5, POS_INT, OK, HELP_SHUFFLE, group="data", label="epoch shuffle")
    NumWorkers: int = param(1, NONNEG_INT, OK, HELP_WORKERS, group="data", label="workers")


@dataclass
class ValidationSection:
    metric: str | None = param(
        None, choice("default", optional=True), OK, HELP_METRIC, group="validation"
    )
    leaveout: list = param([0], float_list(None, minimum=0), OK, HELP_LEAVEOUT, group="validation")
    OutputCh: list = param(
        [0, 1, 1, 1, 2, 1],
        int_list(None, minimum=0),
        OK,
        HELP_OUTPUTCH,
        group="validation",
        label="output channels",
    )
    validate_every_n_epoch: int = param(
        25, POS_INT, OK, HELP_VAL_EVERY, group="validation", label="validate every n epochs"
    )


@dataclass
class NetworkFields:
    """The fields training and prediction configs share: the network and its patch sizes."""

    model: ModelSection = section(ModelSection)
    nchannel: int = param(1, POS_INT, OK, HELP_NCHANNEL, group="model")
    nclass: list = param([2, 2, 2], int_list(3, minimum=2), OK, HELP_NCLASS, group="model")
    size_in: list = param(
        [48, 148, 148], int_list(3, minimum=1), MACHINE, HELP_SIZE_IN, group="patch size"
    )
    size_out: list = param(
        [20, 60, 60], int_list(3, minimum=1), MACHINE, HELP_SIZE_OUT, group="patch size"
    )


@dataclass
class TrainConfig(NetworkFields):
    """The training config (the established trainer's keys, plus a few of ours)."""

    checkpoint_dir: str = param("", VType("str"), PIN, HELP_CHECKPOINT_DIR, group="training")
    resume: str | None = param(
        None, VType("path", optional=True), PIN, HELP_RESUME, group="training"
    )
    learning_rate: float = param(1e-5, VType("float", minimum=0), OK, HELP_LR, group="training")
    weight_decay: float = param(0.005, VType("float", minimum=0), OK, HELP_WD, group="training")
    loss: LossSection = section(LossSection)
    epochs: int = param(400, POS_INT, PIN, HELP_EPOCHS, group="training")
    save_every_n_epoch: int = param(40, POS_INT, PIN, HELP_SAVE_EVERY, group="training")
    loader: LoaderSection = section(LoaderSection)
    validation: ValidationSection = section(ValidationSection)
    device: str = param("auto", VType("str"), MACHINE, HELP_DEVICE, group="runtime")
    seed: int | None = param(
        None, VType("int", minimum=0, optional=True), OK, HELP_SEED, group="runtime"
    )
    preview_every_n_iter: int = param(20, NONNEG_INT, OK, HELP_PREVIEW, group="runtime")
    num_threads: int | None = param(
        None, VType("int", minimum=1, optional=True), MACHINE, HELP_THREADS, group="runtime"
    )
    precision: str = param("auto", choice(*PRECISIONS), MACHINE, HELP_PRECISION, group="runtime")
    channels_last: bool = param(False, VType("bool"), MACHINE, HELP_CHANNELS_LAST, group="runtime")
    compile: bool = param(False, VType("bool"), MACHINE, HELP_COMPILE, group="runtime")

    def copy(self) -> TrainConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        return to_dict(self)


# ----------------------------------------------------------------------------- prediction

HELP_MODEL_PATH = "The checkpoint file of the trained model."
HELP_PRED_OUTPUTCH = (
    "Pairs (output index, class channel) to save; [0, 1] = foreground of the main output."
)
HELP_OUTPUTDIR = "Folder for the results."
HELP_INPUTCH = "Channel indices of the input image to feed the model, e.g. [0]; -1 = the last one."
HELP_RESIZE = "[z, y, x] factors applied to the image before the model, undone after."
HELP_NORM = "Normalisation recipe id (see the reference), or a dict of per-channel operations."
HELP_THRESHOLD = (
    "> 0: binary output (0/255, uint8) at this threshold; <= 0: probabilities (float32)."
)
HELP_RUNTIMEAUG = (
    "Test-time augmentation: average the prediction over flips of x, y and z (slower)."
)
HELP_MODE = "`file`: one image (InputFile); `folder`: every file of DataType in InputDir."
HELP_INPUTFILE = "The image to segment (file mode)."
HELP_TIMELAPSE = "The file is a time-lapse: segment each time point (file mode)."
HELP_INPUTDIR = "The folder of images to segment (folder mode)."
HELP_DATATYPE = "File ending of the images to segment in folder mode, e.g. .tiff."
HELP_TILING = (
    "blend: overlapping tiles blended with smooth weights (no seams); established: the "
    "command-line trainer's non-overlapping tiles. Added by napari-cellseg-trainer."
)
HELP_OVERLAP = "Fraction of a tile shared with its neighbour in blend mode."
HELP_TILE_BATCH = "Tiles per forward pass."


@dataclass
class PredictMode:
    name: str = param(
        "file", choice("file", "folder", "fromfile", "fromfolder"), PIN, HELP_MODE, group="input"
    )
    InputFile: str | None = param(
        None, VType("path", optional=True), PIN, HELP_INPUTFILE, group="input"
    )
    timelapse: bool = param(False, VType("bool"), PIN, HELP_TIMELAPSE, group="input")
    InputDir: str | None = param(
        None, VType("path", optional=True), PIN, HELP_INPUTDIR, group="input"
    )
    DataType: str = param(".tiff", VType("str"), PIN, HELP_DATATYPE, group="input")

    @property
    def is_folder(self) -> bool:
        return self.name in ("folder", "fromfolder")


@dataclass
class PredictConfig(NetworkFields):
    """The prediction config (the established trainer's keys, plus tiling options)."""

    model_path: str = param("", VType("str"), PIN, HELP_MODEL_PATH, group="model")
    OutputCh: list = param(
        [0, 1], int_list(None, minimum=0), OK, HELP_PRED_OUTPUTCH, group="output"
    )
    OutputDir: str = param("", VType("str"), PIN, HELP_OUTPUTDIR, group="output")
    InputCh: list = param([0], int_list(None, minimum=-1), PIN, HELP_INPUTCH, group="input")
    ResizeRatio: list = param([1.0, 1.0, 1.0], float_list(3), PIN, HELP_RESIZE, group="input")
    Normalization: Any = param(10, VType("any"), PIN, HELP_NORM, group="input")
    Threshold: float = param(-1.0, FLOAT, PIN, HELP_THRESHOLD, group="output")
    RuntimeAug: bool = param(False, VType("bool"), OK, HELP_RUNTIMEAUG, group="output")
    mode: PredictMode = section(PredictMode)
    tiling: str = param("blend", choice("blend", "established"), OK, HELP_TILING, group="runtime")
    overlap: float = param(
        0.25, VType("float", minimum=0, maximum=0.75), OK, HELP_OVERLAP, group="runtime"
    )
    batch_size: int = param(4, POS_INT, MACHINE, HELP_TILE_BATCH, group="runtime")
    device: str = param("auto", VType("str"), MACHINE, HELP_DEVICE, group="runtime")

    def copy(self) -> PredictConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        return to_dict(self)


# ----------------------------------------------------------------------------- checks

AnyConfig = TypeVar("AnyConfig", TrainConfig, PredictConfig)


def fields(cls: type = TrainConfig) -> list[FieldSpec]:
    """Every leaf field of a config class, with its dotted key, in file order."""
    return list(iter_fields(cls))


def _check_common(cfg: TrainConfig | PredictConfig, problems: list[Problem]) -> None:
    """Cross-field rules shared by both configs: patch geometry."""
    name = cfg.model.name
    try:
        expected = geometry.size_out(name, cfg.size_in, cfg.model.zoom_ratio)
    except geometry.InvalidSizeError as err:
        problems.append(Problem("size_in", str(err)))
        return
    if list(cfg.size_out) != list(expected):
        problems.append(
            Problem(
                "size_out",
                f"{list(cfg.size_out)} does not match size_in {list(cfg.size_in)} for {name}"
                f"{_zoom_text(cfg)}: it must be {list(expected)}",
            )
        )


def _zoom_text(cfg: TrainConfig | PredictConfig) -> str:
    return f" (zoom_ratio {cfg.model.zoom_ratio})" if cfg.model.name == "unet_xy_zoom" else ""


def _check_output_pairs(key: str, pairs: list, nclass: list, problems: list[Problem]) -> None:
    if len(pairs) % 2 or not pairs:
        problems.append(Problem(key, f"must list (output index, class channel) pairs, got {pairs}"))
        return
    for out_idx, ch in zip(pairs[::2], pairs[1::2], strict=True):
        if out_idx > 2:
            problems.append(Problem(key, f"output index {out_idx} does not exist (0, 1 or 2)"))
        elif ch >= nclass[out_idx]:
            problems.append(
                Problem(
                    key,
                    f"class channel {ch} of output {out_idx} does not exist "
                    f"(nclass[{out_idx}] = {nclass[out_idx]})",
                )
            )


def validate(cfg: TrainConfig) -> list[Problem]:
    """Cross-field problems of a training config (types and bounds are checked on load)."""
    problems: list[Problem] = []
    _check_common(cfg, problems)
    if not cfg.checkpoint_dir.strip():
        problems.append(Problem("checkpoint_dir", "is required: where should checkpoints go?"))
    if not cfg.loader.datafolder.strip():
        problems.append(Problem("loader.datafolder", "is required: the folder of training data"))
    if cfg.loss.ignore_index is not None and cfg.loss.ignore_index < max(cfg.nclass):
        # Labels equal to ignore_index must not be real classes of any output.
        problems.append(
            Problem(
                "loss.ignore_index",
                f"{cfg.loss.ignore_index} is a real class (nclass {cfg.nclass}); "
                f"use a value >= {max(cfg.nclass)} or null",
            )
        )
    if cfg.validation.metric is not None:
        _check_output_pairs("validation.OutputCh", cfg.validation.OutputCh, cfg.nclass, problems)
        leave = cfg.validation.leaveout
        fraction = len(leave) == 1 and 0 < leave[0] < 1
        if not leave or (not fraction and any(not float(v).is_integer() for v in leave)):
            problems.append(
                Problem(
                    "validation.leaveout",
                    f"must be image indices (e.g. [0, 3]) or one fraction in (0, 1), got {leave}",
                )
            )
    if not _valid_device(cfg.device):
        problems.append(
            Problem("device", f"must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
        )
    return problems


def validate_predict(cfg: PredictConfig) -> list[Problem]:
    """Cross-field problems of a prediction config."""
    problems: list[Problem] = []
    _check_common(cfg, problems)
    _check_output_pairs("OutputCh", cfg.OutputCh, cfg.nclass, problems)
    if not cfg.model_path.strip():
        problems.append(Problem("model_path", "is required: the checkpoint to predict with"))
    if not cfg.OutputDir.strip():
        problems.append(Problem("OutputDir", "is required: where to write the results"))
    if any(r <= 0 for r in cfg.ResizeRatio):
        problems.append(Problem("ResizeRatio", f"factors must be > 0, got {cfg.ResizeRatio}"))
    if len(cfg.InputCh) != cfg.nchannel:
        problems.append(
            Problem(
                "InputCh", f"lists {len(cfg.InputCh)} channel(s) but nchannel is {cfg.nchannel}"
            )
        )
    if cfg.mode.is_folder and not cfg.mode.InputDir:
        problems.append(Problem("mode.InputDir", "is required in folder mode"))
    if not cfg.mode.is_folder and not cfg.mode.InputFile:
        problems.append(Problem("mode.InputFile", "is required in file mode"))
    if not _valid_device(cfg.device):
        problems.append(
            Problem("device", f"must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
        )
    return problems


def _valid_device(text: str) -> bool:
    if text in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, index = text.partition(":")
    return head == "cuda" and index.isdigit()


def check_paths(cfg: TrainConfig) -> list[Problem]:
    """Problems with the folders and files a training run will touch (call before training)."""
    problems: list[Problem] = []
    data = Path(cfg.loader.datafolder).expanduser()
    if cfg.loader.datafolder and not data.is_dir():
        problems.append(Problem("loader.datafolder", f"folder {str(data)!r} does not exist"))
    if cfg.checkpoint_dir:
        problem = _unwritable_dir(Path(cfg.checkpoint_dir).expanduser())
        if problem:
            problems.append(Problem("checkpoint_dir", problem))
    if cfg.resume and not Path(cfg.resume).expanduser().exists():
        problems.append(Problem("resume", f"{cfg.resume!r} does not exist"))
    return problems


def _unwritable_dir(folder: Path) -> str:
    """Why ``folder`` cannot be created or written to, or '' if it can."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{str(probe)!r} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"folder {str(probe)!r} is not writable"
    return ""


# ----------------------------------------------------------------------------- YAML


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("", f"config file {str(path)!r} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem("", f"cannot read config file {str(path)!r}: {err}")]) from None
    try:
        # safe_load: no Python object tags, a config file can never run code.
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError([Problem("", f"{path}: not valid YAML: {err}")]) from None


def from_mapping(cls: type[AnyConfig], data: Any, source: str = "") -> AnyConfig:
    """Build and validate a config from a nested dict; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    data = _fill_size_out(data)
    cfg = from_dict(cls, data if data is not None else {}, problems)
    if not problems:
        problems += validate(cfg) if cls is TrainConfig else validate_predict(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _fill_size_out(data: Any) -> Any:
    """A file may leave size_out out: it is fully determined by size_in and the model."""
    if not isinstance(data, dict) or "size_out" in data or "size_in" not in data:
        return data
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    try:
        out = geometry.size_out(
            model.get("name", "unet_xy"), data["size_in"], model.get("zoom_ratio", 3)
        )
    except (geometry.InvalidSizeError, TypeError, ValueError):
        return data  # the size_in problem is reported by validation
    return {**data, "size_out": list(out)}


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Load a training config from YAML, apply ``key.path=value`` overrides, validate."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return from_mapping(TrainConfig, data, source=str(path))


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
            value = yaml.safe_load(text)
        except yaml.YAMLError:
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
    flow = all(isinstance(v, (int, float, str)) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_config(cfg: TrainConfig | PredictConfig) -> str:
    """YAML text of a config in the established layout."""
    data = cfg.to_dict()
    if isinstance(cfg, PredictConfig):
        data["mode"] = {k: v for k, v in data["mode"].items() if v is not None}
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def save_config(cfg: TrainConfig | PredictConfig, path: str | os.PathLike) -> Path:
    """Write a config as YAML (atomically: a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump_config(cfg), encoding="utf-8")
    os.replace(tmp, path)
    return path


def template(model: str = "unet_xy", zoom_ratio: int = 3) -> TrainConfig:
    """A starting config for a model, with the seed's 32 GB GPU patch sizes."""
    cfg = TrainConfig()
    cfg.model.name = model
    cfg.model.zoom_ratio = zoom_ratio
    if model == "unet_xy_zoom":
        z, yx = 52, 140 * zoom_ratio
        cfg.size_in = [z, yx, yx]
        cfg.size_out = list(geometry.size_out(model, cfg.size_in, zoom_ratio))
    cfg.checkpoint_dir = "./checkpoints"
    cfg.loader.datafolder = "./train_data"
    return cfg


def demo_config(datafolder: str, checkpoint_dir: str) -> TrainConfig:
    """A preset that trains visibly on a laptop CPU within minutes, on the sample data.

    Tiny patches (unet_xy [32, 100, 100] -> [4, 12, 12]) and a high learning rate, so the loss
    falls within the first epochs. For real data start from :func:`template`.
    """
    cfg = TrainConfig()
    cfg.size_in, cfg.size_out = [32, 100, 100], [4, 12, 12]
    cfg.checkpoint_dir = checkpoint_dir
    cfg.learning_rate = 1e-3
    cfg.epochs = 50
    cfg.save_every_n_epoch = 10
    cfg.loader.datafolder = datafolder
    cfg.loader.batch_size = 2
    cfg.loader.PatchPerBuffer = 20
    cfg.seed = 0
    cfg.preview_every_n_iter = 5
    return cfg


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
