"""The loss-curve figure, drawn without pyplot so it works in any thread and without a display."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure


def draw_loss_curve(
    iterations: Sequence[int],
    iteration_loss: Sequence[float],
    epoch_iterations: Sequence[int],
    epoch_loss: Sequence[float],
    log_scale: bool = True,
) -> Figure:
    """A figure of the per-iteration loss (thin) and the per-epoch mean (dots and line)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    if iteration_loss:
        ax.plot(iterations, iteration_loss, lw=0.6, alpha=0.5, color="tab:blue", label="iteration")
    if epoch_loss:
        ax.plot(epoch_iterations, epoch_loss, "o-", ms=3, color="tab:orange", label="epoch mean")
    if log_scale and all(v > 0 for v in [*iteration_loss, *epoch_loss]):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Aux loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return fig
