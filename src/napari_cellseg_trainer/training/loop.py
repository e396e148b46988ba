"""The training loop: a generator of small events, readable top to bottom.

``train(cfg)`` yields :mod:`.events` as it goes. It never prints and never touches a GUI; it
checks ``stop`` between batches and, when asked to stop, saves a checkpoint before returning.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data import PatchBuffer, TrainingImage, iter_batches, load_folder, margin_of
from ..devices import describe_device
from ..distributed import (
    any_rank,
    current_world,
    rank_device,
    sum_over_ranks,
    weights_digest,
    wrap,
)
from ..errors import UserInputError
from ..models import build_model
from .events import (
    BufferDrawn,
    CheckpointSaved,
    EpochEnd,
    Event,
    IterationEnd,
    PreviewPatch,
    TrainingFinished,
    TrainingStarted,
    ValidationDone,
)
from .loss import AuxLoss
from .precision import maybe_compile, step_options
from .validation import split_validation, validate


class TrainingError(UserInputError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to do."""


def checkpoint_path(folder: str | Path, epoch: int) -> Path:
    return Path(folder).expanduser() / f"checkpoint_epoch_{epoch}.pytorch"


def resolve_resume(resume: str) -> Path:
    """A checkpoint file, or the newest checkpoint in a folder."""
    path = Path(resume).expanduser()
    if path.is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            raise ckpt.CheckpointError(f"resume: no checkpoint_epoch_<N>.pytorch in {str(path)!r}")
        return latest
    return path


def train(
    cfg: TrainConfig,
    stop: threading.Event | None = None,
    images: Sequence[TrainingImage] | None = None,
) -> Iterator[Event]:
    """Train as ``cfg`` says, yielding events; ``images`` replaces the data folder if given.

    Under torchrun (a joined process group, see :mod:`.distributed`) every rank runs this with
    its own share of each patch buffer; rank 0 alone saves checkpoints and yields previews;
    the held-out images are split across ranks for validation.
    """
    stop = stop or threading.Event()
    world = current_world()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = rank_device(cfg.device, world)
    seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    if world.distributed and cfg.seed is None:  # rank 0's random seed, for all
        seed = int(sum_over_ranks([seed if world.main else 0], world, device)[0])
    shared_rng = np.random.default_rng(seed)  # the same on every rank: the validation split
    # Each rank draws its own patches; DDP starts every rank from rank 0's weights.
    rng = np.random.default_rng([seed, world.rank]) if world.distributed else shared_rng
    torch.manual_seed(seed)

    if images is None:
        images = load_folder(
            cfg.loader.datafolder,
            cfg.nchannel,
            min(cfg.nclass),
            cfg.size_out,
            cfg.loss.ignore_index,
        )
    train_images, val_images = split_validation(images, cfg.validation, shared_rng)

    net = build_model(cfg.model.name, cfg.nchannel, cfg.nclass, cfg.model.zoom_ratio).to(device)
    optimizer = torch.optim.Adam(
        net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    loss_fn = AuxLoss(cfg.loss.loss_weight, cfg.loss.ignore_index)
    epoch, iteration = 0, 0
    if cfg.resume:  # every rank loads the same full checkpoint, whatever the number of ranks
        epoch, iteration = _resume(cfg.resume, net, optimizer, device)
    options = step_options(cfg, device)
    if options.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    model = maybe_compile(wrap(net, device, world), cfg, device)

    out_dir = Path(cfg.checkpoint_dir).expanduser()
    if world.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    n_patches = world.share(cfg.loader.PatchPerBuffer)
    buffer = PatchBuffer(
        train_images,
        n_patches,
        cfg.size_in,
        cfg.size_out,
        rng,
        workers=cfg.loader.NumWorkers,
        prefetch=True,
    )
    yield TrainingStarted(
        device=describe_device(device),
        n_train_images=len(train_images),
        n_validation_images=len(val_images),
        iterations_per_epoch=math.ceil(n_patches / cfg.loader.batch_size),
        start_epoch=epoch,
        epochs=cfg.epochs,
        start_iteration=iteration,
        precision=options.name,
    )

    patches = None
    try:
        while epoch < cfg.epochs:
            if patches is None or epoch % cfg.loader.epoch_shuffle == 0:
                started = time.perf_counter()
                patches = buffer.next_buffer()
                yield BufferDrawn(epoch, len(patches.raw), time.perf_counter() - started)
            model.train()
            losses: list[float] = []
            epoch_start = time.perf_counter()
            for raw, label, costmap in iter_batches(patches, cfg.loader.batch_size, rng):
                if any_rank(stop.is_set(), world, device):
                    path = None
                    if world.main:  # the others have the same weights: one file is enough
                        saved = _save(out_dir, epoch, iteration, net, optimizer, device, cfg)
                        path = saved.path
                        yield saved
                    yield TrainingFinished("stopped", epoch, iteration, path, weights_digest(net))
                    return
                step_start = time.perf_counter()
                raw, label, costmap = raw.to(device), label.to(device), costmap.to(device)
                try:
                    with options.autocast(device):
                        outputs = model(options.layout(raw))
                    outputs = [o.float() for o in outputs]  # the loss in float32
                    loss = loss_fn(outputs, label, costmap)
                    # The mean over ranks: what is reported; a NaN anywhere stops every rank.
                    value = sum_over_ranks([float(loss.detach())], world, device)[0] / world.size
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"the loss became {value} at iteration {iteration + 1} "
                            f"(epoch {epoch + 1}); the weights were not updated and the last "
                            "checkpoint on disk is intact. Check the training data for NaN "
                            "values or lower learning_rate."
                        )
                    optimizer.zero_grad(set_to_none=True)
                    if options.scaler is None:
                        loss.backward()
                        optimizer.step()
                    else:  # fp16: scale the loss so small gradients do not underflow
                        options.scaler.scale(loss).backward()
                        options.scaler.step(optimizer)
                        options.scaler.update()
                except torch.OutOfMemoryError as err:
                    raise TrainingError(out_of_memory_message(cfg, device, iteration + 1)) from err
                iteration += 1
                losses.append(value)
                yield IterationEnd(epoch, iteration, value, time.perf_counter() - step_start)
                if (
                    world.main
                    and cfg.preview_every_n_iter
                    and iteration % cfg.preview_every_n_iter == 0
                ):
                    yield _preview(epoch, iteration, raw, label, costmap, outputs[0], cfg)
            epoch += 1
            yield EpochEnd(
                epoch, float(np.mean(losses)), iteration, time.perf_counter() - epoch_start
            )
            if val_images and epoch % cfg.validation.validate_every_n_epoch == 0:
                pairs, iou = validate(net, val_images, cfg, device, world)
                if world.main:
                    yield ValidationDone(epoch, pairs, iou)
            if world.main and (epoch % cfg.save_every_n_epoch == 0 or epoch == cfg.epochs):
                yield _save(out_dir, epoch, iteration, net, optimizer, device, cfg)
    finally:
        buffer.close()
    last = checkpoint_path(out_dir, epoch)
    yield TrainingFinished(
        "completed", epoch, iteration, last if last.exists() else None, weights_digest(net)
    )


