"""The base of the plugin's panels: one worker thread at a time, a busy state, errors shown.

A panel starts its work (training, a prediction) with :meth:`WorkerPanel.start_worker`; while
it runs, :attr:`busy` is true and :meth:`update_controls` disables what must wait. An error
raised in the worker becomes a napari notification and the status line: the message alone for
bad input (:class:`..errors.UserInputError`), the type name too for a bug.

A panel's helpers (its config tools, its result tools) take a :class:`Runner`, not the panel:
all they may ask of it is this worker, the status line and the progress bar. So a helper's
module never imports the panel's, which imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from napari.qt.threading import WorkerBase, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QWidget

from ..errors import UserInputError

if TYPE_CHECKING:
    import napari


def error_message(err: BaseException, failed: str) -> str:
    """One readable message; the type name only for errors we did not foresee."""
    if isinstance(err, UserInputError):
        return str(err)
    return f"{failed}: {type(err).__name__}: {err}"


class Runner(Protocol):
    """What a panel's helper asks of the panel: its one worker, status line and progress bar."""

    status: QLabel
    progress: QProgressBar
    start_worker: Callable[..., WorkerBase]  # as WorkerPanel.start_worker

    @property
    def busy(self) -> bool: ...


class WorkerPanel(QWidget):
    """A panel that runs one worker at a time, with a status line and a progress bar (a
    :class:`Runner`). Subclasses set ``failed``, lay out ``status`` and ``progress``."""

    failed = "failed"  # how an unforeseen error is introduced, e.g. "training failed"
    idle = Signal()  # a worker has ended (its results and errors are shown by then)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: WorkerBase | None = None
        self._failed = self.failed
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.progress = QProgressBar(self)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start_worker(
        self,
        function: Callable[..., Any],
        *args: Any,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        failed: str | None = None,
    ) -> WorkerBase:
        """Run ``function(*args)`` in a worker thread; its events come back in the GUI thread.

        ``failed`` introduces an unforeseen error of this work (default: the panel's).
        """
        connect: dict[str, Callable] = {
            "errored": self._worker_errored,
            "finished": self._worker_finished,
        }
        if on_yield is not None:
            connect["yielded"] = on_yield
        if on_return is not None:
            connect["returned"] = on_return
        worker = create_worker(function, *args, _start_thread=False, _connect=connect)
        self.worker = worker
        self._failed = failed or self.failed
        self.update_controls()
        worker.start()
        return worker

    def update_controls(self) -> None:
        """Enable what may be used now (called when a worker starts and ends)."""

    def handle_error(self, err: BaseException) -> bool:
        """A subclass's chance to handle an error quietly (e.g. a cancel); True if it did."""
        return False

    def _worker_errored(self, err: BaseException) -> None:
        if self.handle_error(err):
            return
        message = error_message(err, self._failed)
        self.status.setText(f"error: {message}")
        show_error(message)

    def _worker_finished(self) -> None:
        self.worker = None
        self.update_controls()
        self.idle.emit()
