"""Predictions on a brighter, dimmer or spoilt next volume: IoU under each change of the test
volume, for models trained before and after the robustness change, in one run.

The models train on the data set's training volume (see ``_real.py``) with the quick preset:

- ``before``: the preset as it was (percentiles 1-99.8, no intensity changes), random weights;
- ``after``: the preset now (recipe 26: stripes and specks taken out, percentiles 5-95, the
  median brought to 0.25, a saturated maximum kept bright where it lies well above the window;
  acquisition and intensity augmentation);
- ``after+starter``: the same, starting from the starter model;

(``--from DIR`` reuses bench_learning's ``--keep DIR`` runs for the last two, and ``DIR/before``
when an earlier run of this benchmark kept it there (``--keep DIR``); ``--also NAME=CK``
adds a checkpoint of your own as a column, e.g. one trained with an earlier recipe, or
``starter:nuclei`` as it is, and ``NAME=CK#24`` the same predicted with recipe 24 instead of
its own; ``--models`` trains only those named (none with ``--also``); ``--recipe 24``
trains ``after`` and ``after+starter`` with recipe 24 instead of the preset's.) Each is scored
on the test volume as it is and changed: gain x0.5 and x2, offset +20% of the range, gamma 0.7 and
1.4, 1% of voxels saturated specks, a bright stripe; the intensity-shift warning and the
saturation warning fired or not are shown beside each. Nothing is tuned on the test volume.

    python bench/bench_robustness.py [--data nuclei|membranes] [--minutes 10] [--from DIR]
                                     [--also NAME=CHECKPOINT ...] [--models before ...]
                                     [--recipe N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import _real
import numpy as np

# name: (start, the preset as it was, the run folder bench_learning --keep leaves it in)
MODELS = {
    "before": ("scratch", True, "before"),
    "after": ("scratch", False, "scratch+quick"),
    "after+starter": ("starter", False, "starter+quick"),
}


HEADER = "IoU at 0.5 on the test volume (* = the shift warning, ! = the saturation warning)"


def _saturating(raw: np.ndarray, values: np.ndarray) -> np.ndarray:
    top = np.iinfo(raw.dtype).max if raw.dtype.kind in "ui" else float(raw.max())
    return np.clip(np.round(values), 0, top).astype(raw.dtype)


def changes(raw: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """The changes of the test volume, each as the microscope would record it (same dtype)."""
    x = raw.astype(np.float64)
    top = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else float(raw.max())
    span = float(x.max() - x.min())

    def specks() -> np.ndarray:
        out = raw.copy()
        out[np.random.default_rng(0).random(raw.shape) < 0.01] = top
        return out

    def stripe() -> np.ndarray:
        out = x.copy()
        y = raw.shape[1] // 3
        out[:, y : y + 3] += 0.8 * span
        return _saturating(raw, out)

    return {
        "as it is": lambda: raw,
        "gain x0.5": lambda: _saturating(raw, x * 0.5),
        "gain x2": lambda: _saturating(raw, x * 2),
        "offset +20%": lambda: _saturating(raw, x + 0.2 * span),
        "gamma 0.7": lambda: _saturating(raw, top * (x / top) ** 0.7),
        "gamma 1.4": lambda: _saturating(raw, top * (x / top) ** 1.4),
        "1% saturated specks": specks,
        "bright stripe": stripe,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["nuclei", "membranes"], default="nuclei")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from", dest="source", type=Path, help="bench_learning --keep DIR")
    parser.add_argument("--keep", help="keep the run folders here")
    parser.add_argument("--membranes", type=Path, default=_real.MEMBRANES)
    parser.add_argument(
        "--recipe", type=int, help="train after and after+starter with this normalisation recipe"
    )
    parser.add_argument("--also", nargs="+", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(MODELS),
        choices=list(MODELS),
        help="which to train (none: only the --also checkpoints)",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.also if "=" in item)
    if len(extra) != len(args.also):
        parser.error("--also takes NAME=CHECKPOINT")
    if not args.models and not extra:
        parser.error("nothing to score: name --models to train, or --also NAME=CHECKPOINT")
    data = _real.load(args.data, args.membranes)
    if data is None:
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_robustness_"))
    print(f"{_real.threads()}; {data.name}: {data.described}")
    models: dict[str, Path | str] = {}
    recipes: dict[str, int] = {}
    for name, (start, before, reuse) in MODELS.items():
        if name not in args.models:
            continue
        kept = _kept_checkpoint(args.source / reuse) if args.source and reuse else None
        if kept is not None:
            print(f"{name}: {kept} (kept by an earlier run)")
            models[name] = kept
            continue
        print(f"{name}: quick preset, {start}, {args.minutes:g} min")
        trained = _real.train_quick(
            data, work / name, args.minutes, start, args.seed, before, recipe=args.recipe
        )
        models[name] = trained.checkpoint
    for name, checkpoint in extra.items():
        print(f"{name}: {checkpoint}")
        checkpoint, _, recipe = checkpoint.partition("#")
        models[name] = checkpoint  # a path or starter:NAME
        if recipe:
            recipes[name] = int(recipe)
    table: dict[str, dict[str, tuple[float, str]]] = {}
    for change, make in changes(data.test_raw).items():
        volume = make()
        for name, checkpoint in models.items():
            warnings: list[str] = []
            prob, _ = _real.predict(checkpoint, volume, warnings, recipes.get(name))
            marks = "".join(
                mark if any(words in line for line in warnings) else " "
                for mark, words in (("*", "intensities differ"), ("!", "detector saturated"))
            )
            table.setdefault(name, {})[change] = (_real.iou(prob > 0.5, data.test_truth), marks)
    print()
    names = list(models)
    print(HEADER + "".join(f"{n:>17}" for n in names))
    for change in changes(data.test_raw):
        cells = []
        for name in names:
            value, marks = table[name][change]
            drop = value - table[name]["as it is"][0]
            cells.append(f"{value:7.3f} ({drop:+.3f}){marks}")
        print(f"{change:<{len(HEADER)}}" + "".join(f"{c:>17}" for c in cells))
    for name in names:
        drops = [
            table[name]["as it is"][0] - v for c, (v, _) in table[name].items() if c != "as it is"
        ]
        print(f"{name}: the largest loss against the volume as it is: {max(drops):.3f}")
    return 0


def _kept_checkpoint(folder: Path) -> Path | None:
    """The checkpoint bench_learning predicted with in its run folder (the best held-out one)."""
    found = sorted(folder.glob("runs/*/checkpoint_best.pytorch"))
    return found[-1] if found else None


if __name__ == "__main__":
    sys.exit(main())