def out_of_memory_message(cfg: TrainConfig, device: torch.device, iteration: int) -> str:
    """What to do when a step does not fit: the advisor's sizes for this device's memory."""
    from ..models.memory import MemoryBudgetError, advise

    text = (
        f"out of memory on {describe_device(device)} at iteration {iteration} with size_in "
        f"{cfg.size_in} and batch_size {cfg.loader.batch_size}; the last checkpoint on disk "
        "is intact. Use a smaller size_in or batch_size"
    )
    if device.type != "cuda":
        return text + "."
    total = torch.cuda.get_device_properties(device).total_memory
    try:
        advice = advise(cfg.model.name, total, cfg.model.zoom_ratio, cfg.nchannel)
    except MemoryBudgetError:
        return text + "."
    return (
        f"{text}, e.g. size_in {list(advice.size_in)} (size_out {list(advice.size_out)}) "
        f"with batch_size {advice.batch_size} (cellseg-trainer advise)."
    )


def _save(
    out_dir: Path,
    epoch: int,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    cfg: TrainConfig,
) -> CheckpointSaved:
    """Write ``checkpoint_epoch_<epoch>.pytorch`` (atomically) with the config inside."""
    path = ckpt.save_checkpoint(
        checkpoint_path(out_dir, epoch),
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        epoch=epoch,
        num_iterations=iteration,
        device=str(device),
        config=cfg.to_dict(),
    )
    return CheckpointSaved(epoch=epoch, iteration=iteration, path=path)


def _resume(
    resume: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, int]:
    """Load weights and optimiser state; return (epochs done, iterations done)."""
    loaded = ckpt.load_checkpoint(resolve_resume(resume), map_location=device)
    ckpt.load_model_weights(model, loaded)
    if loaded.optimizer_state is not None:
        optimizer.load_state_dict(loaded.optimizer_state)
    return loaded.epoch or 0, loaded.num_iterations or 0


def _preview(
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
    margin = margin_of(cfg.size_in, cfg.size_out)
    z, y, x = (slice(m, m + o) for m, o in zip(margin, cfg.size_out, strict=True))
    return PreviewPatch(
        epoch=epoch,
        iteration=iteration,
        raw=raw[k, 0, z, y, x].detach().cpu().numpy().astype(np.float32, copy=True),
        label=label[k].detach().cpu().numpy().astype(np.uint8),
        probability=main_output[k, 1].detach().exp().float().cpu().numpy(),
    )
