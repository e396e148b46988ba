"""Choosing the torch device and CPU threads for a run; what this CPU's arithmetic can do."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from dataclasses import dataclass

import torch

from .errors import UserInputError


class DeviceError(UserInputError, RuntimeError):
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
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return str(device)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_SPARE_FROM_CORES = 4  # below this, sparing a core costs training too much (measured)


def threads_sparing_a_core(request: str = "auto") -> int | None:
    """Torch CPU threads for a run beside a GUI: all cores but one, from 4 cores up.

    With torch busy on every core, napari's event loop can wait behind training. On 2 cores
    (``bench/bench_gui.py``) the panel stayed smooth with both threads busy (stalls p99 4 ms,
    max 153 ms) while one thread halved the training speed, so below 4 cores torch keeps its
    default (None); from 4 up, one core costs at most a quarter. None as well when ``request``
    resolves to a GPU (or to nothing: the run reports that), where CPU threads hardly matter.
    """
    cores = available_cores()
    if cores < _SPARE_FROM_CORES:
        return None
    try:
        device = select_device(request)
    except (DeviceError, RuntimeError):
        return None
    return cores - 1 if device.type == "cpu" else None


def release_freed_memory() -> None:
    """Hand memory a finished run has freed back to the OS, so a long napari session stays lean.

    glibc keeps freed heap pages for reuse: over a tiny 72-epoch run RSS sat at 1.0-1.25 GB,
    and 0.64 GB after ``malloc_trim`` (``bench/bench_run_memory.py``); an idle napari would
    hold the difference until it closes. A no-op where the C library has no ``malloc_trim``.
    The CUDA caching allocator's free blocks go back to the driver the same way.
    """
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def keep_large_blocks_apart(threshold: int = 2**20) -> None:
    """Blocks of ``threshold`` bytes and more get pages of their own, handed back when freed.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed; blocks of a
    few MiB then come from the heap. A block-by-block prediction keeps such blocks (its tile
    cache) for a while among short-lived ones, and the heap fragments: predicting a
    64 x 1024 x 1024 OME-Zarr peaked at 2.9 GB of address space with the moving threshold and
    1.9 GB with a fixed one, for the same 0.8 GB of arrays alive. Fixing it keeps a long
    prediction within a memory cap. A no-op where the C library has no ``mallopt``.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)


def heap_bytes_in_use() -> int | None:
    """Bytes the C heap has handed out and not had back (glibc's ``mallinfo2``), or None.

    Unlike RSS it does not move with pages the allocator keeps, so a leak of even a few KB per
    epoch shows (``bench/bench_run_memory.py``, the memory-growth test). Torch's CPU tensors
    and numpy's arrays come from this heap; Python's small objects do not (count those).
    """
    mallinfo2 = _libc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


def available_ram() -> int:
    """Memory the system can give this process now (Linux MemAvailable; else total RAM / 2)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def resident_bytes() -> int:
    """This process's resident memory now (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _libc_function(name: str):
    """A function of the C library (glibc's extensions), or None where it has no such function."""
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name, None) if library else None
    except OSError:
        return None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


# --------------------------------------------------------------------------- CPU arithmetic

# x86 extensions that multiply bfloat16 in hardware: AVX-512 BF16 (VDPBF16PS) and AMX (TDPBF16PS);
# "bf16" is the Arm flag (FEAT_BF16, e.g. Neoverse V1/V2). Without them torch converts bfloat16
# to float32 around every product, which is slower than float32 alone (bench_train_step.py).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from Linux's ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16, AMX, or Arm's BF16).

    torch 2.13 tells only the vector width (``torch.backends.cpu.get_cpu_capability()``: AVX2,
    AVX512, ...), not these extensions; builds that still have ``torch._C._cpu``'s
    ``_is_avx512_bf16_supported`` / ``_is_amx_tile_supported`` are asked first, then the flags.
    """
    probes = [
        getattr(torch._C._cpu, n, None)
        for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if any(probe is not None and probe() for probe in probes):
        return True
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class CpuPeak:
    """The most multiply-adds per second this CPU's cores can do, from its data sheet's terms.

    float32: cores x clock x FMA units per core x float32 lanes per vector. bfloat16 with
    AVX-512 BF16: twice the float32 figure (VDPBF16PS does two bfloat16 products per float32
    lane); with AMX: cores x clock x 512 (TDPBF16PS: 16 x 16 x 32 = 8192 multiply-adds per 16
    cycles). Without native bfloat16 the float32 figure bounds bfloat16 too.
    """

    cores: int  # the threads torch computes with (its default: the physical cores)
    ghz: float
    clock_source: str
    fma_units: int
    fp32_lanes: int
    bf16_per_cycle: int  # bfloat16 multiply-adds per cycle and core

    def macs_per_second(self, precision: str = "fp32") -> float:
        per_cycle = self.bf16_per_cycle if precision == "bf16" else self.fma_units * self.fp32_lanes
        return self.cores * self.ghz * 1e9 * per_cycle

    def __str__(self) -> str:
        return (
            f"{self.cores} cores x {self.ghz:.2f} GHz ({self.clock_source}) x {self.fma_units} FMA "
            f"units x {self.fp32_lanes} float32 lanes = {self.macs_per_second() / 1e9:.0f} GMAC/s "
            f"float32, {self.macs_per_second('bf16') / 1e9:.0f} GMAC/s bfloat16"
        )


def cpu_peak(ghz: float | None = None, fma_units: int | None = None) -> CpuPeak:
    """This CPU's :class:`CpuPeak`; ``ghz`` and ``fma_units`` override what is read or assumed.

    The clock: the highest the kernel allows (``cpufreq/cpuinfo_max_freq``, a turbo clock that
    all cores may not hold at once), else ``cpu MHz`` of ``/proc/cpuinfo`` (under a hypervisor
    often the nominal clock). The FMA units cannot be read: 2 per core (Intel since Haswell,
    AMD since Zen 2), 1 for AVX-512 on AMD Zen 4, which splits 512-bit work over its two 256-bit
    units.
    """
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "asimd" in flags else 4
    if fma_units is None:
        fma_units = 1 if lanes == 16 and _cpuinfo_value("vendor_id") == "AuthenticAMD" else 2
    source = "given"
    if ghz is None:
        ghz, source = _cpu_ghz()
    bf16 = fma_units * lanes
    if "amx_bf16" in flags:
        bf16 = 512
    elif native_cpu_bf16():
        bf16 = 2 * fma_units * lanes
    return CpuPeak(torch.get_num_threads(), ghz, source, fma_units, lanes, bf16)


def _cpu_ghz() -> tuple[float, str]:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as fh:
            return int(fh.read()) / 1e6, "cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    mhz = _cpuinfo_value("cpu MHz")
    if mhz:
        return float(mhz) / 1e3, "/proc/cpuinfo cpu MHz"
    return 3.0, "assumed"


def _cpuinfo_value(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None
