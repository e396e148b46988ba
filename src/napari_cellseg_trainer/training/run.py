"""A training run's state, set up once: world, device, data, network and optimiser, patch buffer.

:func:`.loop.train` drives it; every event it yields is made here. Under torchrun every rank
holds a run; the methods that write files or show previews do so on rank 0 only and return
None elsewhere, so the loop reads the same on every rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data import PatchBuffer, PatchSet, TrainingImage, iter_batches, load_folder
from ..devices import describe_device
from ..distributed import (
    any_rank,
    current_world,
    rank_device,
    rank_rng,
    run_seed,
    weights_digest,
)
from ..models import geometry
from .events import (
    BufferDrawn,
    CheckpointSaved,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .step import StepResult, TrainingStep
from .validation import split_validation, validate

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TrainingRun:
    """Everything one run of ``cfg`` needs; ``images`` replaces the data folder if given."""

    def __init__(self, cfg: TrainConfig, images: Sequence[TrainingImage] | None = None) -> None:
        self.cfg = cfg
        self.world = world = current_world()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = rank_device(cfg.device, world)
        seed = run_seed(cfg.seed, world, self.device)
        shared = np.random.default_rng(seed)  # alike on every rank: the validation split
        self.rng = rank_rng(shared, seed, world)
        torch.manual_seed(seed)  # DDP then starts every rank from rank 0's weights
        if images is None:
            images = load_folder(
                cfg.loader.datafolder,
                cfg.nchannel,
                min(cfg.nclass),
                cfg.size_out,
                cfg.loss.ignore_index,
            )
        self.train_images, self.val_images = split_validation(images, cfg.validation, shared)
        self.step = TrainingStep(cfg, self.device, world)
        self.epoch = self.iteration = 0
        if cfg.resume:  # every rank loads the same full checkpoint, whatever the number of ranks
            loaded = ckpt.load_checkpoint(ckpt.resolve_resume(cfg.resume), self.device)
            self.epoch, self.iteration = ckpt.restore_training_state(
                loaded, self.step.net, self.step.optimizer
            )
        self.step.prepare()
        self.out_dir = Path(cfg.checkpoint_dir).expanduser()
        if world.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.n_patches = world.share(cfg.loader.PatchPerBuffer)
        self.buffer = PatchBuffer(
            self.train_images,
            self.n_patches,
            cfg.size_in,
            cfg.size_out,
            self.rng,
            workers=cfg.loader.NumWorkers,
            prefetch=True,
        )
        self.patches: PatchSet | None = None
        self.last_saved: Path | None = None

    # ------------------------------------------------------------------ the loop's steps

    def started(self) -> TrainingStarted:
        cfg = self.cfg
        return TrainingStarted(
            device=describe_device(self.device),
            n_train_images=len(self.train_images),
            n_validation_images=len(self.val_images),
            iterations_per_epoch=math.ceil(self.n_patches / cfg.loader.batch_size),
            start_epoch=self.epoch,
            epochs=cfg.epochs,
            start_iteration=self.iteration,
            precision=self.step.options.name,
        )

    def draw_patches(self) -> BufferDrawn | None:
        """A new patch buffer at the first epoch and every ``epoch_shuffle`` epochs."""
        if self.patches is not None and self.epoch % self.cfg.loader.epoch_shuffle:
            return None
        started = time.perf_counter()
        self.patches = self.buffer.next_buffer()
        return BufferDrawn(self.epoch, len(self.patches), time.perf_counter() - started)

    def batches(self) -> Iterator[Batch]:
        """One pass over the current buffer in shuffled batches."""
        assert self.patches is not None
        return iter_batches(self.patches, self.cfg.loader.batch_size, self.rng)

    def stop_requested(self, stop: bool) -> bool:
        """True on every rank when any rank was asked to stop."""
        return any_rank(stop, self.world, self.device)

    def train_step(self, batch: Batch) -> StepResult:
        self.iteration += 1
        return self.step(*batch, iteration=self.iteration)

    def preview(self, batch: Batch, result: StepResult) -> PreviewPatch | None:
        """Every ``preview_every_n_iter`` iterations on rank 0: the batch's most telling patch."""
        every = self.cfg.preview_every_n_iter
        if not (self.world.main and every and self.iteration % every == 0):
            return None
        raw, label, costmap = batch
        return preview_patch(
            self.epoch, self.iteration, raw, label, costmap, result.main_output, self.cfg
        )

    def validate(self) -> ValidationDone | None:
        """Every ``validate_every_n_epoch`` epochs when images are held out (figures on rank 0)."""
        if not self.val_images or self.epoch % self.cfg.validation.validate_every_n_epoch:
            return None
        pairs, iou = validate(self.step.net, self.val_images, self.cfg, self.device, self.world)
        return ValidationDone(self.epoch, pairs, iou) if self.world.main else None

    def save_due(self) -> CheckpointSaved | None:
        """The checkpoint every ``save_every_n_epoch`` epochs and after the last one."""
        if self.epoch % self.cfg.save_every_n_epoch and self.epoch != self.cfg.epochs:
            return None
        return self.save(ckpt.checkpoint_path(self.out_dir, self.epoch))

    def save_stopped(self) -> CheckpointSaved | None:
        """The checkpoint of a stop: under its own name inside an epoch, never over an epoch's."""
        done_in_epoch = self.iteration - self.epoch * self.started().iterations_per_epoch
        iteration = self.iteration if done_in_epoch > 0 else None
        return self.save(ckpt.checkpoint_path(self.out_dir, self.epoch, iteration))

    def save(self, path: Path) -> CheckpointSaved | None:
        """Write the weights, optimiser state and config (rank 0; the others hold the same)."""
        if not self.world.main:
            return None
        saved = ckpt.save_checkpoint(
            path,
            model_state=self.step.net.state_dict(),
            optimizer_state=self.step.optimizer.state_dict(),
            epoch=self.epoch,
            num_iterations=self.iteration,
            device=str(self.device),
            config=self.cfg.to_dict(),
        )
        self.last_saved = saved
        return CheckpointSaved(epoch=self.epoch, iteration=self.iteration, path=saved)

    def finished(self, reason: str) -> TrainingFinished:
        return TrainingFinished(
            reason, self.epoch, self.iteration, self.last_saved, weights_digest(self.step.net)
        )

    def close(self) -> None:
        self.buffer.close()


