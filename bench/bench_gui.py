"""GUI responsiveness while training in the panel, and the time to open the panel.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
bench/bench_gui.py``). It opens napari, times docking the training panel (the first dock
imports the plugin; torch is imported lazily by the engine), sets the sample preset, clicks
Train, and for ``--seconds`` measures the Qt event loop's stalls with a 10 ms timer: each
stall is how much later than due a tick arrives. Prints p50/p99/max stalls and how many
iterations ran meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    start = time.perf_counter()
    import napari
    from _gui import wait_until
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(show=True)
    wait_until(lambda: False, timeout=0.5)
    napari_up = time.perf_counter() - start
    loaded_torch = "torch" in sys.modules
    t0 = time.perf_counter()
    _, panel = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Train segmentation model"
    )
    open_seconds = time.perf_counter() - t0
    torch_at_open = "torch" in sys.modules
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    panel.use_sample_preset()

    stalls: list[float] = []
    period = 0.010
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        stalls.append(max(0.0, now - last[0] - period))
        last[0] = now

    timer = QTimer()
    timer.setInterval(int(period * 1000))
    timer.timeout.connect(tick)
    with tempfile.TemporaryDirectory() as runs:
        panel.form.set_value("checkpoint_dir", runs)
        panel.start_training()
        wait_until(lambda: len(panel.plot.history.iteration_loss) >= 1, timeout=600)
        last[0] = time.perf_counter()
        timer.start()
        wait_until(lambda: False, timeout=args.seconds)
        timer.stop()
        iterations = len(panel.plot.history.iteration_loss)
        previews = panel.previews.updates
        panel.shutdown()
    viewer.close()

    ms = np.array(stalls) * 1000
    print(
        f"napari up in {napari_up:.2f} s (torch imported: {loaded_torch}); "
        f"training panel docked in {open_seconds:.3f} s (torch imported by then: {torch_at_open})"
    )
    print(
        f"while training for {args.seconds:.0f} s ({iterations} iterations, {previews} preview "
        f"updates): {len(ms)} ticks of 10 ms; event-loop stall p50 {np.percentile(ms, 50):.1f} ms, "
        f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms"
    )


if __name__ == "__main__":
    main()
