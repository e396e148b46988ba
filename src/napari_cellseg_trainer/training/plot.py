"""The loss curve: a history built from events, and a matplotlib figure that draws it.

Drawn without pyplot so it works in any thread, without a display (the CLI's PNG) and inside a
Qt canvas (the panel's live plot), from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .events import EpochEnd, Event, HoldoutScore, IterationEnd, TrainingStarted, ValidationDone

if TYPE_CHECKING:  # matplotlib is imported when a curve is made: the panel opens without it
    from matplotlib.figure import Figure


@dataclass
class LossHistory:
    """Every figure the loss curve shows, accumulated from training events."""

    iterations: list[int] = field(default_factory=list)
    iteration_loss: list[float] = field(default_factory=list)
    epoch_iterations: list[int] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    validation_iterations: list[int] = field(default_factory=list)
    validation_iou: list[float] = field(default_factory=list)  # mean over the validated pairs
    holdout_iterations: list[int] = field(default_factory=list)
    holdout_iou: list[float] = field(default_factory=list)  # the held-out slabs' IoU

    def add(self, event: Event) -> bool:
        """Take in one event; True when it changed the history."""
        if isinstance(event, IterationEnd):
            self.iterations.append(event.iteration)
            self.iteration_loss.append(event.loss)
        elif isinstance(event, EpochEnd):
            self.epoch_iterations.append(event.iterations)
            self.epoch_loss.append(event.mean_loss)
        elif isinstance(event, ValidationDone) and event.iou:
            self.validation_iterations.append(
                self.epoch_iterations[-1] if self.epoch_iterations else 0
            )
            self.validation_iou.append(sum(event.iou) / len(event.iou))
        elif isinstance(event, HoldoutScore):
            self.holdout_iterations.append(event.iteration)
            self.holdout_iou.append(event.iou)
        elif isinstance(event, TrainingStarted) and event.start_iteration == 0:
            self.clear()
        else:
            return False
        return True

    def clear(self) -> None:
        for values in vars(self).values():
            values.clear()

    def copy(self) -> LossHistory:
        """An independent copy (to draw in another thread while this one grows)."""
        return LossHistory(*(list(values) for values in vars(self).values()))


class LossCurve:
    """Iteration loss (thin), epoch mean (dots) and validation IoU (right axis) on one figure."""

    def __init__(self, figure: Figure | None = None) -> None:
        if figure is None:
            from matplotlib.figure import Figure

            figure = Figure(figsize=(7, 4), layout="constrained")
        self.figure = figure
        self.ax = self.figure.add_subplot()
        (self._iter_line,) = self.ax.plot(
            [], [], lw=0.6, alpha=0.5, color="tab:blue", label="iteration"
        )
        (self._epoch_line,) = self.ax.plot(
            [], [], "o-", ms=3, color="tab:orange", label="epoch mean"
        )
        self.ax.set_xlabel("iteration")
        self.ax.set_ylabel("Aux loss")
        self.ax.grid(alpha=0.3)
        self.ax_iou = self.ax.twinx()
        (self._iou_line,) = self.ax_iou.plot(
            [], [], "s--", ms=4, color="tab:green", label="validation IoU"
        )
        (self._holdout_line,) = self.ax_iou.plot(
            [], [], "D-", ms=4, color="tab:purple", label="held-out IoU"
        )
        self.ax_iou.set_ylabel("IoU")
        self.ax_iou.set_ylim(0, 1)
        self.ax_iou.set_visible(False)
        self._empty = self.ax.text(
            0.5,
            0.5,
            "the loss appears here once training starts",
            ha="center",
            va="center",
            transform=self.ax.transAxes,
            color="0.5",
        )
        self.log_scale = True

    def update(self, history: LossHistory, log_scale: bool | None = None) -> None:
        """Show ``history``; ``log_scale`` (when given) switches the loss axis."""
        if log_scale is not None:
            self.log_scale = log_scale
        h = history
        self._iter_line.set_data(h.iterations, h.iteration_loss)
        self._epoch_line.set_data(h.epoch_iterations, h.epoch_loss)
        self._iou_line.set_data(h.validation_iterations, h.validation_iou)
        self._holdout_line.set_data(h.holdout_iterations, h.holdout_iou)
        scores = bool(h.validation_iou or h.holdout_iou)
        self.ax_iou.set_visible(scores)
        empty = not (h.iteration_loss or h.epoch_loss)
        self._empty.set_visible(empty)
        self.ax.tick_params(labelleft=not empty, labelbottom=not empty)
        values = [*h.iteration_loss, *h.epoch_loss]
        self.ax.set_yscale("log" if self.log_scale and values and min(values) > 0 else "linear")
        self.ax.relim()
        self.ax.autoscale_view()
        handles = [self._iter_line, self._epoch_line]
        handles += [self._iou_line] if h.validation_iou else []
        handles += [self._holdout_line] if h.holdout_iou else []
        if empty:
            legend = self.ax.get_legend()
            if legend is not None:
                legend.remove()
        else:
            self.ax.legend(handles=handles, loc="upper right")