def preview_patch(
    epoch: int,
    iteration: int,
    raw: torch.Tensor,
    label: torch.Tensor,
    costmap: torch.Tensor,
    main_output: torch.Tensor,
    cfg: TrainConfig,
) -> PreviewPatch:
    """The batch's most telling patch, its label and prediction (numpy).

    The patch with the most structure voxels that count in the loss (label > 0, cost > 0, not
    ``ignore_index``) wins, then the most voxels with cost > 0, then the first: a corner that the
    rotation brought in from outside the image (cost map 0) is never shown when a patch of
    real data is in the batch, and a patch with structure beats background.
    """
    counted = costmap.detach() > 0
    structure = counted & (label > 0)
    if cfg.loss.ignore_index is not None:
        structure &= label != cfg.loss.ignore_index
    voxels = counted[0].numel()
    score = structure.flatten(1).sum(1) * (voxels + 1) + counted.flatten(1).sum(1)  # int64
    k = int(score.argmax())
    margin = geometry.margin(cfg.model.name, cfg.size_in, cfg.model.zoom_ratio)
    z, y, x = (slice(m, m + o) for m, o in zip(margin, cfg.size_out, strict=True))
    return PreviewPatch(
        epoch=epoch,
        iteration=iteration,
        raw=raw[k, 0, z, y, x].detach().cpu().numpy().astype(np.float32, copy=True),
        label=label[k].detach().cpu().numpy().astype(np.uint8),
        probability=main_output[k, 1].detach().exp().float().cpu().numpy(),
    )
