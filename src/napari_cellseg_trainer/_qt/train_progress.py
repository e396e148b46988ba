"""How the training panel shows a run: each event of the core's loop, drawn where it belongs.

The loss goes to the plot, the patches to the preview layers, the rest to the progress bar,
the status line, the device line and napari's notifications. Nothing here changes the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QLabel, QProgressBar

from ..training import events as ev
from .loss_plot import LossPlot
from .preview import PreviewLayers
from .widgets import clock

_STEPS = 1000  # the progress bar's resolution


class RunView:
    """The progress bar, status and device lines, loss plot and previews of one panel's runs."""

    def __init__(
        self,
        progress: QProgressBar,
        status: QLabel,
        device_label: QLabel,
        plot: LossPlot,
        previews: PreviewLayers,
    ) -> None:
        self.progress, self.status, self.device_label = progress, status, device_label
        self.plot, self.previews = plot, previews
        self._started_at = 0.0
        self._start: ev.TrainingStarted | None = None
        self._show: dict[type, Callable] = {
            ev.TrainingStarted: self._started,
            ev.IterationEnd: self._progress,
            ev.PreviewPatch: previews.show,
            ev.EpochEnd: self._epoch,
            ev.ValidationDone: self._validation,
            ev.HoldoutScore: self._holdout,
            ev.Notice: self._notice,
            ev.CheckpointSaved: self._saved,
            ev.TrainingFinished: self._finished,
        }

    def begin(self, patch_shape: tuple[int, int, int] | None) -> None:
        """A run starts: an empty plot, and the preview layers (when it previews) made now."""
        self.plot.clear()
        if patch_shape is not None:  # adding layers mid-run would freeze napari for a moment
            self.previews.prepare(patch_shape)

    def show(self, event: ev.Event) -> None:
        self.plot.add(event)
        show = self._show.get(type(event))
        if show is not None:
            show(event)

    def _started(self, event: ev.TrainingStarted) -> None:
        self._started_at = time.monotonic()
        self._start = event
        total = event.epochs * event.iterations_per_epoch
        self.progress.setRange(0, _STEPS)
        self.progress.setValue(int(_STEPS * event.start_iteration / max(total, 1)))
        held = f", a held-out slab in {event.n_holdout_slabs}" if event.n_holdout_slabs else ""
        self.device_label.setText(
            f"device: {event.device} · {event.precision} · raw {event.normalization}"
        )
        self.device_label.setToolTip(f"writing to {event.folder}")
        self.status.setText(f"training on {event.n_train_images} image(s){held}")

    def _progress(self, event: ev.IterationEnd) -> None:
        start = self._start
        assert start is not None
        elapsed = time.monotonic() - self._started_at
        total = start.epochs * start.iterations_per_epoch
        done = (event.iteration - start.start_iteration) / max(total - start.start_iteration, 1)
        left = elapsed / max(done, 1e-9) * (1 - done)
        if start.minutes:  # the budget ends the run unless the epochs do first
            budget = start.minutes * 60
            done = max(done, elapsed / budget)
            left = min(left, max(0.0, budget - elapsed))
        self.progress.setValue(int(_STEPS * min(done, 1.0)))
        in_epoch = event.iteration - event.epoch * start.iterations_per_epoch
        self.status.setText(
            f"epoch {event.epoch + 1}/{start.epochs} · iteration {in_epoch}/"
            f"{start.iterations_per_epoch} · loss {event.loss:.4g} · ETA {clock(left)}"
        )

    def _epoch(self, event: ev.EpochEnd) -> None:
        epochs = self._start.epochs if self._start else "?"
        self.status.setText(f"epoch {event.epoch}/{epochs} done · mean loss {event.mean_loss:.4g}")

    def _validation(self, event: ev.ValidationDone) -> None:
        ious = ", ".join(f"{v:.3f}" for v in event.iou)
        show_info(f"validation after epoch {event.epoch}: IoU {ious}")

    def _holdout(self, event: ev.HoldoutScore) -> None:
        self.status.setText(
            f"epoch {event.epoch}: held-out IoU {event.iou:.3f} at 0.5 (best {event.best:.3f} at "
            f"epoch {event.best_epoch}); {event.iou_at_threshold:.3f} at {event.threshold:.2f}"
        )

    def _notice(self, event: ev.Notice) -> None:
        (show_warning if event.level == "warning" else show_info)(event.text)

    def _saved(self, event: ev.CheckpointSaved) -> None:
        self.status.setToolTip(str(event.path))
        best = " (the best held-out IoU so far: Preview uses it)" if event.best else ""
        show_info(f"checkpoint saved: {event.path.name} (in {event.path.parent.name}){best}")

    def _finished(self, event: ev.TrainingFinished) -> None:
        self.plot.flush()
        why = f": {event.detail}" if event.detail else ""
        best = (
            f"; Preview uses the best held-out checkpoint (IoU {event.best_iou:.3f}, epoch "
            f"{event.best_epoch})"
            if event.best_checkpoint
            else ""
        )
        self.status.setText(
            f"training {event.reason}{why} after {event.epoch} epoch(s), {event.iteration} "
            f"iterations{best}"
        )
