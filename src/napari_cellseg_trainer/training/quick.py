"""The quick preset: settings chosen for this machine, for a usable model within minutes.

The valid convolutions make a patch's context cost the same whatever its output: ``[32, 100,
100] -> [4, 12, 12]`` supervises 576 voxels for 320,000 input voxels, ``[48, 148, 148] -> [20,
60, 60]`` 72,000. A step's time follows its multiply-adds (:mod:`.probe`), so the supervised
voxels per second grow with the patch; the preset takes the patch and batch that supervise the
most voxels per second within the memory this machine has, small enough that the time budget
still holds :data:`MIN_STEPS` steps, and whose output fits in the training images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..config.presets import ROBUST_NORMALIZATION, STARTER, starting_point
from ..devices import available_ram, select_device
from ..errors import UserInputError
from ..model_source import open_model
from ..models import geometry
from ..models.memory import (
    BYTES_PER_ELEMENT,
    BYTES_PER_PARAMETER,
    FIXED_BYTES,
    layer_shapes,
    parameter_count,
)
from .folders import RUN_PREFIX
from .probe import StepSpeed, fastest_cpu_step, probe_step_speed

MIN_STEPS = 40  # steps the time budget holds at least: enough updates to learn from (measured:
# on real nuclei a [48, 132, 132] patch beat the threshold baseline from ~15 steps)
CPU_SHARE = 0.5  # of the RAM available now (napari and the data need the rest)
GPU_SHARE = 0.85  # of the GPU's free memory
BATCHES = {"cpu": (1,), "cuda": (1, 2, 4, 8)}  # on a CPU a bigger batch is no faster per voxel
LEARNING_RATE = 1e-3  # with warm-up and cosine decay. Measured on real nuclei (5 min): the
# held-out IoU reached 0.69 at 1e-3, 0.40 at 1e-4 (too little change in ~40 steps), 0.45 at 3e-3
SCORES_PER_RUN = 5  # held-out scores in a run: scoring the slab costs about a third of a
# one-minute epoch, so epochs of a fifth of the budget (at least a minute) leave it to training
SAMPLE_PRESET_VOXELS_PER_STEP = 4 * 12 * 12 * 2  # the Sample preset: [4, 12, 12] x batch 2


class PresetError(UserInputError, ValueError):
    """No patch fits this machine's memory and the images."""


@dataclass(frozen=True)
class QuickChoice:
    size_in: tuple[int, int, int]
    size_out: tuple[int, int, int]
    batch_size: int
    step_seconds: float
    budget_bytes: int
    speed: StepSpeed

    @property
    def supervised_per_second(self) -> float:
        return math.prod(self.size_out) * self.batch_size / self.step_seconds

    def explain(self, minutes: float) -> str:
        """The choice in one line."""
        steps = minutes * 60 / self.step_seconds
        sample = self.speed.step_seconds("unet_xy", (32, 100, 100), 2)
        ratio = self.supervised_per_second / (SAMPLE_PRESET_VOXELS_PER_STEP / sample)
        return (
            f"quick preset on {self.speed.device}: size_in {list(self.size_in)} -> "
            f"{list(self.size_out)}, batch {self.batch_size}: "
            f"{math.prod(self.size_out) * self.batch_size:,} supervised voxels a step, about "
            f"{self.step_seconds:.1f} s a step here (~{steps:.0f} steps in {minutes:g} min), "
            f"{self.supervised_per_second:,.0f} voxels/s, {ratio:.0f}x the Sample preset's"
        )


def choose_patch(
    model: str,
    speed: StepSpeed,
    budget_bytes: int,
    max_step_seconds: float,
    image_shape: Sequence[int] | None = None,
    zoom_ratio: int = 3,
    batches: Sequence[int] = (1,),
) -> QuickChoice:
    """The valid patch and batch with the most supervised voxels per second, within the limits.

    ``image_shape`` (the smallest training image, z y x) bounds the output patch: it must fit.
    All candidate sizes are weighed at once (numpy), from the memory and work models.
    """
    smallest = geometry.min_size_in(model, zoom_ratio)
    loss = np.subtract(smallest, geometry.size_out(model, smallest, zoom_ratio))
    limit = np.array(image_shape if image_shape is not None else (10**6,) * 3)
    z = np.arange(smallest[0], smallest[0] + 72)
    yx = np.array(geometry.valid_yx(model, zoom_ratio, hi=smallest[1] * 8))
    z, y, x = np.meshgrid(
        z[z - loss[0] <= limit[0]],
        yx[yx - loss[1] <= limit[1]],
        yx[yx - loss[2] <= limit[2]],
        indexing="ij",
    )
    if not z.size:
        raise PresetError(f"the images {list(image_shape)} are smaller than any output patch")
    shapes = layer_shapes(model, zoom_ratio)
    out = (z - loss[0]) * (y - loss[1]) * (x - loss[2])
    best, best_rate = None, -1.0
    fixed = parameter_count(model, zoom_ratio) * BYTES_PER_PARAMETER + FIXED_BYTES
    for batch in batches:
        seconds = speed.seconds_per_work * shapes.multiply_adds(z, y, x) * batch
        need = shapes.elements(z, y, x) * batch * BYTES_PER_ELEMENT + fixed
        rate = np.where(
            (seconds <= max_step_seconds) & (need <= budget_bytes), out * batch / seconds, -1
        )
        i = np.unravel_index(int(np.argmax(rate)), rate.shape)
        if rate[i] > best_rate:
            best_rate = float(rate[i])
            size_in = (int(z[i]), int(y[i]), int(x[i]))
            best = QuickChoice(
                size_in,
                geometry.size_out(model, size_in, zoom_ratio),
                batch,
                float(seconds[i]),
                budget_bytes,
                speed,
            )
    if best is None or best_rate <= 0:
        raise PresetError(
            f"no patch of {model} fits {budget_bytes / 2**30:.1f} GiB with a step under "
            f"{max_step_seconds:.0f} s on {speed.device}"
        )
    return best


