"""Export a checkpoint as a bioimage.io model package (format 0.5), and load such a package back.

Two weight formats of :class:`StructureProbability`: TorchScript, which any bioimage.io consumer
runs, and a state dict: the network's under the prefix ``net.``, so :func:`load_bioimageio` gives
back the full three-output network. The training config travels as an attachment. The network
crops its own margin (valid convolutions): the outputs declare it as a negative size ``offset``,
not as a ``halo``, which bioimage.io reserves for borders a consumer still has to crop.
bioimageio.spec is an optional extra, imported only inside the functions that need it.
"""

from __future__ import annotations

import functools
import gc
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .. import __version__
from ..checkpoint import CheckpointError, load_model_weights
from ..errors import UserInputError
from ..model_package import PACKAGE_CONFIG as CONFIG_FILE
from ..model_package import PACKAGE_EXTRA, PACKAGE_WEIGHTS, load_package
from ..model_package import PACKAGE_KEY as KEY
from ..model_package import PACKAGE_PREFIX as PREFIX
from ..model_source import open_model
from ..models import build_model, geometry
from ..normalization import ROBUST_BOUNDS, ROBUST_PERCENTILES

INSTALL_HINT = "pip install 'napari-cellseg-trainer[bioimageio]'"
_EPS = 1e-6  # bioimageio.core's scale_range divides by (max - min + 1e-6)
_FILES = dict(state_dict=PACKAGE_WEIGHTS, torchscript="weights_torchscript.pt")
_FILES |= dict(input="test_input.npy", output="test_output.npy", cover="cover.png")
_FILES |= dict(readme="README.md", config=CONFIG_FILE)
_TAGS = ["3d", "unet", "pytorch", "semantic-segmentation", "fluorescence-light-microscopy"]
_UNET = "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015."  # noqa: E501
_UNET_DOI = "10.1007/978-3-319-24574-4_28"
_PARENT = "pytorch_state_dict"  # the original weights; TorchScript is converted from them


class ExportError(UserInputError, ValueError):
    """A checkpoint that cannot be exported, or a package this plugin cannot load."""


class StructureProbability(nn.Module):
    """The network's main output as the probability of structure (class 1): (N, 1, Z', Y', X')."""

    def __init__(
        self,
        model: str = "unet_xy",
        nchannel: int = 1,
        nclass: Sequence[int] = (2, 2, 2),
        zoom_ratio: int = 3,
    ) -> None:
        super().__init__()
        self.net = build_model(model, nchannel, nclass, zoom_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(x)[0][:, 1:2])


def _closes_leaked_files(function: Any) -> Any:
    """Close, warning silenced, the files bioimageio.spec opens and leaves to the collector."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                return function(*args, **kwargs)
            finally:
                gc.collect()

    return wrapper


def _spec() -> Any:
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise ExportError(f"bioimage.io support is not installed: {INSTALL_HINT}") from None
    return v0_5


def _architecture(config: Any, where: Path) -> dict:
    """StructureProbability's keyword arguments, from a training config dict."""
    try:
        return {
            "model": str(config["model"]["name"]),
            "nchannel": int(config["nchannel"]),
            "nclass": [int(n) for n in config["nclass"]],
            "zoom_ratio": int(config["model"].get("zoom_ratio", 3)),
        }
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ExportError(
            f"{where}: carries no training config (a checkpoint of the established trainer?); "
            "only checkpoints saved by this plugin's training can be exported"
        ) from None


def _axis_sizes(arch: dict) -> list[tuple[str, int, int, int]]:
    """(axis, smallest input, step between valid inputs, output - input) for z, y, x."""
    name, k = arch["model"], arch["zoom_ratio"]
    smallest = geometry.min_size_in(name, k)
    out = geometry.size_out(name, smallest, k)
    next_yx = geometry.valid_yx(name, k, lo=smallest[1] + 1, hi=smallest[1] + 16 * k)[0]
    steps = (1, next_yx - smallest[1], next_yx - smallest[1])
    return [(a, s, d, o - s) for a, s, d, o in zip("zyx", smallest, steps, out, strict=True)]


