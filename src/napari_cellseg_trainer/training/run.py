"""A training run's state, set up once: world, device, data, network and optimiser, patch buffer.

:func:`.loop.train` drives it; every event it yields is made here, and each step returns a list
of events (empty when it is not due, or not this rank's). Under torchrun every rank holds a run;
the methods that write files or show previews do so on rank 0 only.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data import PatchBuffer, PatchSet, TrainingImage, iter_batches, load_folder
from ..data.intensity import IntensityBand, augmented_versions
from ..data.quality import check_trainable, data_warnings
from ..data.sampling import Sampling
from ..data.zarr_folder import is_stored, normalised
from ..devices import available_ram, describe_device
from ..distributed import any_rank, current_world, rank_device, rank_rng, run_seed, weights_digest
from ..files import remove_dead_temporaries
from ..model_source import open_model
from ..models import geometry
from ..normalization import normalize
from ..starters import config_problems, is_starter
from .events import (
    BufferDrawn,
    CheckpointSaved,
    Event,
    HoldoutScore,
    Notice,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .folders import output_folder, resumed_checkpoint
from .holdout import Plateau, split_holdout
from .probe import faster_cpu_precision
from .schedule import RunClock
from .step import StepResult, TrainingError, TrainingStep
from .validation import holdout_iou, split_validation, validate

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
        images, self.recipe = prepared_images(cfg, images)
        self.warnings = data_warnings(images, self.recipe is None)
        self.voxel_size = cfg.voxel_size or _common(im.voxel_size for im in images)
        images, self.val_images = split_validation(images, cfg.validation, shared)
        self.train_images, self.slabs = split_holdout(images, cfg.holdout, cfg.size_out)
        self.step = TrainingStep(cfg, self.device, world, cpu_precision=faster_cpu_precision)
        self.epoch = self.iteration = 0
        resumed = resumed_checkpoint(cfg)
        if resumed is not None:  # every rank loads the same checkpoint, whatever their number
            loaded = ckpt.load_checkpoint(resumed, self.device)
            self.epoch, self.iteration = ckpt.restore_training_state(
                loaded, self.step.net, self.step.optimizer
            )
        elif cfg.finetune_from:
            ckpt.load_model_weights(self.step.net, finetune_source(cfg, self.device))
        self.step.prepare()
        self.out_dir = output_folder(cfg, resumed)
        if world.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_dead_temporaries(self.out_dir)  # a save killed mid-write leaves one
        self.n_patches = world.share(cfg.loader.PatchPerBuffer)
        check_buffer_memory(cfg, self.n_patches)
        acquisition = cfg.normalization if cfg.acquisition_augmentation else None
        sampling = Sampling(
            cfg.foreground_share, cfg.intensity_augmentation, acquisition, cfg.acquisition_per_patch
        )
        self.band = training_band(self.train_images, acquisition, self.rng)
        self.buffer = PatchBuffer(
            self.train_images,
            self.n_patches,
            cfg.size_in,
            cfg.size_out,
            self.rng,
            workers=cfg.loader.NumWorkers,
            prefetch=True,
            sampling=sampling,
        )
        self.iterations_per_epoch = math.ceil(self.n_patches / cfg.loader.batch_size)
        self.clock = RunClock(cfg, self.iterations_per_epoch, self.iteration)
        self.plateau = Plateau(cfg.early_stop)
        if resumed is not None and cfg.keep_best:
            self.plateau.best, self.plateau.best_epoch = kept_best(self.out_dir)
        self.threshold: float | None = None  # the held-out slabs' best, for these weights
        self.patches: PatchSet | None = None
        self.last_saved: Path | None = None
        self.best_saved: Path | None = None  # keep_best: checkpoint_best.pytorch once written

    # ------------------------------------------------------------------ the loop's steps

    def started(self) -> list[Event]:
        """TrainingStarted, then a warning for each doubt about the data (rank 0)."""
        cfg = self.cfg
        started = TrainingStarted(
            device=describe_device(self.device),
            n_train_images=len(self.train_images),
            n_validation_images=len(self.val_images),
            iterations_per_epoch=self.iterations_per_epoch,
            start_epoch=self.epoch,
            epochs=cfg.epochs,
            start_iteration=self.iteration,
            precision=self.step.options.name,
            folder=self.out_dir,
            minutes=cfg.minutes,
            normalization="as given" if self.recipe is None else f"recipe {self.recipe}",
            n_holdout_slabs=len(self.slabs),
        )
        notices = [Notice(text) for text in self.warnings] if self.world.main else []
        return [started, *notices]

    def draw_patches(self) -> list[Event]:
        """A new patch buffer at the first epoch and every ``epoch_shuffle`` epochs."""
        if self.patches is not None and self.epoch % self.cfg.loader.epoch_shuffle:
            return []
        started = time.perf_counter()
        self.patches = self.buffer.next_buffer()
        return [BufferDrawn(self.epoch, len(self.patches), time.perf_counter() - started)]

    def batches(self) -> Iterator[Batch]:
        """One pass over the current buffer in shuffled batches."""
        assert self.patches is not None
        return iter_batches(self.patches, self.cfg.loader.batch_size, self.rng)

    def stop_reason(self, stop: bool) -> str:
        """ "stopped" (asked, on any rank), "time budget" (spent), or "" to go on."""
        if any_rank(stop, self.world, self.device):
            return "stopped"
        if any_rank(self.clock.out_of_time(), self.world, self.device):
            return "time budget"
        return ""

    def train_step(self, batch: Batch) -> StepResult:
        lr = self.clock.learning_rate(self.iteration)
        for group in self.step.optimizer.param_groups:
            group["lr"] = lr
        self.iteration += 1
        return self.step(*batch, iteration=self.iteration)

    def preview(self, batch: Batch, result: StepResult) -> list[Event]:
        """Every ``preview_every_n_iter`` iterations on rank 0: the batch's most telling patch."""
        every = self.cfg.preview_every_n_iter
        if not (self.world.main and every and self.iteration % every == 0):
            return []
        raw, label, costmap = batch
        return [
            preview_patch(
                self.epoch, self.iteration, raw, label, costmap, result.main_output, self.cfg
            )
        ]

    def validate(self) -> list[Event]:
        """Every ``validate_every_n_epoch`` epochs when images are held out (figures on rank 0)."""
        if not self.val_images or self.epoch % self.cfg.validation.validate_every_n_epoch:
            return []
        pairs, iou = validate(self.step.net, self.val_images, self.cfg, self.device, self.world)
        return [ValidationDone(self.epoch, pairs, iou)] if self.world.main else []

    def score_holdout(self) -> list[Event]:
        """After every epoch with held-out slabs: their IoU, and a word when it plateaus."""
        if not self.slabs:
            return []
        iou, self.threshold, tuned = holdout_iou(self.step.net, self.slabs, self.cfg, self.device)
        improved = self.plateau.add(self.epoch, iou)
        plateau = self.plateau
        score = HoldoutScore(
            self.epoch, self.iteration, iou, plateau.best, plateau.best_epoch, self.threshold, tuned
        )
        events: list[Event] = [score]
        news = plateau.news()
        if news:
            events.append(Notice(news, "info"))
        if improved and self.cfg.keep_best:
            events += self.save(self.out_dir / ckpt.BEST_NAME, best=iou)
        return events if self.world.main else []

    def score_start(self) -> list[Event]:
        """Fine-tuning with held-out slabs: the starting weights' score (epoch 0), so that
        keep_best never ends worse than where the run started (a starter, a checkpoint)."""
        if not (self.cfg.finetune_from and self.slabs) or self.iteration:
            return []
        return self.score_holdout()

    def save_due(self) -> list[Event]:
        """The checkpoint every ``save_every_n_epoch`` epochs and after the last one."""
        last = self.epoch == self.cfg.epochs
        if self.epoch % self.cfg.save_every_n_epoch and not last:
            return []
        return self.save(ckpt.checkpoint_path(self.out_dir, self.epoch), final=last)

    def save_stopped(self) -> list[Event]:
        """The checkpoint of a stop: under its own name inside an epoch, never over an epoch's."""
        done_in_epoch = self.iteration - self.epoch * self.iterations_per_epoch
        path = ckpt.checkpoint_path(
            self.out_dir, self.epoch, self.iteration if done_in_epoch > 0 else None
        )
        if path == self.last_saved:
            return []  # this epoch's end is saved already
        return self.save(path, final=True)

    def save(self, path: Path, final: bool = False, best: float | None = None) -> list[Event]:
        """Write the weights, optimiser state and config (rank 0; the others hold the same).

        A failed save (a full disk) is a warning and the run goes on: the next save may work.
        A failed final save writes the checkpoint to the temporary folder instead, and says so.
        ``best``: the held-out IoU of these weights, saved as the run's best (keep_best).
        """
        if not self.world.main:
            return []
        try:
            return [self._write(path, best)]
        except ckpt.CheckpointError as err:
            if not final:
                return [Notice(f"{err}; training goes on, the next save will try again")]
            rescue = Path(tempfile.gettempdir()) / f"napari-cellseg-trainer-rescue-{time.time_ns()}"
            saved = self._write(rescue / path.name)  # raises if even that fails
            return [saved, Notice(f"{err}; the weights were saved to {saved.path} instead")]

    def _write(self, path: Path, best: float | None = None) -> CheckpointSaved:
        # how the raw was normalised (a recipe id, or None: as given): prediction repeats it
        extra = {
            "normalization": self.recipe,
            "voxel_size": self.voxel_size,
            "threshold": self.threshold,
            "intensity": self.band.to_extra(),
        }
        if best is not None:
            extra["holdout_iou"] = best
        saved = ckpt.save_checkpoint(
            path,
            model_state=self.step.net.state_dict(),
            optimizer_state=self.step.optimizer.state_dict(),
            epoch=self.epoch,
            num_iterations=self.iteration,
            device=str(self.device),
            config=self.cfg.to_dict(),
            extra=extra,
        )
        if best is not None:
            self.best_saved = saved
            return CheckpointSaved(self.epoch, self.iteration, saved, best=True)
        self.last_saved = saved
        return CheckpointSaved(epoch=self.epoch, iteration=self.iteration, path=saved)

    def finished(self, reason: str, detail: str = "") -> TrainingFinished:
        digest = weights_digest(self.step.net)
        best = self.plateau.best if self.best_saved else None
        return TrainingFinished(
            reason,
            self.epoch,
            self.iteration,
            self.last_saved,
            digest,
            detail,
            self.best_saved,
            best,
            self.plateau.best_epoch if self.best_saved else 0,
        )

    def close(self) -> None:
        self.buffer.close()


