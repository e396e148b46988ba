"""The training config: the established trainer's keys (spelling included), plus a few of ours.

Each field is declared once with its type, default, bounds, kind and help (the seed's words,
lightly trimmed); the form, the tooltips, YAML, ``--set`` and the docs are generated from it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .fields import NONNEG_INT, POS_INT, VType, choice, float_list, int_list, param, section
from .fields import to_dict as _to_dict
from .network import MACHINE, OK, OURS, PIN, NetworkFields

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LossSection:
    name: str = param(
        "Aux",
        choice("Aux"),
        OK,
        "Aux: weighted sum of the losses of the main output and the two auxiliary outputs.",
        group="training",
        label="loss",
    )
    loss_weight: list = param(
        [1.0, 1.0, 1.0],
        float_list(3, minimum=0),
        OK,
        "Weights of the main and the two auxiliary losses.",
        group="training",
    )
    ignore_index: int | None = param(
        None,
        VType("int", minimum=0, optional=True),
        OK,
        "A label value whose voxels contribute nothing to the loss; null for none.",
        group="training",
    )


@dataclass
class LoaderSection:
    name: str = param(
        "default",
        choice("default"),
        OK,
        "Data loader; fixed by default.",
        group="data",
        label="loader",
    )
    datafolder: str = param(
        "",
        VType("str"),
        PIN,
        "The directory of training data: for each image NAME, NAME.ome.tif (raw), "
        "NAME_GT.ome.tif (ground truth) and NAME_CM.ome.tif (cost map).",
        group="data",
        label="data folder",
        path="dir",
    )
    batch_size: int = param(
        8,
        VType("int", minimum=1, maximum=4096),
        MACHINE,
        "Patches per training step. Related to GPU memory and patch size (see size_in): "
        "8 with [48, 148, 148] on a 32 GB GPU.",
        group="patch size",
    )
    PatchPerBuffer: int = param(
        200,
        POS_INT,
        PIN,
        "The number of sample patches randomly drawn in each buffer, which can be set as "
        "(number of patches to draw from each image) x (number of training images).",
        group="data",
        label="patches per buffer",
    )
    epoch_shuffle: int = param(
        5,
        POS_INT,
        OK,
        "Epochs between redrawing the patch buffer; fixed by default.",
        group="data",
        label="epoch shuffle",
    )
    NumWorkers: int = param(
        1,
        VType("int", minimum=0, maximum=256),
        OK,
        "Data-loading workers (threads that prepare the next patch buffer); fixed by default.",
        group="data",
        label="workers",
    )


@dataclass
class ValidationSection:
    metric: str | None = param(
        None,
        choice("default", optional=True),
        OK,
        "Validation after every few epochs to make sure things are not going wrong. Training "
        "data are usually very limited, so by default validation is off (null); for advanced "
        "users. `default` = IoU within the cost map.",
        group="validation",
    )
    leaveout: list = param(
        [0],
        VType("list", item=VType("number", minimum=0)),
        OK,
        "Indices of the training images held out for validation; a single value in (0, 1) is "
        "the fraction of images held out.",
        group="validation",
    )
    OutputCh: list = param(
        [0, 1, 1, 1, 2, 1],
        int_list(None, minimum=0),
        OK,
        "Pairs (output index, class channel) to validate, e.g. [0, 1, 1, 1, 2, 1].",
        group="validation",
        label="output channels",
    )
    validate_every_n_epoch: int = param(
        25,
        POS_INT,
        OK,
        "Validate every this many epochs.",
        group="validation",
        label="validate every n epochs",
    )


@dataclass
class TrainConfig(NetworkFields):
    """The training config (the established trainer's keys, plus a few of ours)."""

    checkpoint_dir: str = param(
        "",
        VType("str"),
        PIN,
        "The directory where the trained model (checkpoints) is saved.",
        group="training",
        path="dir",
    )
    resume: str | None = param(
        None,
        VType("path", optional=True),
        PIN,
        "To start this training from a previously saved model, the path of that checkpoint "
        "(or of a folder: its newest checkpoint). Empty (null) starts from scratch.",
        group="training",
        path="file",
    )
    learning_rate: float = param(
        1e-5,
        VType("float", minimum=0),
        OK,
        "Learning rate of the Adam optimiser.",
        group="training",
    )
    weight_decay: float = param(
        0.005,
        VType("float", minimum=0),
        OK,
        "Weight decay of the Adam optimiser.",
        group="training",
    )
    loss: LossSection = section(LossSection)
    epochs: int = param(
        400,
        VType("int", minimum=1, maximum=10**7),
        PIN,
        "How many epochs to train (one epoch = one pass over the patch buffer). We suggest "
        "values between 300 and 600.",
        group="training",
    )
    save_every_n_epoch: int = param(
        40,
        POS_INT,
        PIN,
        "A model checkpoint is saved every save_every_n_epoch epochs.",
        group="training",
    )
    loader: LoaderSection = section(LoaderSection)
    validation: ValidationSection = section(ValidationSection)
    minutes: float | None = param(
        None,
        VType("float", minimum=0.1, maximum=10**6, optional=True),
        PIN,
        "Train for at most this many minutes of wall time, then stop as Stop does (a "
        "checkpoint is saved); progress, ETA and lr_schedule use it. null: until epochs are "
        "done." + OURS,
        group="learning",
    )
    lr_schedule: str = param(
        "constant",
        choice("constant", "warmup_cosine"),
        OK,
        "constant: learning_rate throughout (the established trainer). warmup_cosine: a linear "
        "warm-up over the first 5% of the run, then a cosine decay to 5% of learning_rate at its "
        "end (the end of minutes when set, else of epochs)." + OURS,
        group="learning",
    )
    foreground_share: float = param(
        0.0,
        VType("float", minimum=0, maximum=1),
        OK,
        "Share of the patches centred on a structure voxel (label > 0 where the cost map counts), "
        "the rest drawn uniformly: patches that teach. 0: all uniform (the established "
        "sampling)." + OURS,
        group="learning",
    )
    intensity_augmentation: bool = param(
        False,
        VType("bool"),
        OK,
        "Vary each patch's brightness, contrast and gamma and add a little noise (in float), so "
        "the model learns shapes rather than one image's exposure." + OURS,
        group="learning",
    )
    acquisition_augmentation: bool = param(
        False,
        VType("bool"),
        OK,
        "Once per buffer, change each training image as a next acquisition might record it "
        "(gain x0.5-2, offset, gamma, the structure's contrast, some saturated specks, a bright "
        "stripe or blob, saturating at the image's brightest voxel; the labels unchanged), then "
        "normalise it again: the model then holds on "
        "a brighter or dimmer next volume. Needs normalization." + OURS,
        group="learning",
    )
    acquisition_per_patch: bool = param(
        False,
        VType("bool"),
        OK,
        "With acquisition_augmentation: a change of its own for each patch instead of one per "
        "image and buffer (a 10-minute run draws about four buffers: four changes). The whole "
        "image is changed and normalised again for each change, so a big image gets fewer (at "
        "most 64M voxels changed per image and buffer, at least one change); on nuclei_1135 "
        "the fine-tune then never fell below its start (docs/benchmarks.md)." + OURS,
        group="learning",
    )
    normalization: int | None = param(
        None,
        VType("int", minimum=0, optional=True),
        PIN,
        "How the training raw is normalised, as a recipe id of the prediction config's "
        "Normalization (e.g. 0: min-max, 20: percentiles 1-99.8, 21: percentiles 5-95, robust to a "
        "bright tail, 22: 21 with specks removed and the median brought to 0.25, robust to a "
        "brighter, dimmer or spoilt next volume, 24: 22 with bright stripes taken out first, "
        "25: 24 with the voxels at the volume's maximum kept bright, robust to a gain that "
        "saturates, 26: 25 where that maximum lies 1.5 windows up or more, else 24, so that a "
        "structure which itself saturates is not made brighter). null: folder images as given "
        "(they should already be about [0, 1]), layers min-max (0). Recorded in the checkpoint: "
        "prediction applies the same by default." + OURS,
        group="learning",
    )
    holdout: float = param(
        0.0,
        VType("float", minimum=0, maximum=0.5),
        OK,
        "Fraction of each training image (a slab at the end of its longest y-x axis) kept out of "
        "training to measure a held-out IoU after every epoch (metrics.csv, the loss plot). 0: "
        "none." + OURS,
        group="learning",
    )
    early_stop: int | None = param(
        None,
        VType("int", minimum=1, optional=True),
        OK,
        "Stop (with a checkpoint, saying why) when the held-out IoU has not improved for this "
        "many epochs; needs holdout > 0. null: never." + OURS,
        group="learning",
    )
    freeze_batchnorm: bool = param(
        False,
        VType("bool"),
        OK,
        "Keep the BatchNorm layers' running statistics as the starting weights have them, and "
        "normalise with them while training: in a short fine-tune with batches of one, the last "
        "few patches would otherwise replace the statistics the model learned over many. The "
        "Predict tab's Fine-tune (correct and retrain) sets it." + OURS,
        group="learning",
    )
    keep_best: bool = param(
        False,
        VType("bool"),
        OK,
        "Also keep the weights with the best held-out IoU so far as checkpoint_best.pytorch, "
        "and predict with them after the run (short runs go up and down); needs holdout > 0. "
        "false: the last checkpoint only." + OURS,
        group="learning",
    )
    run_subfolder: bool = param(
        False,
        VType("bool"),
        OK,
        "Write each run into a new folder inside checkpoint_dir, named by its start time, so runs "
        "never mix. false: into checkpoint_dir itself, which must then hold no other run (set "
        "resume to continue one)." + OURS,
        group="training",
    )
    finetune_from: str | None = param(
        None,
        VType("path", optional=True),
        PIN,
        "Start from the weights of this checkpoint (or a folder's newest) with a fresh optimiser "
        "and epoch count: fine-tuning on new or corrected labels. Unlike resume, a new run. "
        "starter:nuclei (unet_xy_zoom) or starter:boundaries (unet_xy) starts from a starter "
        "model shipped with the plugin; normalization must then be the starter's (22; 24, 25, "
        "26 and 21 also work)." + OURS,
        group="training",
        path="file",
    )
    voxel_size: list | None = param(
        None,
        VType("list", item=VType("float", minimum=0), length=3, optional=True),
        OK,
        "Voxel size [z, y, x] in micrometres of the training images; null: read from the images "
        "(OME PhysicalSize, the layers' scale) where they say. Recorded in the checkpoint, so "
        "prediction can match it." + OURS,
        group="learning",
    )
    device: str = param(
        "auto",
        VType("str"),
        MACHINE,
        "Where to train: auto (CUDA GPU, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps."
        + OURS,
        group="runtime",
    )
    seed: int | None = param(
        None,
        VType("int", minimum=0, optional=True),
        OK,
        "Random seed for patch drawing and augmentation; null draws a fresh seed each run." + OURS,
        group="runtime",
    )
    preview_every_n_iter: int = param(
        20,
        NONNEG_INT,
        OK,
        "Send a predicted patch to the viewer every this many iterations (0 = never)." + OURS,
        group="runtime",
    )
    num_threads: int | None = param(
        None,
        VType("int", minimum=1, maximum=4096, optional=True),
        MACHINE,
        "CPU threads torch may use (null = torch's default; in the napari panel on a machine "
        "with 4 or more cores, all cores but one, which stays free for napari)." + OURS,
        group="runtime",
    )
    precision: str = param(
        "auto",
        choice(*PRECISIONS),
        MACHINE,
        "Arithmetic of the training step. auto: bfloat16 mixed precision on CUDA GPUs that "
        "support it (Ampere and newer; several times faster, half the activation memory) and "
        "on CPUs that multiply bfloat16 natively (AVX-512 BF16 or AMX) where a probe of real "
        "steps, cached per machine, found it faster; float32 elsewhere (emulated bfloat16 is "
        "tens of times slower). bf16 / fp16: mixed precision (fp16 with loss scaling); fp32: "
        "full precision. Weights and checkpoints stay float32." + OURS,
        group="runtime",
    )
    channels_last: bool = param(
        False,
        VType("bool"),
        MACHINE,
        "Keep activations in the channels-last 3-D memory layout (faster convolutions on "
        "recent NVIDIA GPUs with mixed precision; harmless elsewhere)." + OURS,
        group="runtime",
    )
    compile: bool = param(
        False,
        VType("bool"),
        MACHINE,
        "Compile the network with torch.compile (CUDA only: faster steps after a first step "
        "that takes a minute or more)." + OURS,
        group="runtime",
    )

    def copy(self) -> TrainConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict:
        return _to_dict(self)
