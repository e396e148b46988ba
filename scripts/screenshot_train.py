"""Screenshots of napari with the Train tab mid-training on the sample data (README, docs/).

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
scripts/screenshot_train.py``): opens the sample data and the plugin's dock, sets the Sample
preset, clicks Train, waits for a few epochs and preview updates, grabs the whole window at
each size (``docs/images/train_<W>x<H>.png``; the previews framed in view), then stops the run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import napari
from _gui import SIZES, count_previews, shoot, wait_until

from napari_cellseg_trainer._qt.preview import NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="docs/images", type=Path)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to watch before the shots")
    parser.add_argument("--previews", type=int, default=3, help="previews to see first")
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-cellseg-trainer")
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    _, dock = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Segmentation (Train · Predict)"
    )
    panel = dock.train
    panel.tools.use_sample_preset()
    with tempfile.TemporaryDirectory() as runs:
        panel.form.set_value("checkpoint_dir", runs)
        shown = count_previews(panel)
        panel.start_training()
        truth = viewer.layers[NAMES[1]]  # the preview's ground truth: a patch with structure

        def ready() -> bool:
            enough = len(panel.plot.history.epoch_loss) >= args.epochs
            return enough and len(shown) >= args.previews and bool(truth.data.any())

        ok = wait_until(ready, timeout=3600)
        panel.plot.redraw()
        for size in args.sizes:
            path = shoot(viewer, size, args.out_dir / f"train_{size}.png")
            print(
                f"wrote {path} after {len(panel.plot.history.iteration_loss)} iterations"
                + ("" if ok else " (timed out waiting)")
            )
        panel.stop_training()
        wait_until(lambda: not panel.training, timeout=600)
    viewer.close()


if __name__ == "__main__":
    main()