def training_budget(device: torch.device) -> int:
    """Bytes a training step may use here."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE)
    return int(available_ram() * CPU_SHARE)


def quick_preset(
    datafolder: str,
    checkpoint_dir: str,
    *,
    model: str = "unet_xy",
    zoom_ratio: int = 3,
    minutes: float = 10.0,
    device: str = "auto",
    image_shape: Sequence[int] | None = None,
    holdout: float = 0.2,
    start: str = STARTER,
) -> tuple[TrainConfig, str]:
    """A config for a good result within ``minutes`` here, and the one line that explains it.

    ``image_shape``: the smallest training image (z, y, x), when known; the held-out slab is
    taken off its longest y-x axis before the patch must fit. ``start``: ``"starter"`` (the
    starter model that fits ``model``, when there is one), ``"scratch"`` (random weights), or a
    checkpoint to fine-tune.
    """
    torch_device = select_device(device)
    cpu = fastest_cpu_step(model, torch_device, zoom_ratio) if torch_device.type == "cpu" else None
    speed = cpu.speed if cpu is not None else probe_step_speed(model, torch_device, zoom_ratio)
    shape = None
    if image_shape is not None:
        shape = list(image_shape)
        axis = 2 if shape[2] >= shape[1] else 1
        shape[axis] -= max(1, round(holdout * shape[axis])) if holdout else 0
    kind = "cuda" if torch_device.type == "cuda" else "cpu"
    choice = choose_patch(
        model,
        speed,
        training_budget(torch_device),
        minutes * 60 / MIN_STEPS,
        shape,
        zoom_ratio,
        BATCHES[kind],
    )
    cfg = TrainConfig()
    cfg.model.name, cfg.model.zoom_ratio = model, zoom_ratio
    cfg.size_in, cfg.size_out = list(choice.size_in), list(choice.size_out)
    cfg.loader.batch_size = choice.batch_size
    cfg.loader.datafolder, cfg.checkpoint_dir = datafolder, checkpoint_dir
    # an epoch of a fifth of the budget (a minute at least): a fresh buffer and a held-out score
    epoch_seconds = max(60.0, minutes * 60 / SCORES_PER_RUN)
    cfg.loader.PatchPerBuffer = (
        max(1, round(epoch_seconds / choice.step_seconds)) * choice.batch_size
    )
    cfg.loader.epoch_shuffle = 1
    cfg.epochs = 100_000  # the time budget ends the run
    cfg.save_every_n_epoch = 5
    cfg.minutes = minutes
    cfg.learning_rate = LEARNING_RATE
    cfg.lr_schedule = "warmup_cosine"
    cfg.foreground_share = 0.5
    # the next volume may be brighter, dimmer or carry a bright artefact: train for it, and
    # normalise so that stripes, specks, a gain (a saturating one too), an offset or a gamma are
    # undone (recipe 26, docs/training.md)
    cfg.intensity_augmentation = True
    cfg.acquisition_augmentation = True
    cfg.acquisition_per_patch = True  # a change a patch: the 10-minute fine-tune holds
    cfg.normalization = ROBUST_NORMALIZATION
    cfg.holdout = holdout
    cfg.keep_best = bool(holdout)  # short runs go up and down: predict with their best
    cfg.run_subfolder = True
    cfg.preview_every_n_iter = 1
    cfg.device = device
    line = choice.explain(minutes)
    if cpu is not None:  # the probe's step setting; an old-style fp32 config where it had none
        if cpu.native_bf16:
            cfg.precision, cfg.channels_last = speed.precision, speed.channels_last
        cfg.num_threads = cpu.threads
        line += f"; {cpu.describe()}"
    return cfg, f"{line}; {starting_point(cfg, start)}"


def fine_tune_preset(checkpoint: Path, minutes: float = 3.0) -> TrainConfig:
    """Correct and retrain: the checkpoint's own training config, continued on new labels.

    The weights are kept (``finetune_from``), the optimiser and the epoch count start afresh,
    the run gets its own folder beside the checkpoint's run, and the schedule is short: a
    warm-up and a decay over ``minutes``, from half the original learning rate (at most 5e-5),
    so the model adapts to the corrections without forgetting what it learned.
    """
    loaded = open_model(checkpoint)
    cfg = loaded.train_config()
    if cfg is None:
        raise PresetError(f"{checkpoint.name} carries no training config to continue from")
    cfg.resume, cfg.finetune_from = None, str(checkpoint)
    parent = checkpoint.parent
    cfg.checkpoint_dir = str(parent.parent if parent.name.startswith(RUN_PREFIX) else parent)
    cfg.run_subfolder = True
    cfg.minutes, cfg.epochs = minutes, 100_000
    cfg.learning_rate = min(cfg.learning_rate, 1e-4) / 2
    cfg.lr_schedule = "warmup_cosine"
    cfg.holdout, cfg.early_stop, cfg.validation.metric = 0.0, None, None
    cfg.keep_best = False  # nothing held out to judge by
    cfg.freeze_batchnorm = True  # a few corrected planes must not replace the statistics
    cfg.loader.epoch_shuffle, cfg.save_every_n_epoch = 1, 100_000
    return cfg
