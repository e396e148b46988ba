import os

import pytest
import torch

from napari_cellseg_trainer import devices
from napari_cellseg_trainer.devices import DeviceError, select_device, threads_sparing_a_core


@pytest.mark.parametrize(("cores", "expected"), [(1, None), (2, None), (3, None), (4, 3), (8, 7)])
def test_a_run_beside_napari_leaves_one_core_free_from_four_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert threads_sparing_a_core("auto") == expected
    assert threads_sparing_a_core("cpu") == expected


def test_no_thread_cap_for_a_gpu_or_a_missing_device(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert threads_sparing_a_core("auto") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert threads_sparing_a_core("cuda") is None  # the run itself reports the missing GPU
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        select_device("cuda")


def test_release_freed_memory_hands_fragmented_heap_pages_back():
    if devices._libc_function("malloc_trim") is None or not os.path.exists("/proc/self/statm"):
        pytest.skip("needs glibc's malloc_trim and /proc")

    def rss_mb() -> float:
        return devices.resident_bytes() / 2**20

    blocks = [bytes(4000) for _ in range(50_000)]  # ~200 MB of heap blocks, not mmap'd
    keep = blocks[::64]  # one in 64 stays: the heap cannot shrink from its top
    del blocks
    held = rss_mb()
    devices.release_freed_memory()
    assert rss_mb() < held - 100, "the freed blocks' pages stayed with the process"
    del keep
