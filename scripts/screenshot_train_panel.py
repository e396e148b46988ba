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
    parser.add_argument("--ready-out", default="docs/images/train_ready.png")
    parser.add_argument("--stopped-out", default="docs/images/train_stopped.png")
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
        viewer.reset_view()
        shoot(viewer, args.ready_out)  # step 1-2 of the walkthrough: ready to Train
        shown: list = []
        show = panel.previews.show
        panel.previews.show = lambda patch: (shown.append(1), show(patch))
        panel.start_training()
        ok = wait_until(
            lambda: len(panel.plot.history.epoch_loss) >= args.epochs and len(shown) >= 2,
            timeout=1800,
        )
        panel.plot.redraw()
        viewer.reset_view()
        shoot(viewer, args.out)
        print(
            f"wrote {args.out} after {len(panel.plot.history.iteration_loss)} iterations"
            + ("" if ok else " (timed out waiting)")
        )
        panel.stop_training()
        wait_until(lambda: not panel.training, timeout=600)
        shoot(viewer, args.stopped_out)  # after Stop: the checkpoint notification
    viewer.close()


def shoot(viewer: napari.Viewer, path: str) -> None:
    wait_until(lambda: False, timeout=1.0)  # let the canvas, the plot and notifications repaint
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path, canvas_only=False)


if __name__ == "__main__":
    main()
