"""The prediction config: the established trainer's keys, plus tiling options of ours."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .fields import POS_INT, VType, choice, int_list, param, section
from .fields import to_dict as _to_dict
from .network import MACHINE, OK, OURS, PIN, NetworkFields

DEVICE_HELP = (
    "Where to run: auto (CUDA GPU, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps." + OURS
)


@dataclass
class PredictMode:
    name: str = param(
        "file",
        choice("file", "folder", "fromfile", "fromfolder"),
        PIN,
        "`file`: one image (InputFile); `folder`: every file of DataType in InputDir.",
        group="input",
    )
    InputFile: str | None = param(
        None,
        VType("path", optional=True),
        PIN,
        "The image to segment (file mode).",
        group="input",
        path="file",
    )
    timelapse: bool = param(
        False,
        VType("bool"),
        PIN,
        "The file is a time-lapse: segment each time point (file mode).",
        group="input",
    )
    InputDir: str | None = param(
        None,
        VType("path", optional=True),
        PIN,
        "The folder of images to segment (folder mode).",
        group="input",
        path="dir",
    )
    DataType: str = param(
        ".tiff",
        VType("str"),
        PIN,
        "File ending of the images to segment in folder mode, e.g. .tiff; several separated "
        "by commas (.tiff,.zarr). Zarr stores (folders) count as images: .zarr, .ome.zarr.",
        group="input",
    )

    @property
    def is_folder(self) -> bool:
        return self.name in ("folder", "fromfolder")


@dataclass
class PredictConfig(NetworkFields):
    """The prediction config (the established trainer's keys, plus tiling options).

    ``size_in`` may be ``auto``: the cheapest tile that fits the device's memory is chosen for
    each volume (:mod:`..inference.tile_choice`); an explicit size is used as given.
    """

    size_in: Any = param(
        [48, 148, 148],
        VType("list", item=VType("int", minimum=1), length=3, auto=True),
        MACHINE,
        "Tile size [z, y, x] fed to the model, or auto: the cheapest valid tile that fits the "
        "memory (the GPU's free memory, or a share of the RAM), never larger than the volume "
        "needs. Any valid size predicts the same volume; bigger tiles recompute less margin.",
        group="patch size",
    )
    size_out: Any = param(
        [20, 60, 60],
        VType("list", item=VType("int", minimum=1), length=3, auto=True),
        MACHINE,
        "Output tile size [z, y, x]: fully determined by size_in and the model; auto with "
        "size_in auto.",
        group="patch size",
        derived=True,
    )
    model_path: str = param(
        "",
        VType("str"),
        PIN,
        "The checkpoint file of the trained model.",
        group="model",
        path="file",
    )
    OutputCh: list = param(
        [0, 1],
        int_list(None, minimum=0),
        OK,
        "Pairs (output index, class channel) to save; [0, 1] = foreground of the main output.",
        group="output",
    )
    OutputDir: str = param(
        "",
        VType("str"),
        PIN,
        "Folder for the results.",
        group="output",
        path="dir",
    )
    InputCh: list = param(
        [0],
        int_list(None, minimum=-1),
        PIN,
        "Channel indices of the input image to feed the model, e.g. [0]; -1 = the last one.",
        group="input",
    )
    ResizeRatio: list = param(
        [1.0, 1.0, 1.0],
        VType("list", item=VType("float", minimum=0.05, maximum=20), length=3),
        PIN,
        "[z, y, x] factors applied to the image before the model, undone after.",
        group="input",
    )
    Normalization: Any = param(
        10,
        VType("any"),
        PIN,
        "Normalisation recipe id (see the reference), or a dict of per-channel operations.",
        group="input",
    )
    level: int = param(
        0,
        VType("int", minimum=0),
        OK,
        "OME-Zarr inputs: the resolution level to segment (0: the full resolution), with that "
        "level's voxel size; the results have its shape." + OURS,
        group="input",
    )
    Threshold: float = param(
        -1.0,
        VType("float", maximum=1),
        PIN,
        "> 0: binary output (0/255, uint8) at this threshold; <= 0: probabilities (float32).",
        group="output",
    )
    RuntimeAug: bool = param(
        False,
        VType("bool"),
        OK,
        "Test-time augmentation: average the prediction over flips of x, y and z (slower).",
        group="output",
    )
    output_format: str = param(
        "tiff",
        choice("tiff", "ome-zarr"),
        OK,
        "tiff: one OME-TIFF per result (the established). ome-zarr: an OME-Zarr per result, "
        "written block by block, so volumes larger than memory predict in bounded memory (an "
        "interrupted run resumes; under torchrun the ranks share the blocks)." + OURS,
        group="output",
    )
    mode: PredictMode = section(PredictMode)
    tiling: str = param(
        "blend",
        choice("blend", "established"),
        OK,
        "blend: overlapping tiles blended with smooth weights (no seams); established: the "
        "command-line trainer's non-overlapping tiles." + OURS,
        group="runtime",
    )
    overlap: float = param(
        0.25,
        VType("float", minimum=0, maximum=0.75),
        OK,
        "Fraction of a tile shared with its neighbour in blend mode." + OURS,
        group="runtime",
    )
    batch_size: int = param(4, POS_INT, MACHINE, "Tiles per forward pass." + OURS, group="runtime")
    device: str = param("auto", VType("str"), MACHINE, DEVICE_HELP, group="runtime")
    precision: str = param(
        "auto",
        choice("auto", "fp32", "bf16"),
        MACHINE,
        "Arithmetic of the prediction. auto: float32, except on a CPU that multiplies bfloat16 "
        "natively (AVX-512 BF16 or AMX): there the first batch of tiles runs in both, and "
        "bfloat16 predicts the rest if it was faster and no probability differed by more than "
        "0.02. bf16: bfloat16 mixed precision throughout; fp32: full precision." + OURS,
        group="runtime",
    )

    def copy(self) -> PredictConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        return _to_dict(self)
