"""The main job: napari with the training panel docked, the sample data open and the CPU preset set.

Run through ``bash scripts/run.sh`` (which sets up the environment first). Click Train.
"""

from __future__ import annotations

import napari


def main() -> None:
    viewer = napari.Viewer(title="napari-cellseg-trainer")
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    _, dock = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Segmentation (Train · Predict)"
    )
    dock.train.tools.use_sample_preset()
    napari.run()


if __name__ == "__main__":
    main()
