"""Screenshots of napari with the Predict tab after segmenting the sample image's whole volume.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
scripts/screenshot_predict.py --checkpoint runs/.../checkpoint_epoch_20.pytorch``).
Without ``--checkpoint`` it first trains the Sample preset headless for ``--epochs`` epochs.
It opens the sample data and the plugin's dock, loads the checkpoint in the Predict tab,
segments the whole volume, scores it against the sample's ground truth (Evaluate), and grabs
the whole window at each size (``docs/images/predict_<W>x<H>.png``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import napari
from _gui import SIZES, shoot, wait_until
from qtpy.QtWidgets import QScrollArea

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
    parser.add_argument("--out-dir", default="docs/images", type=Path)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WIDTHxHEIGHT")
    parser.add_argument("--checkpoint", help="a checkpoint carrying its config")
    parser.add_argument("--epochs", type=int, default=10, help="without --checkpoint: train first")
    parser.add_argument("--z", type=int, default=16, help="the plane shown")
    parser.add_argument("--threshold", type=float, help="the slider's value (default: the model's)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as runs:
        checkpoint = Path(args.checkpoint) if args.checkpoint else train_preset(args.epochs, runs)
        viewer = napari.Viewer(title="napari-cellseg-trainer")
        viewer.window.resize(1600, 1000)
        viewer.open_sample("napari-cellseg-trainer", "filaments")
        _, dock = viewer.window.add_plugin_dock_widget(
            "napari-cellseg-trainer", "Segmentation (Train · Predict)"
        )
        dock.setCurrentWidget(dock.predict)
        panel = dock.predict
        if not panel.load_checkpoint(checkpoint):
            raise SystemExit(f"{checkpoint}: not usable (see the notification)")
        panel.form.set_value("OutputDir", str(Path(runs) / "predictions"))
        panel.set_image(viewer.layers["sample filaments"])
        panel.predict_whole()
        ok = wait_until(lambda: not panel.busy, timeout=1800)
        if args.threshold is not None:
            panel.threshold.value = args.threshold
        prob = panel.result.probability[0]
        print(
            f"threshold {panel.threshold.value:.2f}; probability "
            f"{prob.min():.3f}..{prob.max():.3f}, {(prob > panel.threshold.value).mean():.1%} "
            "of the voxels labelled"
        )
        truth = viewer.layers["sample filaments ground truth"]
        panel.results.truth.value = truth
        panel.results.show_errors.value = False
        panel.results.evaluate()  # the scores, under the result tools
        truth.visible = False
        for name in ("model", "patch size", "input"):  # the run, its result and the tools in view
            panel.form.sections[name].collapse(animate=False)
        viewer.dims.set_point(0, args.z)
        print(panel.results.figures.text())
        bar = panel.findChild(QScrollArea).verticalScrollBar()

        def bottom() -> None:  # the result tools and their scores in view
            bar.setValue(bar.maximum())

        for size in args.sizes:
            path = shoot(viewer, size, args.out_dir / f"predict_{size}.png", bottom)
            print(f"wrote {path}" + ("" if ok else " (timed out waiting)"))
        viewer.close()


if __name__ == "__main__":
    main()
