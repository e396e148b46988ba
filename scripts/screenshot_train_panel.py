"""Screenshot of napari with the training panel mid-training (for the README and docs/).

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
scripts/screenshot_train_panel.py``): opens the sample data, sets the CPU preset, clicks Train,
waits for a few epochs and preview updates, grabs the whole window, then stops the run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import napari
from _gui import wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images/train_panel.png")
    parser.add_argument("--epochs", type=int, default=4, help="epochs to watch before the shot")
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-cellseg-trainer")
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    _, panel = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Train segmentation model"
    )
    panel.use_sample_preset()
    with tempfile.TemporaryDirectory() as runs:
        panel.form.set_value("checkpoint_dir", runs)
        panel.start_training()
        ok = wait_until(
            lambda: (
                len(panel.plot.history.epoch_loss) >= args.epochs and panel.previews.updates >= 2
            ),
            timeout=1800,
        )
        panel.plot.redraw()
        viewer.reset_view()
        wait_until(lambda: False, timeout=1.0)  # let the canvas and the plot repaint
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(args.out, canvas_only=False)
        print(
            f"wrote {args.out} after {len(panel.plot.history.iteration_loss)} iterations"
            + ("" if ok else " (timed out waiting)")
        )
        panel.shutdown()
    viewer.close()


if __name__ == "__main__":
    main()
