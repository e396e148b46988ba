"""Choosing the torch device and CPU threads for a run."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def select_device(request: str = "auto") -> torch.device:
    """The device for ``request``: ``auto`` picks CUDA, then Apple MPS, then CPU.

    An explicit request for a device this machine lacks is an error, never a silent fallback.
    """
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(request)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {request!r} requested but no CUDA GPU is available here; use auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {request!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"device {request!r} requested but Apple MPS is not available here")
    return device


def describe_device(device: torch.device) -> str:
    """Human-readable name, e.g. ``cuda:0 (NVIDIA H100, 79 GB)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
