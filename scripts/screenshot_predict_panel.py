"""Screenshot of napari with the prediction panel after segmenting the sample image.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
scripts/screenshot_predict_panel.py --checkpoint runs/.../checkpoint_epoch_20.pytorch``).
Without ``--checkpoint`` it first trains the CPU preset headless for ``--epochs`` epochs.
It opens the sample data, docks the prediction panel, loads the checkpoint, segments the
whole volume with larger tiles than training used, and grabs the window.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import napari
from _gui import wait_until

from napari_cellseg_trainer import config
from napari_cellseg_trainer.data.sample import ensure_sample_folder
from napari_cellseg_trainer.training import CheckpointSaved, train


def train_preset(epochs: int, folder: str) -> Path:
    cfg = config.demo_config(str(ensure_sample_folder("filaments")), folder)
    cfg.epochs = cfg.save_every_n_epoch = epochs
    cfg.preview_every_n_iter = 0
    return [e.path for e in train(cfg) if isinstance(e, CheckpointSaved)][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/predict_panel.png")
    parser.add_argument("--checkpoint", help="a checkpoint carrying its config")
    parser.add_argument("--epochs", type=int, default=10, help="without --checkpoint: train first")
    parser.add_argument("--size-in", type=int, nargs=3, default=[32, 164, 164])
    parser.add_argument("--z", type=int, default=16, help="the plane shown")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as runs:
        checkpoint = Path(args.checkpoint) if args.checkpoint else train_preset(args.epochs, runs)
        viewer = napari.Viewer(title="napari-cellseg-trainer")
        viewer.window.resize(1600, 1000)
        viewer.open_sample("napari-cellseg-trainer", "filaments")
        _, panel = viewer.window.add_plugin_dock_widget(
            "napari-cellseg-trainer", "Predict with a model"
        )
        if not panel.load_checkpoint(checkpoint):
            raise SystemExit(f"{checkpoint}: not usable (see the notification)")
        panel.form.set_value("size_in", args.size_in)  # bigger tiles than training: faster
        panel.form.set_value("OutputDir", str(Path(runs) / "predictions"))
        panel.set_image(viewer.layers["sample filaments"])
        panel.predict_whole()
        ok = wait_until(lambda: panel.worker is None, timeout=1800)
        panel.threshold.value = 0.5
        viewer.layers["sample filaments ground truth"].visible = False
        viewer.dims.set_point(0, args.z)
        viewer.reset_view()
        wait_until(lambda: False, timeout=1.0)  # let the canvas repaint
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(args.out, canvas_only=False)
        print(f"wrote {args.out}" + ("" if ok else " (timed out waiting)"))
        viewer.close()


if __name__ == "__main__":
    main()