def _normalization(normalization: Any, v0_5: Any) -> tuple[list, Any, str]:
    """(bioimage.io preprocessing, the same as a numpy function, a phrase for the README)."""
    if normalization in (None, "min_max") or (normalization == 0 and normalization is not False):
        axes = [v0_5.AxisId(a) for a in "zyx"]
        kwargs = v0_5.ScaleRangeKwargs(axes=axes, min_percentile=0.0, max_percentile=100.0)
        return [v0_5.ScaleRangeDescr(kwargs=kwargs)], _min_max, "min-max to [0, 1] per channel"
    if normalization == 20:  # percentiles 1 and 99.8, clipped: scale_range then clip
        axes = [v0_5.AxisId(a) for a in "zyx"]
        kwargs = v0_5.ScaleRangeKwargs(axes=axes, min_percentile=1.0, max_percentile=99.8)
        clip = v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0))
        return (
            [v0_5.ScaleRangeDescr(kwargs=kwargs), clip],
            _percentiles,
            "percentiles 1-99.8, clipped",
        )
    if normalization in _LEFT_OUT:  # the linear part, with the caveat in the README
        pre, function, text = _normalization(21, v0_5)
        return pre, function, f"{text}. {normalization_caveat(normalization)}"
    if normalization == 21:  # percentiles 5 and 95 to 0 and 1, bounded: scale_range then clip
        axes = [v0_5.AxisId(a) for a in "zyx"]
        low, high = ROBUST_PERCENTILES
        kwargs = v0_5.ScaleRangeKwargs(axes=axes, min_percentile=low, max_percentile=high)
        clip = v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=ROBUST_BOUNDS[0], max=ROBUST_BOUNDS[1]))
        return (
            [v0_5.ScaleRangeDescr(kwargs=kwargs), clip],
            _robust,
            f"percentiles {low:g}-{high:g} to 0-1, bounded to {list(ROBUST_BOUNDS)}",
        )
    if normalization == "none":
        return [], lambda x: x, "none (give images normalised as the training raw was)"
    if isinstance(normalization, Mapping) and set(normalization) <= {"gain", "offset"}:
        gain, offset = float(normalization.get("gain", 1)), float(normalization.get("offset", 0))
        if gain == 1 and offset == 0:
            return _normalization("none", v0_5)
        step = v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=gain, offset=offset))
        return [step], lambda x: x * np.float32(gain) + np.float32(offset), f"x * {gain} + {offset}"
    raise ExportError(
        f"normalization {normalization!r} has no exact bioimage.io description; use 'min_max' "
        "(recipe 0), 'none' (images already normalised) or {'gain': g, 'offset': o}"
    )


def normalization_caveat(normalization: Any) -> str | None:
    """What a package cannot describe of a recipe it exports (None: it describes it exactly)."""
    if normalization in _LEFT_OUT:
        steps, none, spoilt = _LEFT_OUT[normalization]
        return (
            f"The plugin's recipe {normalization} first {steps}; bioimage.io has {none}, so the "
            f"package gives the model the percentile window only: on a volume with {spoilt}, or "
            "brighter or dimmer than the training one, its predictions are not the plugin's"
        )
    return None


_KEPT_BRIGHT = (
    "takes out bright stripes, removes specks, brings the median to 0.25 by a power and keeps "
    "the voxels at the volume's maximum bright"
)
# The recipes exported as their percentile window (21's), and what that leaves out: the steps,
# how many, and the volumes on which the package's predictions then differ from the plugin's.
_LEFT_OUT = {
    22: (
        "removes specks and brings the median to 0.25 by a power",
        "neither step",
        "saturated specks",
    ),
    24: (
        "takes out bright stripes, removes specks and brings the median to 0.25 by a power",
        "none of these steps",
        "saturated specks or a stripe",
    ),
    25: (_KEPT_BRIGHT, "none of these steps", "saturated specks, a stripe or a saturating gain"),
    26: (
        _KEPT_BRIGHT + " where it lies well above the window",
        "none of these steps",
        "saturated specks, a stripe or a saturating gain",
    ),
}


