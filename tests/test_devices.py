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
