"""What the training panel does with its config: import, export, presets, the size advisor.

Shows and forwards only: the config is the form's schema object; the core reads and writes the
files (``config``), chooses the quick preset and sizes (``training.quick``, ``models.memory``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import show_error, show_info, show_warning

from .. import config as config_mod
from ..config import ConfigError, Problem
from ..data import ZoomAdvice
from ..data.sample import ensure_sample_folder, sample_cache_folder
from ..errors import UserInputError

if TYPE_CHECKING:
    from .config_form import ConfigForm
    from .layer_sets_panel import LayerSetsPanel


def import_yaml(form: ConfigForm, path: str | Path) -> list[Problem]:
    """Fill the form from ``path``; returns (and shows) the file's problems.

    Fields the file could not give a value for keep the form's value, marked with the problem,
    so Train waits until they are fixed; the others take the file's values.
    """
    from ..config.fields import from_dict, iter_fields

    try:
        data = config_mod.read_yaml(path)
        config_mod.check_plain(data, str(path))
    except ConfigError as err:
        show_error(str(err))
        return err.problems
    problems: list[Problem] = []
    cfg = from_dict(config_mod.TrainConfig, data if data is not None else {}, problems)
    unread = {p.key: p.message for p in problems if p.key in form.editors}
    # a derived field (size_out) the file got wrong: said, then the form derives it again
    derived = {s.key for s in iter_fields(config_mod.TrainConfig) if s.derived}
    problems += [
        Problem(p.key, f"{p.message}; the form uses the value size_in gives")
        for p in config_mod.validate(cfg)
        if p.key in derived and p.key not in unread
    ]
    form.set_config(cfg, unread=unread)
    # then the rules on what the form now holds (a size_out that does not fit, a missing folder)
    problems += [p for p in form.problems() if p.key not in unread]
    name = Path(path).name
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        show_warning(
            f"{name}: {len(problems)} problem(s); those fields keep the form's values and are "
            f"marked (Train waits for them):\n{lines}"
        )
    else:
        show_info(f"loaded {name}")
    return problems


def export_yaml(
    form: ConfigForm, path: str | Path, layers: LayerSetsPanel | None = None
) -> Path | None:
    """Save the form's config to ``path`` in the established layout.

    When the panel trains on layers, the layers are written as a training folder beside the
    file (``<name>_data``) and the file's ``loader.datafolder`` points at it, so the command
    line trains on the same images. Refused while the config has problems.
    """
    path = Path(path)
    cfg = form.cfg.copy()
    from_layers = layers is not None and layers.use_layers.value
    problems = [p for p in form.problems() if not (from_layers and p.key == "loader.datafolder")]
    if problems:
        form.reveal_required()
        show_error(str(ConfigError(problems, "export refused")))
        return None
    try:
        if from_layers:
            folder = path.with_name(f"{path.stem}_data")
            layers.export(folder, quiet=True)
            cfg.loader.datafolder = str(folder)
        saved = config_mod.save_config(cfg, path)
    except (UserInputError, ValueError, OSError) as err:
        show_error(f"could not export {path.name}: {getattr(err, 'strerror', None) or err}")
        return None
    extra = f" and the training folder {Path(cfg.loader.datafolder).name}" if from_layers else ""
    show_info(f"saved {saved.name}{extra}")
    return saved


def sample_preset() -> config_mod.TrainConfig:
    """The CPU demo preset on the sample folder (written to the user's cache if missing).

    Each run gets its own folder in the cache's checkpoints (run_subfolder), so runs never mix.
    """
    folder = ensure_sample_folder("filaments")
    runs = sample_cache_folder("filaments").parent / "checkpoints"
    cfg = config_mod.demo_config(str(folder), str(runs))
    cfg.run_subfolder = True
    return cfg


def apply_zoom_advice(form: ConfigForm, advice: ZoomAdvice) -> None:
    """Set the suggested model (and zoom ratio, with its starting patch size) in the form."""
    cfg = form.cfg.copy()
    if advice.model == cfg.model.name and advice.zoom_ratio in (None, cfg.model.zoom_ratio):
        return
    sizes = config_mod.template(advice.model, advice.zoom_ratio or cfg.model.zoom_ratio)
    cfg.model.name, cfg.model.zoom_ratio = sizes.model.name, sizes.model.zoom_ratio
    cfg.size_in, cfg.size_out = sizes.size_in, sizes.size_out
    form.set_config(cfg)


def memory_budget(text: str) -> int | None:
    """The budget typed for the advisor in bytes (None: empty, this machine's); checked at once.

    Raises the core's MemoryBudgetError (a UserInputError) for text that is not a size.
    """
    from ..models.memory import parse_memory

    return parse_memory(text) if text.strip() else None


def advise(cfg: config_mod.TrainConfig, budget: int | None) -> tuple[config_mod.TrainConfig, str]:
    """The advisor's sizes in a copy of ``cfg``, and a line with memory and time (worker thread).

    Without a ``budget`` (bytes): the GPU's free memory, or on a CPU half of the RAM available;
    the time per iteration and of the run come from a probe of real steps (cached per machine).
    """
    from ..devices import select_device
    from ..models.memory import advise as advise_sizes
    from ..training.probe import probe_step_speed
    from ..training.quick import training_budget

    device = select_device(cfg.device)
    budget = budget if budget is not None else training_budget(device)
    advice = advise_sizes(cfg.model.name, budget, cfg.model.zoom_ratio, cfg.nchannel)
    cfg = cfg.copy()
    cfg.size_in, cfg.size_out = list(advice.size_in), list(advice.size_out)
    cfg.loader.batch_size = advice.batch_size
    speed = probe_step_speed(cfg.model.name, device, cfg.model.zoom_ratio)
    step = speed.step_seconds(
        cfg.model.name, cfg.size_in, cfg.loader.batch_size, cfg.model.zoom_ratio
    )
    iterations = cfg.epochs * -(-cfg.loader.PatchPerBuffer // cfg.loader.batch_size)
    where = "GPU memory" if device.type == "cuda" else "RAM"
    line = (
        f"{advice}; {where} on {speed.device}: about {step:.1f} s an iteration, "
        f"{_hours(step * iterations)} for {cfg.epochs} epochs"
    )
    return cfg, line


def start_from(form: ConfigForm, start: str) -> str:
    """Set where the form's training starts (``starter``, ``scratch`` or a checkpoint's path):
    finetune_from, and for a starter its learning rate and normalisation; the line that says it.
    """
    cfg = form.cfg.copy()
    line = config_mod.starting_point(cfg, start)
    form.set_config(cfg)
    return f"training starts {line}" if not line.startswith("starting") else line


def quick(
    cfg: config_mod.TrainConfig,
    image_shape: tuple[int, int, int] | None,
    minutes: float,
    start: str = config_mod.STARTER,
) -> tuple[config_mod.TrainConfig, str]:
    """The quick preset for the form's model and data (worker thread: it probes real steps)."""
    from ..training.quick import quick_preset

    chosen, line = quick_preset(
        cfg.loader.datafolder,
        cfg.checkpoint_dir or str(sample_cache_folder("filaments").parent / "checkpoints"),
        model=cfg.model.name,
        zoom_ratio=cfg.model.zoom_ratio,
        minutes=minutes,
        device=cfg.device,
        image_shape=image_shape,
        start=start,
    )
    return chosen, line


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