def kept_best(folder: Path) -> tuple[float, int]:
    """(held-out IoU, epoch) of the best checkpoint a resumed run kept, so no worse one replaces
    it; (-1, 0) when there is none."""
    path = folder / ckpt.BEST_NAME
    if not path.is_file():
        return -1.0, 0
    kept = ckpt.load_checkpoint(path)
    return float(kept.extra.get("holdout_iou", -1.0)), int(kept.epoch or 0)


def prepared_images(
    cfg: TrainConfig, images: Sequence[TrainingImage] | None
) -> tuple[list[TrainingImage], int | None]:
    """The run's images (the data folder's unless given), normalised as ``cfg`` asks.

    Returns the images and the recipe their raw was normalised by (None: as given, the
    established folder's rule). Images from layers arrive normalised by the recipe they carry.
    """
    if images is None:
        images = load_folder(
            cfg.loader.datafolder,
            cfg.nchannel,
            min(cfg.nclass),
            cfg.size_out,
            cfg.loss.ignore_index,
        )
    check_trainable(images)
    recipe = cfg.normalization
    if recipe is not None:
        images = [
            im
            if im.normalized_by == recipe
            else normalised(im, recipe)  # a stored image: window by window
            if is_stored(im)
            else replace(im, raw=normalize(im.raw, recipe), normalized_by=recipe)
            for im in images
        ]
    used = {im.normalized_by for im in images}
    return list(images), used.pop() if len(used) == 1 else None


