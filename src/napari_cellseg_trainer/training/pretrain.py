"""Pretraining a starter on generated volumes: time-budgeted, resumable, checkpointing as training.

Every buffer is cut from volumes the generator (:mod:`..data.synthetic`) draws afresh, so the
network never sees the same image twice. Each volume is first changed as a next acquisition
might change it (:func:`..data.sampling.acquisition_change`), then
normalised with the recipe the starter records, then cut into patches as training cuts them
(rotation, flip, foreground-centred share, intensity augmentation). The checkpoints are ordinary
checkpoints (``checkpoint_epoch_<N>.pytorch`` with the config embedded), so a stopped run
resumes where it stopped and any checkpoint can be exported as a starter.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data.buffer import PatchSet, draw_buffer, iter_batches
from ..data.folder import TrainingImage
from ..data.intensity import IntensityBand, acquisition_change
from ..data.sampling import Sampling
from ..data.synthetic import synthetic_volume
from ..errors import UserInputError
from ..models import geometry
from ..normalization import normalize
from .probe import faster_cpu_precision
from .step import TrainingStep

NORMALIZATION = 22  # specks removed, percentiles 5-95, median to 0.25: the starters' recipe


class PretrainError(UserInputError, ValueError):
    """A pretraining request that cannot run (unknown starter, unusable folder)."""


@dataclass(frozen=True)
class Recipe:
    """What a starter is pretrained on and with."""

    model: str
    zoom_ratio: int
    scenes: dict[str, float]  # scene -> share of the volumes
    size_in: tuple[int, int, int]
    volume_shape: tuple[int, int, int]
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    volumes_per_buffer: int = 6
    patches_per_volume: int = 2
    foreground_share: float = 0.5
    description: str = ""
    real_share: float = 0.2  # of the volumes, when real volumes are given
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RealVolume:
    """A real volume with labels that pretraining may use (named, with its source, in the card)."""

    raw: np.ndarray  # (Z, Y, X), as recorded
    label: np.ndarray  # (Z, Y, X) 0/1 target
    name: str

    @classmethod
    def read(cls, spec: str) -> RealVolume:
        """``RAW.tif:LABELS.tif`` (labels > 0 are the target)."""
        import tifffile

        raw_path, _, label_path = spec.partition(":")
        if not label_path:
            raise PretrainError(f"--real {spec!r}: give RAW:LABELS, two image files")
        try:
            raw, labels = tifffile.imread(raw_path), tifffile.imread(label_path)
        except (OSError, ValueError) as err:
            raise PretrainError(f"--real {spec!r}: {err}") from None
        if raw.ndim != 3 or raw.shape != labels.shape:
            raise PretrainError(
                f"--real {spec!r}: raw {raw.shape} and labels {labels.shape} must be the same 3-D shape"
            )
        if "1136" in Path(raw_path).name:  # the one honest test volume of this project
            raise PretrainError("nuclei_1136 is the test volume: never pretrain on it")
        return cls(raw, (labels > 0).astype(np.uint8), Path(raw_path).name)


RECIPES: dict[str, Recipe] = {
    "nuclei": Recipe(
        model="unet_xy_zoom",
        zoom_ratio=3,
        scenes={"nuclei": 1.0},
        size_in=(48, 348, 348),
        volume_shape=(64, 160, 160),
        description="nuclei of 10-45 voxels across, touching and separate, any brightness",
    ),
    "boundaries": Recipe(
        model="unet_xy",
        zoom_ratio=3,
        scenes={"tissue": 0.6, "thin": 0.4},
        size_in=(48, 132, 132),
        volume_shape=(56, 128, 128),
        description="cell boundaries of packed tissue, filaments, shells and sheets",
    ),
}


def recipe_for(name: str) -> Recipe:
    if name not in RECIPES:
        raise PretrainError(f"unknown starter {name!r}; the starters are {', '.join(RECIPES)}")
    return RECIPES[name]


def pretrain_config(name: str, out_dir: str | Path, precision: str = "auto") -> TrainConfig:
    """The training config a starter is pretrained with (and embedded in its checkpoints)."""
    recipe = recipe_for(name)
    cfg = TrainConfig()
    cfg.model.name, cfg.model.zoom_ratio = recipe.model, recipe.zoom_ratio
    cfg.size_in = list(recipe.size_in)
    cfg.size_out = list(geometry.size_out(recipe.model, recipe.size_in, recipe.zoom_ratio))
    cfg.loader.batch_size = 1
    cfg.loader.datafolder = f"generated:{','.join(recipe.scenes)}"
    cfg.checkpoint_dir = str(out_dir)
    cfg.learning_rate = recipe.learning_rate
    cfg.normalization = NORMALIZATION
    cfg.foreground_share = recipe.foreground_share
    cfg.intensity_augmentation = True
    cfg.acquisition_augmentation = True  # done as each volume is generated
    cfg.precision = precision
    cfg.device = "cpu"
    return cfg


def starter_extra(name: str, volumes: int = 24, seed: int = 12345) -> dict:
    """What a starter's checkpoint records beside its weights, as training records it: the
    normalisation and the band of intensities its generated training volumes spanned."""
    images = generated_images(recipe_for(name), np.random.default_rng(seed), volumes)
    band = IntensityBand.of((im.raw for im in images), NORMALIZATION, augmented=True)
    return {"normalization": NORMALIZATION, "intensity": band.to_extra()}


# --------------------------------------------------------------------------- the data


def generated_images(
    recipe: Recipe,
    rng: np.random.Generator,
    count: int,
    real: Sequence[RealVolume] = (),
) -> list[TrainingImage]:
    """``count`` new volumes of the recipe's scenes (a share of them real volumes, when given),
    each changed as a next acquisition might record it, and normalised."""
    scenes = list(recipe.scenes)
    shares = np.array([recipe.scenes[s] for s in scenes], dtype=float)
    images = []
    for k in range(count):
        if real and rng.random() < recipe.real_share:
            volume = real[int(rng.integers(len(real)))]
            scene = volume.name
        else:
            scene = scenes[int(rng.choice(len(scenes), p=shares / shares.sum()))]
            volume = synthetic_volume(scene, recipe.volume_shape, int(rng.integers(2**63)))
        raw = normalize(acquisition_change(volume.raw, rng, volume.label)[None], NORMALIZATION)
        images.append(
            TrainingImage(
                name=f"generated_{scene}_{k}",
                raw=raw,
                label=volume.label,
                costmap=np.ones(volume.label.shape, np.float32),
                source=f"generated {scene}",
                normalized_by=NORMALIZATION,
            )
        )
    return images


class GeneratedBuffers:
    """Patch buffers from new volumes, the next one built in a background thread."""

    def __init__(
        self, recipe: Recipe, cfg: TrainConfig, seed: int, real: Sequence[RealVolume] = ()
    ) -> None:
        self.recipe, self.cfg, self.real = recipe, cfg, tuple(real)
        self.rng = np.random.default_rng(seed)
        self.sampling = Sampling(recipe.foreground_share, True)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="generate")
        self.pending: Future[PatchSet] | None = None

    def _build(self, seed: int) -> PatchSet:
        rng = np.random.default_rng(seed)
        images = generated_images(self.recipe, rng, self.recipe.volumes_per_buffer, self.real)
        n = self.recipe.volumes_per_buffer * self.recipe.patches_per_volume
        return draw_buffer(
            images, n, self.cfg.size_in, self.cfg.size_out, rng, sampling=self.sampling
        )

    def next(self) -> PatchSet:
        if self.pending is None:
            self.pending = self.pool.submit(self._build, int(self.rng.integers(2**63)))
        patches = self.pending.result()
        self.pending = self.pool.submit(self._build, int(self.rng.integers(2**63)))
        return patches

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- export


def calibrated(
    checkpoint: ckpt.Checkpoint,
    name: str,
    real: Sequence[RealVolume] = (),
    patches: int = 48,
    seed: int = 2024,
) -> ckpt.Checkpoint:
    """``checkpoint`` with its BatchNorm running statistics measured again, as the average over
    ``patches`` patches of the recipe's volumes (and the real ones), the weights unchanged.

    Trained with batch 1, the running statistics follow the last few patches (momentum 0.1):
    one checkpoint's calibration differs from the next one's. A starter is used as it is, on
    any volume, so its statistics should be those of all it learned from.
    """
    recipe = recipe_for(name)
    cfg = pretrain_config(name, ".")
    net = ckpt.build_network(checkpoint.network())
    ckpt.load_model_weights(net, checkpoint)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over every patch below
    rng = np.random.default_rng(seed)
    sampling = Sampling(recipe.foreground_share, True)
    net.train()
    with torch.no_grad():
        done = 0
        while done < patches:
            images = generated_images(recipe, rng, recipe.volumes_per_buffer, real)
            n = min(patches - done, recipe.volumes_per_buffer * recipe.patches_per_volume)
            buffer = draw_buffer(images, n, cfg.size_in, cfg.size_out, rng, sampling=sampling)
            for raw, _, _ in iter_batches(buffer, 1, rng):
                net(raw)
            done += n
    for module in norms:
        module.momentum = 0.1
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return replace(checkpoint, model_state=state)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class PretrainProgress:
    """After each step: where the run is (``seconds`` counts this and earlier sessions)."""

    step: int
    loss: float
    seconds: float
    saved: Path | None = None


def pretrain(
    name: str,
    out_dir: str | Path,
    minutes: float,
    *,
    seed: int = 0,
    precision: str = "auto",
    save_minutes: float = 10.0,
    stop: threading.Event | None = None,
    learning_rate: float | None = None,
    real: Sequence[RealVolume] = (),
) -> Iterator[PretrainProgress]:
    """Pretrain starter ``name`` for ``minutes`` more, resuming from the newest checkpoint there.

    Yields after every step; saves a checkpoint every ``save_minutes`` and at the end.
    ``learning_rate`` replaces the recipe's (e.g. a lower one for a last session). ``real``
    volumes make up ``recipe.real_share`` of the volumes; the card names each.
    """
    recipe = recipe_for(name)
    if learning_rate is not None:
        recipe = replace(recipe, learning_rate=learning_rate, warmup_steps=1)
    out_dir = Path(out_dir).expanduser()
    cfg = pretrain_config(name, out_dir, precision)
    cfg.learning_rate = recipe.learning_rate
    device = torch.device("cpu")
    step = TrainingStep(cfg, device, cpu_precision=faster_cpu_precision)
    done, seconds_before, volumes = 0, 0.0, 0
    used_real: set[str] = set()
    sessions: list[dict] = []
    latest = ckpt.latest_checkpoint(out_dir)
    if latest is not None:
        loaded = ckpt.load_checkpoint(latest)
        ckpt.restore_training_state(loaded, step.net, step.optimizer)
        done = int(loaded.num_iterations or 0)
        info = loaded.extra.get("pretrain", {}) if isinstance(loaded.extra, dict) else {}
        seconds_before = float(info.get("seconds", 0.0))
        volumes = int(info.get("volumes", 0))
        used_real = set(info.get("real", []))
        sessions = list(info.get("sessions", []))
    step.prepare()
    recorded = starter_extra(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffers = GeneratedBuffers(recipe, cfg, seed + done, real)  # a resumed run: new volumes
    first = done
    started = time.monotonic()
    last_save = started
    deadline = started + minutes * 60
    session_steps = 0

    def save() -> Path:
        info = {
            "starter": name,
            "steps": done,
            "seconds": seconds_before + time.monotonic() - started,
            "volumes": volumes,
            "real": sorted(used_real | {v.name for v in real}),
            "sessions": [
                *sessions,
                {"from_step": first, "to_step": done, "lr": recipe.learning_rate},
            ],
            "recipe": {k: v for k, v in asdict(recipe).items() if k != "extra"},
            "precision": step.options.name,
            "threads": torch.get_num_threads(),
        }
        return ckpt.save_checkpoint(
            ckpt.checkpoint_path(out_dir, done),
            model_state=step.net.state_dict(),
            optimizer_state=step.optimizer.state_dict(),
            epoch=done,
            num_iterations=done,
            device=str(device),
            config=cfg.to_dict(),
            extra={"pretrain": info, **recorded},
        )

    try:
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            patches = buffers.next()
            volumes += recipe.volumes_per_buffer
            for raw, label, costmap in iter_batches(patches, 1, buffers.rng):
                lr = recipe.learning_rate * min(1.0, (done + 1) / recipe.warmup_steps)
                for group in step.optimizer.param_groups:
                    group["lr"] = lr
                result = step(raw, label, costmap, iteration=done + 1)
                done += 1
                session_steps += 1
                saved = None
                if time.monotonic() - last_save >= save_minutes * 60:
                    saved, last_save = save(), time.monotonic()
                elapsed = seconds_before + time.monotonic() - started
                yield PretrainProgress(done, result.loss, elapsed, saved)
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    break
        if session_steps:
            yield PretrainProgress(
                done, math.nan, seconds_before + time.monotonic() - started, save()
            )
    finally:
        buffers.close()
