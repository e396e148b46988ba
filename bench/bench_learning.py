"""Learning on real data: what a user gets in the minutes they will wait, side by side.

For a data set (``nuclei``: trains on nuclei_1135, scores nuclei_1136; ``membranes``: an ovule
crop split in two; see ``_real.py``), in one run:

1. smoothed Otsu (Gaussian sigma 1), the baseline;
2. the starter model as it is (its threshold tuned on the training volume only);
3. starter + the quick preset for ``--minutes`` on the training volume;
4. random weights + the quick preset for ``--minutes``;

each scored on the test volume: IoU at 0.5, IoU at the threshold the held-out slab (of the
training volume) chose, and instance F1 at IoU 0.5 (nuclei: seeded watershed; membranes: the
cells between predicted boundaries). Nothing is tuned on the test volume.

    python bench/bench_learning.py [--data nuclei|membranes] [--minutes 10]
        [--arms otsu,starter,starter+quick,scratch+quick] [--keep DIR] [--membranes DIR]

Skips with a message (exit 0) when the data are absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _real

ARMS = ("otsu", "starter", "starter+quick", "scratch+quick")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["nuclei", "membranes"], default="nuclei")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--keep", help="keep the run folders (checkpoints) here")
    parser.add_argument("--membranes", type=Path, default=_real.MEMBRANES)
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        print(f"error: unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}", file=sys.stderr)
        return 2
    data = _real.load(args.data, args.membranes)
    if data is None:
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_learning_"))
    print(f"{_real.threads()}; {data.name}: {data.described}")
    rows = []
    if "otsu" in arms:
        rows.append(_real.otsu_scores(data).row("smoothed Otsu"))
    if "starter" in arms:
        started = time.monotonic()
        train_prob, _ = _real.predict(data.starter, data.train_raw)
        tuned = _real.best_threshold(train_prob, data.train_truth)
        prob, _ = _real.predict(data.starter, data.test_raw)
        print(f"starter as it is: predicted both volumes in {time.monotonic() - started:.0f} s")
        rows.append(_real.scores(data, prob, tuned).row(f"{data.starter} as it is"))
    for arm in ("starter+quick", "scratch+quick"):
        if arm not in arms:
            continue
        start = arm.split("+")[0]
        print(f"{arm}, {args.minutes:g} min:")
        trained = _real.train_quick(data, work / arm, args.minutes, start, args.seed)
        prob, tuned = _real.predict(trained.checkpoint, data.test_raw)
        name = f"{start} + {args.minutes:g} min ({trained.steps} steps)"
        rows.append(_real.scores(data, prob, tuned if tuned else 0.5).row(name))
    print()
    print(_real.HEADER)
    for row in rows:
        print(row)
    print(f"run folders: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
