"""Settings every dsvbench process starts with: the run itself and each joblib / dask worker.

**Freed memory is kept** (glibc only).  The CPU hot loops allocate and free the same
megabyte-sized activations thousands of times per second (DC's real batch on ``digits`` is
1 198 × 16 × 8 × 8 floats per layer).  glibc's defaults hand such blocks back to the kernel
(``mmap`` above the dynamic threshold, heap trimming above 128 KiB free at the top), so each
new allocation page-faults its pages in again, zero-filled by the kernel.  Measured on the
2-core CPU machine, 200 DC iterations on ``digits`` in one thread (``build_dc`` timed under
``/usr/bin/time``): 9.9 s and 1.09 M minor page faults with the defaults, 7.6 s and 0.11 M with
both thresholds raised (docs/performance.md has the whole-run figures).
Arithmetic is untouched — the same kernels run on the same numbers, so every result is
bitwise the same (tested).  The thresholds are 1 GiB by default, a trade of memory for time at
paper scale, measured on MNIST with one thread (docs/performance.md):

==========================  ==================  ==================  =============
                            1 GiB (default)     64 MiB              C defaults
==========================  ==================  ==================  =============
DSVs, 2000-image pool       158 s, 5.0 GB       271 s, 3.3 GB       –
DC, 2 iterations            18.5–21 s, 2.4 GB   26 s, 2.0 GB        40 s, 1.8 GB
DC run, 6 iter. (b398d31)   79 s, 1.73 GB       (128M) 112, 1.53    128 s, 1.40 GB
θ*, 10 steps + evaluation   1.76 GB             1.20 GB             0.93 GB
==========================  ==================  ==================  =============

``DSVBENCH_MALLOC=64M`` (any size with K, M or G) sets another threshold, for a machine short of
memory; ``DSVBENCH_MALLOC=system`` keeps the C library's defaults.
"""
from __future__ import annotations

import ctypes
import os
import sys

import torch

from .registry import UserError

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30   # the default threshold; DSVBENCH_MALLOC=<size> sets another (module docstring)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_threads(requested: int | None) -> int:
    """Torch threads of the run's own process: ``--threads`` when given, else torch's default capped by the
    cores this process may use (torch counts the machine's cores, a container or ``taskset`` may allow fewer)."""
    return requested if requested is not None else max(1, min(torch.get_num_threads(), usable_cores()))


def worker_threads(total: int, workers: int) -> int:
    """Torch threads of each of ``workers`` processes sharing ``total``: never more threads × processes than
    the run was given (two threads each on a busy 2-core machine measured 7–13× slower than one)."""
    return max(1, total // max(workers, 1))


def busy_note(threads: int) -> str | None:
    """A line for a machine already busy with other work (1-minute load above the idle cores), where
    fewer threads run faster; None otherwise (and off Unix).  Said, never acted on: the thread count,
    and so every floating-point sum, must not depend on the load."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = usable_cores()
    if threads > 1 and load > cores - 0.5:
        return (f"the machine is busy (load {load:.1f} on {cores} cores): with other work running, --threads 1 "
                "(and --jobs 1) is often several times faster; numbers may differ in the last bits across thread counts")
    return None


def configure(threads: int) -> None:
    """A worker's settings: ``threads`` intra-op threads for torch, and freed memory kept."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def keep_bytes(setting: str | None = None) -> int | None:
    """The threshold of ``DSVBENCH_MALLOC`` (``system``: None; a size such as ``64M`` or ``1G``; unset:
    :data:`KEEP_BYTES`); a malformed value is a one-line :class:`UserError`."""
    setting = os.environ.get("DSVBENCH_MALLOC", "") if setting is None else setting
    if setting == "":
        return KEEP_BYTES
    if setting == "system":
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (setting[:-1], units.get(setting[-1].upper())) if setting[-1].isalpha() else (setting, 1)
    if unit is None or not number.isdigit() or not 0 < int(number) * unit < 1 << 31:
        raise UserError(f"DSVBENCH_MALLOC={setting!r}: 'system' or a size below 2G such as 64M or 1G")
    return int(number) * unit


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (:func:`keep_bytes`); True when the C library took both.
    A no-op (False) off Linux, on a C library without ``mallopt`` or with ``DSVBENCH_MALLOC=system``."""
    threshold = keep_bytes()
    if threshold is None or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt   # the running process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_taken = mallopt(M_MMAP_THRESHOLD, threshold)
    trim_taken = mallopt(M_TRIM_THRESHOLD, threshold)   # set even when the first was refused
    return bool(mmap_taken and trim_taken)