def _percentiles(x: np.ndarray) -> np.ndarray:
    lo = np.percentile(x, 1.0, axis=(2, 3, 4), keepdims=True)
    hi = np.percentile(x, 99.8, axis=(2, 3, 4), keepdims=True)
    return np.clip((x - lo) / (hi - lo + _EPS), 0, 1).astype(np.float32)


def _robust(x: np.ndarray) -> np.ndarray:
    lo = np.percentile(x, ROBUST_PERCENTILES[0], axis=(2, 3, 4), keepdims=True)
    hi = np.percentile(x, ROBUST_PERCENTILES[1], axis=(2, 3, 4), keepdims=True)
    return np.clip((x - lo) / (hi - lo + _EPS), *ROBUST_BOUNDS).astype(np.float32)


def _min_max(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(2, 3, 4), keepdims=True).astype(np.float64)
    hi = x.max(axis=(2, 3, 4), keepdims=True).astype(np.float64)
    return ((x - lo) / (hi - lo + _EPS)).astype(np.float32)


def _test_input(arch: dict, size: Sequence[int], sample: np.ndarray | None) -> np.ndarray:
    """(1, C, *size) float32: the centre of ``sample``, or of the embedded sample data."""
    if sample is None:
        from ..data.sample import make_sample

        kind = "filaments" if arch["model"] == "unet_xy" else "blobs"
        shape = [max(s, d) for s, d in zip(size, (32, 128, 128), strict=True)]
        sample = np.stack([make_sample(kind, shape, seed=c)[0] for c in range(arch["nchannel"])])
    sample = np.asarray(sample, dtype=np.float32)
    sample = sample[None] if sample.ndim == 3 else sample
    if sample.ndim != 4 or sample.shape[0] != arch["nchannel"]:
        raise ExportError(f"sample must be (Z, Y, X) or (C, Z, Y, X) with C = {arch['nchannel']}")
    if any(s < n for s, n in zip(sample.shape[1:], size, strict=True)):
        raise ExportError(f"sample {sample.shape[1:]} is smaller than the test size {tuple(size)}")
    starts = [(s - n) // 2 for s, n in zip(sample.shape[1:], size, strict=True)]
    box = [slice(start, start + n) for start, n in zip(starts, size, strict=True)]
    return np.ascontiguousarray(sample[(slice(None), *box)][None])


def _cover(path: Path, raw: np.ndarray, prob: np.ndarray) -> None:
    """A 2:1 PNG: the test input's middle plane (output region framed) and the probability."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(8, 4), dpi=80)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.imshow(raw[0, 0, raw.shape[2] // 2], cmap="gray")
    h, w = prob.shape[3:]
    y0, x0 = (raw.shape[3] - h) // 2, (raw.shape[4] - w) // 2
    left.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="yellow"))
    right.imshow(prob[0, 0, prob.shape[2] // 2], cmap="magma", vmin=0, vmax=1)
    for ax, title in ((left, "input"), (right, "structure probability")):
        ax.set_title(title)
        ax.set_axis_off()
    fig.savefig(path)


def _readme(name: str, arch: dict, sizes: list, norm_text: str) -> str:
    zoom = f", zoom ratio {arch['zoom_ratio']}" if arch["model"] == "unet_xy_zoom" else ""
    rules = "; ".join(f"{a} = {s} + n x {d} (output {a} = input {o:+d})" for a, s, d, o in sizes)
    return (
        f"# {name}\n\nA 3-D {arch['model']} network (nclass {arch['nclass']}{zoom}, "
        f"{arch['nchannel']} input channel(s)) trained with napari-cellseg-trainer {__version__}. "
        "It returns the probability of structure for the centre of its input: the convolutions "
        f"are valid, so each output axis is shorter.\n\n## Inputs\n\nValid sizes: {rules}. "
        f"Preprocessing: {norm_text}.\n\n## Use\n\nAny bioimage.io consumer runs the TorchScript "
        "weights. napari-cellseg-trainer's `load_bioimageio` gives back the full network and its "
        f"training config (attached as `{CONFIG_FILE}`).\n\n## Validation\n\nThe test tensors "
        "are a crop of synthetic sample data: they check that the package runs, not how well it "
        "segments. Validate on annotated images of your own structure before relying on it.\n"
    )


@_closes_leaked_files
def export_bioimageio(
    checkpoint_path: str | os.PathLike,
    output_zip: str | os.PathLike,
    *,
    name: str | None = None,
    authors: Sequence[str | Mapping] | None = None,
    description: str | None = None,
    license: str = "CC-BY-4.0",
    sample: np.ndarray | None = None,
    normalization: Any = None,
    overwrite: bool = False,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Write the checkpoint as a bioimage.io model package ``output_zip``; returns its path.

    Parameters
    ----------
    name : 5 to 128 letters, digits, spaces or ``_+-()`` (default ``cellseg <model>``).
    authors : names, or dicts of bioimage.io author fields (name, affiliation, orcid, ...).
    sample : (Z, Y, X) or (C, Z, Y, X) raw image for the test tensors (default: sample data).
    normalization : how the training raw was normalised: ``None``, ``"min_max"`` or 0 (min-max
        to [0, 1], the default), ``"none"``, or ``{"gain": g, "offset": o}``.
    overwrite : replace an existing ``output_zip`` (otherwise it is refused, left untouched).
    note : told, once the package is written, what it cannot describe of the normalisation
        (:func:`normalization_caveat`), if anything.
    """
    v0_5 = _spec()
    output = Path(output_zip)
    if output.exists() and not overwrite:
        raise ExportError(f"{output} exists; give overwrite=True (--overwrite) to replace it")
    if not output.parent.is_dir():
        raise ExportError(f"cannot write {output}: folder {output.parent} does not exist")
    checkpoint = open_model(checkpoint_path)
    checkpoint.network()  # refuses a config-less or broken config with its own message
    arch = _architecture(checkpoint.config, Path(checkpoint_path))
    if normalization is None:  # how the model's training raw was normalised
        normalization = checkpoint.extra.get("normalization")
    wrapper = StructureProbability(**arch)
    load_model_weights(wrapper.net, checkpoint)
    wrapper.eval()
    sizes = _axis_sizes(arch)
    pre, pre_fn, norm_text = _normalization(normalization, v0_5)
    raw = _test_input(arch, [s for _, s, _, _ in sizes], sample)
    with torch.no_grad():
        prob = wrapper(torch.from_numpy(pre_fn(raw))).numpy()
    name = name or f"cellseg {arch['model']}"
    with tempfile.TemporaryDirectory(prefix="cellseg-bioimageio-") as tmp:
        files = {key: Path(tmp) / file for key, file in _FILES.items()}
        torch.save(wrapper.state_dict(), files["state_dict"])
        with warnings.catch_warnings():
            # torch (2.13) deprecates TorchScript, but it is bioimage.io's portable torch format.
            warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", DeprecationWarning)
            torch.jit.script(wrapper).save(str(files["torchscript"]))
        np.save(files["input"], raw)
        np.save(files["output"], prob)
        _cover(files["cover"], raw, prob)
        files["readme"].write_text(_readme(name, arch, sizes, norm_text), encoding="utf-8")
        files["config"].write_text(yaml.safe_dump(checkpoint.config, sort_keys=False), "utf-8")
        extra = {k: checkpoint.extra.get(k) for k in PACKAGE_EXTRA}
        _write_package(
            _describe(v0_5, files, name, authors, description, license, arch, sizes, pre, extra),
            output,
            overwrite,
        )
        gc.collect()  # close what bioimageio left open in ``tmp`` (Windows cannot delete it open)
    caveat = normalization_caveat(normalization)
    if caveat and note is not None:
        note(caveat)
    return output


def _write_package(descr: Any, output: Path, overwrite: bool) -> None:
    """Zip beside ``output`` under a temporary name, then rename: never a half-written package."""
    from bioimageio.spec import save_bioimageio_package

    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".zip", dir=output.parent)
    os.close(fd)
    try:
        # Stored, not deflated: float weights shrink by a few percent for seconds of CPU.
        save_bioimageio_package(descr, output_path=Path(tmp_name), compression=zipfile.ZIP_STORED)
        gc.collect()  # bioimageio re-reads the zip and leaves it open: close it before renaming
        if output.exists() and not overwrite:
            raise ExportError(f"{output} appeared during the export; it was left untouched")
        os.replace(tmp_name, output)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _describe(v0_5, files, name, authors, description, license, arch, sizes, pre, extra) -> Any:
    from pydantic import ValidationError

    version = torch.__version__.split("+")[0]
    channels = [f"channel{c}" for c in range(arch["nchannel"])]
    in_axes = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=channels)]
    in_axes += [
        v0_5.SpaceInputAxis(id=a, size=v0_5.ParameterizedSize(min=s, step=d))
        for a, s, d, _ in sizes
    ]
    out_axes = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=["structure"])]
    out_axes += [
        v0_5.SpaceOutputAxis(
            id=a,
            size=v0_5.SizeReference(tensor_id="raw", axis_id=a, offset=o),
            description=f"the input's centre: the network crops {-o // 2} per side",
        )
        for a, _, _, o in sizes
    ]
    architecture = {"import_from": __name__, "callable": "StructureProbability", "kwargs": arch}
    try:
        return v0_5.ModelDescr(
            name=name,
            description=description or f"3-D {arch['model']} segmentation of one cell structure",
            authors=[
                v0_5.Author(**a) if isinstance(a, Mapping) else v0_5.Author(name=str(a))
                for a in (authors or ["unknown (exported with napari-cellseg-trainer)"])
            ],
            cite=[v0_5.CiteEntry(text=_UNET, doi=_UNET_DOI)],
            license=license,
            documentation=v0_5.FileDescr(source=files["readme"]),
            covers=[v0_5.FileDescr(source=files["cover"])],
            attachments=[v0_5.FileDescr(source=files["config"])],
            tags=_TAGS,
            inputs=[
                v0_5.InputTensorDescr(
                    id="raw",
                    axes=in_axes,
                    preprocessing=pre,
                    test_tensor=v0_5.FileDescr(source=files["input"]),
                )
            ],
            outputs=[
                v0_5.OutputTensorDescr(
                    id="probability",
                    axes=out_axes,
                    data=v0_5.IntervalOrRatioDataDescr(range=(0.0, 1.0)),
                    test_tensor=v0_5.FileDescr(source=files["output"]),
                )
            ],
            weights=v0_5.WeightsDescr(
                pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                    source=files["state_dict"], architecture=architecture, pytorch_version=version
                ),
                torchscript=v0_5.TorchscriptWeightsDescr(
                    source=files["torchscript"], pytorch_version=version, parent=_PARENT
                ),
            ),
            config={KEY: {"version": __version__, "prefix": PREFIX, **extra}},
        )
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ExportError(f"bioimage.io refuses the description: {problems}") from None


@_closes_leaked_files
def load_bioimageio(package_path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The full network (three outputs, the original weights) and training config of a package."""
    _spec()
    from bioimageio.spec import InvalidDescr, load_model_description

    path = Path(package_path)
    if not path.exists():
        raise ExportError(f"bioimage.io package {str(path)!r} does not exist")
    try:
        descr = load_model_description(path, perform_io_checks=False)
    except Exception as err:  # noqa: BLE001 - whatever fails here, it is no model package
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ExportError(f"{path}: not a bioimage.io model package ({reason})") from None
    if isinstance(descr, InvalidDescr) or KEY not in (descr.config.model_extra or {}):
        raise ExportError(f"{path}: not a model package exported by napari-cellseg-trainer")
    try:
        loaded = load_package(path, "cpu")  # the weights and config, as a checkpoint
    except CheckpointError as err:
        raise ExportError(str(err)) from None
    config = loaded.config
    model = StructureProbability(**_architecture(config, path)).net
    load_model_weights(model, loaded.model_state)
    return model, config