def finetune_source(cfg: TrainConfig, device: torch.device) -> ckpt.Checkpoint:
    """The checkpoint ``finetune_from`` names (a file, a folder's newest, a starter), checked.

    A starter must fit the config's network, and the raw must be normalised as the starter's
    was: the normalisation travels with the starter into its fine-tunes.
    """
    reference = cfg.finetune_from
    if is_starter(reference):
        problems = config_problems(cfg)
        if problems:
            raise ckpt.CheckpointError(str(problems[0]))
        return open_model(reference, device)
    return open_model(ckpt.resolve_resume(reference), device)


def training_band(
    images: Sequence[TrainingImage], acquisition: int | None, rng: np.random.Generator
) -> IntensityBand:
    """The intensities the model learns from (recorded in its checkpoints): the images and,
    with the acquisition augmentation, a few of their changed versions."""
    recipe = images[0].normalized_by if images else None
    raws: Iterable[np.ndarray] = [im.raw for im in images]
    if acquisition is not None:
        local = np.random.default_rng(int(rng.integers(2**63)))
        changed = augmented_versions(list(raws), [im.label for im in images], acquisition, local)
        raws = itertools.chain(raws, changed)
    return IntensityBand.of(raws, recipe, augmented=acquisition is not None)


def check_buffer_memory(cfg: TrainConfig, n_patches: int) -> None:
    """Refuse, before allocating, a patch buffer the machine cannot hold (two are alive)."""
    per_patch = 4 * (cfg.nchannel * math.prod(cfg.size_in) + 2 * math.prod(cfg.size_out))
    need, have = 2 * n_patches * per_patch, available_ram()
    if need > 0.8 * have:
        fits = max(1, int(0.8 * have / (2 * per_patch)))
        raise TrainingError(
            f"loader.PatchPerBuffer {n_patches} needs {need / 2**30:.1f} GiB for its patches "
            f"(the buffer in use and the next one); {have / 2**30:.1f} GiB is available: use "
            f"at most {fits}"
        )


def _common(values) -> tuple | None:
    found = {v for v in values}
    return tuple(found.pop()) if len(found) == 1 and None not in found else None


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
