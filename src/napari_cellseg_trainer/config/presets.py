"""Starting points: the seed's template per model, the Sample preset for a laptop CPU, and
where a training starts (a starter model, random weights, a checkpoint)."""

from __future__ import annotations

from ..models import geometry
from .starters import fitting_starter
from .train import TrainConfig

# stripes and specks removed, percentiles 5-95, median to 0.25, a saturated maximum kept bright
# where it lies well above the window: the quick preset and the fine-tunes of a starter (the
# starters record 22, its images where a volume has no stripe and no saturated maximum low in
# the window)
ROBUST_NORMALIZATION = 26
STARTER, SCRATCH = "starter", "scratch"  # where a training starts (or a checkpoint's path)
FINETUNE_LEARNING_RATE = 3e-4  # from a starter: measured on nuclei_1135's held-out slab


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
    """The Sample preset: trains visibly on a laptop CPU within minutes, on the sample data.

    Tiny patches (unet_xy [32, 100, 100] -> [4, 12, 12]) and a high learning rate, so the loss
    falls within the first epochs. For real data use the quick preset or :func:`template`.
    """
    cfg = TrainConfig()
    cfg.size_in, cfg.size_out = [32, 100, 100], [4, 12, 12]
    cfg.checkpoint_dir = checkpoint_dir
    cfg.run_subfolder = True  # each run its own folder: runs on other data never mix
    cfg.learning_rate = 1e-3
    cfg.epochs = 50
    cfg.save_every_n_epoch = 10
    cfg.loader.datafolder = datafolder
    cfg.loader.batch_size = 2
    cfg.loader.PatchPerBuffer = 20
    cfg.seed = 0
    cfg.preview_every_n_iter = 5
    return cfg


def starting_point(cfg: TrainConfig, start: str) -> str:
    """Set where ``cfg``'s training starts (``finetune_from``, learning rate); say it in words."""
    if start == SCRATCH:
        cfg.finetune_from = None
        return "from random weights"
    if start != STARTER:
        cfg.finetune_from = start
        cfg.learning_rate = FINETUNE_LEARNING_RATE
        return f"fine-tuning {start}"
    chosen = fitting_starter(cfg)
    if chosen is None:
        cfg.finetune_from = None
        return "from random weights (no starter model fits this model)"
    if not chosen.installed:
        cfg.finetune_from = None
        return f"from random weights ({chosen.describe()} is not installed)"
    cfg.finetune_from = chosen.reference
    cfg.learning_rate = FINETUNE_LEARNING_RATE
    cfg.normalization = ROBUST_NORMALIZATION  # the starters' recipe travels into the fine-tune
    return f"starting from {chosen.describe()}, a model pretrained for {chosen.summary}"
