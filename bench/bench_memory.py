"""Measured vs predicted peak memory of one training step (forward, backward, Adam).

Each size runs in a fresh process: on CPU the peak is the process's peak resident memory
minus its resident memory before the model was built; on CUDA it is
``torch.cuda.max_memory_allocated``. The prediction is :func:`models.memory.training_bytes`.

    python bench/bench_memory.py [--device cpu] [--sizes 32,100,100 48,148,148] [--batch 1]
"""

from __future__ import annotations

import argparse

from napari_cellseg_trainer.models import memory
from napari_cellseg_trainer.training.probe import measure_peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet_xy")
    parser.add_argument("--zoom-ratio", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["32,100,100", "32,148,148", "48,148,148"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{args.model}, batch {args.batch}, device {args.device}, fp32")
    for text in args.sizes:
        size = [int(v) for v in text.split(",")]
        measured = measure_peak_bytes(args.model, size, args.batch, args.device, args.zoom_ratio)
        predicted = memory.training_bytes(args.model, size, args.batch, args.zoom_ratio)
        elements = memory.layer_elements(args.model, tuple(size), args.zoom_ratio)
        print(
            f"size_in {size}: measured {measured / 2**30:.3f} GiB, predicted "
            f"{predicted / 2**30:.3f} GiB ({predicted / measured - 1:+.1%}); "
            f"{measured / (elements * args.batch):.2f} bytes per layer-output element"
        )


if __name__ == "__main__":
    main()
