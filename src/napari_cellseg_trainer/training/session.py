"""One training session as every front end runs it: the loop plus what goes around it.

The command line and the napari panel both call :func:`recorded_training`, so a run writes
the same files and cleans up the same way wherever it was started.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import torch

from ..config import TrainConfig
from ..data import TrainingImage
from ..devices import release_freed_memory, threads_sparing_a_core
from ..distributed import current_world
from .events import Event, Notice
from .loop import train
from .metrics import MetricsError, MetricsRecorder


def recorded_training(
    cfg: TrainConfig,
    stop: threading.Event | None = None,
    images: Sequence[TrainingImage] | None = None,
    *,
    beside_gui: bool = False,
) -> Iterator[Event]:
    """:func:`.loop.train`, recording ``metrics.csv`` and ``loss_curve.png`` beside the checkpoints.

    Rank 0 alone records (under torchrun). ``beside_gui``: from 4 cores up, torch leaves one
    core to the GUI's event loop unless ``num_threads`` is set. The cap is not written into
    ``cfg`` (the checkpoint's config must not carry this machine's cap to a cluster node), and
    since torch's setting is per thread and napari reuses pool threads, the thread's own value
    is restored at the end. The memory the run freed is handed back to the OS when it ends, so
    a long napari session stays lean.
    """
    threads = torch.get_num_threads()
    try:
        if beside_gui and not cfg.num_threads and (spared := threads_sparing_a_core(cfg.device)):
            torch.set_num_threads(spared)
        recorder = MetricsRecorder(cfg.checkpoint_dir) if current_world().main else None
        for event in train(cfg, stop=stop, images=images):
            if recorder is not None:
                try:
                    recorder(event)
                except MetricsError as err:
                    recorder = None  # said once; the training itself goes on
                    yield Notice(str(err))
            yield event
    finally:
        torch.set_num_threads(threads)
        release_freed_memory()
