"""GUI responsiveness while training in the panel, and the time to open the panel.

Run under a display (``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python
bench/bench_gui.py``). It opens napari, times docking the plugin's dock (Train and Predict
tabs; the first dock imports the plugin, torch is imported lazily by the engine), sets
the sample preset, clicks Train, and for ``--seconds`` runs napari's event loop while a 10 ms
timer measures its stalls: each stall is how much later than due a tick arrives. Prints
p50/p99/max stalls, the longest ones with the training event that preceded them, and how
long the panel's handler took per event type.
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
    parser.add_argument(
        "--preview-every",
        type=int,
        default=2,
        help="preview_every_n_iter for the run (the sample preset's is 5)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the config's num_threads for the run (default: the panel's own choice)",
    )
    args = parser.parse_args()

    start = time.perf_counter()
    import napari
    from _gui import count_previews, wait_until
    from qtpy.QtCore import QEventLoop, QTimer

    viewer = napari.Viewer(show=True)
    wait_until(lambda: False, timeout=0.5)
    napari_up = time.perf_counter() - start
    loaded_torch = "torch" in sys.modules
    t0 = time.perf_counter()
    _, dock = viewer.window.add_plugin_dock_widget(
        "napari-cellseg-trainer", "Segmentation (Train · Predict)"
    )
    open_seconds = time.perf_counter() - t0
    torch_at_open = "torch" in sys.modules
    panel = dock.train
    viewer.open_sample("napari-cellseg-trainer", "filaments")
    panel.tools.use_sample_preset()
    panel.form.set_value("preview_every_n_iter", args.preview_every)
    if args.threads is not None:
        panel.form.set_value("num_threads", args.threads)

    # Time the panel's event handler by event type: the GUI-thread share of each stall.
    handler_ms: dict[str, list[float]] = {}
    on_event = panel._on_event

    arrivals: list[tuple[float, str]] = []

    def timed(event) -> None:
        t = time.perf_counter()
        arrivals.append((t, type(event).__name__))
        on_event(event)
        handler_ms.setdefault(type(event).__name__, []).append((time.perf_counter() - t) * 1000)

    panel._on_event = timed

    stalls: list[float] = []
    period = 0.010
    last = [time.perf_counter()]

    long_stalls: list[tuple[float, float]] = []  # (when it ended, how long), over 100 ms

    def tick() -> None:
        now = time.perf_counter()
        stalls.append(max(0.0, now - last[0] - period))
        if stalls[-1] > 0.1:
            long_stalls.append((now, stalls[-1]))
        last[0] = now

    timer = QTimer()
    timer.setInterval(int(period * 1000))
    timer.timeout.connect(tick)
    with tempfile.TemporaryDirectory() as runs:
        panel.form.set_value("checkpoint_dir", runs)
        shown = count_previews(panel)
        t0 = time.perf_counter()
        panel.start_training()
        click_seconds = time.perf_counter() - t0
        wait_until(lambda: len(panel.plot.history.iteration_loss) >= 1, timeout=600)
        device = panel.device_label.text()
        handler_ms.clear()
        last[0] = time.perf_counter()
        timer.start()
        # napari's own event loop, as in use (a processEvents-and-sleep loop would add its sleep
        # to every stall)
        loop = QEventLoop()
        QTimer.singleShot(int(args.seconds * 1000), loop.quit)
        loop.exec()
        timer.stop()
        iterations = len(panel.plot.history.iteration_loss)
        previews = len(shown)
        panel.shutdown()
    viewer.close()

    ms = np.array(stalls) * 1000
    print(
        f"napari up in {napari_up:.2f} s (torch imported: {loaded_torch}); "
        f"the dock (Train and Predict tabs) docked in {open_seconds:.3f} s (torch imported by "
        f"then: {torch_at_open})"
    )
    print(
        f"while training for {args.seconds:.0f} s ({iterations} iterations, {previews} preview "
        f"updates): {len(ms)} ticks of 10 ms; event-loop stall p50 {np.percentile(ms, 50):.1f} ms, "
        f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms "
        f"({device})"
    )
    print(
        f"  Train click handled in {click_seconds:.3f} s (config check, empty preview layers); "
        f"longest stalls: {', '.join(f'{v:.0f}' for v in sorted(ms)[-5:])} ms"
    )
    for end, stall in long_stalls:
        before = [(t, name) for t, name in arrivals if t <= end]
        what = f"{before[-1][1]} {end - before[-1][0]:.2f} s earlier" if before else "no event"
        print(f"  stall of {stall * 1000:.0f} ms (last event: {what})")
    for name, times in sorted(handler_ms.items()):
        t = np.array(times)
        print(
            f"  GUI-thread handler for {name}: {len(t)} calls, median {np.median(t):.1f} ms, "
            f"max {t.max():.1f} ms"
        )


if __name__ == "__main__":
    main()
