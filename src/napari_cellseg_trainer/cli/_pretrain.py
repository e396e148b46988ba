"""``cellseg-trainer pretrain``: pretrain a starter on generated volumes, export it, list them."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a starter model on generated volumes; export or list the starters",
        description=(
            "Starters are generalist models shipped with the plugin (starter:nuclei, "
            "starter:boundaries) that a few minutes of your own labels adapt."
        ),
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = actions.add_parser(
        "run",
        help="pretrain for --minutes more (resumes from the newest checkpoint in --out)",
        description=(
            "Pretrain a starter on volumes the generator draws afresh for every buffer. "
            "Time-budgeted and resumable: run it again with the same --out to go on."
        ),
    )
    r.add_argument("--starter", required=True, help="nuclei or boundaries")
    r.add_argument("--out", required=True, help="folder for its checkpoints")
    r.add_argument("--minutes", type=float, required=True, help="time budget of this session")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    r.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    r.add_argument("--save-minutes", type=float, default=10.0, help="a checkpoint this often")
    r.add_argument(
        "--learning-rate", type=float, help="instead of the recipe's 1e-3 (e.g. for a last session)"
    )
    r.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="RAW:LABELS",
        help="a real volume and its labels (image files) to mix in (a fifth of the volumes); "
        "only volumes whose licence allows it. Named in the starter's card",
    )
    r.set_defaults(run=run_pretrain)
    e = actions.add_parser(
        "export",
        help="write a pretraining checkpoint as a starter file (half precision)",
        description="Write a checkpoint's weights in half precision, with its config, as a starter.",
    )
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--starter", required=True, help="nuclei or boundaries")
    e.add_argument("--output", required=True, help="the starter file to write (.pt)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    e.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="RAW:LABELS",
        help="the real volumes the pretraining used, for the BatchNorm statistics too",
    )
    e.add_argument(
        "--patches",
        type=int,
        default=48,
        help="patches over which the BatchNorm running statistics are averaged again "
        "(0: keep the checkpoint's)",
    )
    e.set_defaults(run=run_export)
    s = actions.add_parser("list", help="the starters, what they fit, how they were made")
    s.set_defaults(run=run_list)


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from ..training.pretrain import RealVolume, pretrain, recipe_for

    recipe_for(args.starter)  # an unknown name is one line, before anything is written
    real = [RealVolume.read(spec) for spec in args.real]
    if args.minutes <= 0:
        print("error: --minutes must be > 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    last = None
    for progress in pretrain(
        args.starter,
        args.out,
        args.minutes,
        seed=args.seed,
        precision=args.precision,
        save_minutes=args.save_minutes,
        learning_rate=args.learning_rate,
        real=real,
    ):
        if progress.saved is not None:
            print(f"step {progress.step}: saved {progress.saved}", flush=True)
        elif progress.step % 10 == 0:
            minutes = progress.seconds / 60
            print(f"step {progress.step}  loss {progress.loss:.4f}  {minutes:.1f} min", flush=True)
        last = progress
    if last is None:
        print("no step was done", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..model_source import CheckpointError, open_model
    from ..starters import export_starter, size_mb
    from ..training.pretrain import RealVolume, calibrated, starter_extra

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise CheckpointError(f"{output} exists; give --overwrite to replace it")

    if args.patches < 0:
        raise CheckpointError(f"--patches {args.patches}: give 0 or more")
    real = [RealVolume.read(spec) for spec in args.real]
    loaded = open_model(args.checkpoint)
    if args.patches:
        loaded = calibrated(loaded, args.starter, real, args.patches)
    # the card: a pretraining checkpoint's record, or an exported starter's own card
    info = dict(loaded.extra.get("starter") or loaded.extra.get("pretrain") or {})
    info.pop("name", None)
    if args.patches or "batchnorm_patches" not in info:  # 0 keeps what an earlier export did
        info["batchnorm_patches"] = args.patches
    # the recipe starters are used with now, and the band of intensities it gives (a starter
    # pretrained on recipe 21 takes recipe 22's images: they are 21's with specks removed and
    # the median brought to 0.25, among the acquisition changes it was trained on)
    loaded.extra.update(starter_extra(args.starter))
    path = export_starter(loaded, args.starter, output, card=info)
    print(f"{path} ({size_mb(path)} MB)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..checkpoint import CheckpointError
    from ..starters import STARTERS, card

    for name, starter in STARTERS.items():
        try:
            info = card(name)
            made = f"{info.get('steps', '?')} steps, {float(info.get('seconds', 0)) / 3600:.1f} h"
        except CheckpointError as err:
            made = str(err)
        print(f"{starter.describe()}: {starter.summary}; {made}")
    return 0
