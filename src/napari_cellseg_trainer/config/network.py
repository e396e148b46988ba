"""The fields training and prediction configs share: the network and its patch sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import geometry
from .fields import POS_INT, Kind, VType, choice, int_list, param, section

PIN, MACHINE, OK = Kind.PIN, Kind.MACHINE, Kind.OK
OURS = " Added by napari-cellseg-trainer."


@dataclass
class ModelSection:
    name: str = param(
        "unet_xy",
        choice(*geometry.MODEL_NAMES),
        PIN,
        "Which model to use. `unet_xy` is suitable for smaller-scale structures, several voxels "
        "thick (e.g. tubulin, lamin B1). `unet_xy_zoom` is more suitable for larger-scale "
        "structures, more than 100 voxels in diameter (e.g. nucleus).",
        group="model",
    )
    zoom_ratio: int = param(
        3,
        VType("int", minimum=2, maximum=16),
        PIN,
        "Only for unet_xy_zoom: an integer (e.g. 2 or 3), estimated as the average diameter of "
        "the target objects in voxels divided by 150.",
        group="model",
    )


@dataclass
class NetworkFields:
    """The fields training and prediction configs share: the network and its patch sizes."""

    model: ModelSection = section(ModelSection)
    nchannel: int = param(
        1,
        POS_INT,
        OK,
        "Number of input channels. Related to the model architecture and fixed by default.",
        group="model",
    )
    nclass: list = param(
        [2, 2, 2],
        int_list(3, minimum=2),
        OK,
        "Number of classes of the main output and of the two auxiliary outputs. Related to the "
        "model architecture and fixed by default.",
        group="model",
    )
    size_in: list = param(
        [48, 148, 148],
        int_list(3, minimum=1),
        MACHINE,
        "Input patch size [z, y, x]. In most situations the entire image does not fit into the "
        "memory of a single GPU, so the model sees patches. Tied to batch_size and GPU memory: "
        "unet_xy on a 32 GB GPU: [48, 148, 148] with batch_size 8; unet_xy_zoom on a 32 GB "
        "GPU: [52, 420, 420] with batch_size 8. Must be a valid size for the model.",
        group="patch size",
    )
    size_out: list = param(
        [20, 60, 60],
        int_list(3, minimum=1),
        MACHINE,
        "Output patch size [z, y, x]: fully determined by size_in and the model "
        "(unet_xy: [48, 148, 148] -> [20, 60, 60]).",
        group="patch size",
        derived=True,
    )
