"""Settings every dsvbench process starts with: the run itself and each joblib / dask worker.

**Freed memory is kept, up to large blocks** (glibc only).  The CPU hot loops allocate and free
the same megabyte-sized activations thousands of times per second (DC's real batch on ``digits``
is 1 198 × 16 × 8 × 8 floats per layer).  glibc's defaults hand such blocks back to the kernel
(``mmap`` above the dynamic threshold, heap trimming above it as well), so each new allocation
page-faults its pages in again, zero-filled by the kernel.  Measured on the 2-core CPU machine,
200 DC iterations on ``digits`` in one thread: 9.9 s and 1.09 M minor page faults with the
defaults, 7.6 s and 0.11 M with the thresholds raised.

Blocks of :data:`LARGE_BYTES` (32 MiB) and more — MNIST's 100 MB activations of a 256-image class
pass — are mapped and returned on free instead: kept, they fragment the heap and held 1.77 GB
where the reference code holds 1.50 GB.  Torch is asked to back its blocks of 2 MB and more with
transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, set by ``dsvbench/__init__`` before torch is
imported, with the default policy only; honoured where the kernel's THP mode is ``madvise`` or
``always``), so such a block faults in 2 MB at a time.  One MNIST DC run (6 iterations, one thread, docs/performance.md):

===================================  ==================  ==================
setting                              CPU s               peak RSS
===================================  ==================  ==================
default (32 MiB mapped, THP)         96.6                1.37 GB
``DSVBENCH_MALLOC=1G`` (all kept)    77.5                1.77 GB
``system`` with THP                  94.8                1.33 GB
``system`` (C and torch defaults)    118.9               1.64 GB
===================================  ==================  ==================

DSVs on MNIST (5 steps over a 2 000-image pool) pays for the bound: 228 s and 3.2 GB by default,
189 s and 5.9 GB with every block kept (``DSVBENCH_MALLOC=1G``, huge pages on as well): its 205 MB
double-backward chunks are mapped again each time.  On ``digits`` no block reaches 32 MiB: the default
is the old one there.

Arithmetic is untouched — the same kernels run on the same numbers, so every result is bitwise
the same (tested).  ``DSVBENCH_MALLOC=1G`` (any size with K, M or G) keeps every block below that
size, the fastest at paper scale and the most memory; ``DSVBENCH_MALLOC=system`` keeps the C
library's and torch's defaults (no THP request either).
"""
from __future__ import annotations

import ctypes
import os
import resource
import sys

import torch

from .registry import UserError

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30    # the default trim threshold: freed heap memory kept up to this much (module docstring)
LARGE_BYTES = 32 << 20  # the default mmap threshold: blocks this large are mapped and returned on free


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


def malloc_thresholds(setting: str | None = None) -> tuple[int, int] | None:
    """glibc's (mmap, trim) thresholds for ``DSVBENCH_MALLOC`` (unset: :data:`LARGE_BYTES`,
    :data:`KEEP_BYTES`; ``system``: None; a size such as ``64M`` or ``1G``: that size for both); a
    malformed value is a one-line :class:`UserError`."""
    setting = os.environ.get("DSVBENCH_MALLOC", "") if setting is None else setting
    if setting == "":
        return LARGE_BYTES, KEEP_BYTES
    if setting == "system":
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = (setting[:-1], units.get(setting[-1].upper())) if setting[-1].isalpha() else (setting, 1)
    if unit is None or not number.isdigit() or not 0 < int(number) * unit < 1 << 31:
        raise UserError(f"DSVBENCH_MALLOC={setting!r}: 'system' or a size below 2G such as 64M or 1G")
    return int(number) * unit, int(number) * unit


def allocator_note() -> str:
    """What this process's allocator does, for logs and benchmark headers."""
    thresholds = malloc_thresholds()
    huge = os.environ.get("THP_MEM_ALLOC_ENABLE", "0") not in ("", "0")
    if thresholds is None:
        return "freed memory returned (C library defaults)" + (", huge pages for torch's blocks" if huge else "")
    mapped, kept = thresholds
    return (f"freed memory kept below {mapped >> 20} MiB blocks (up to {kept >> 20} MiB)"
            + (", huge pages for torch's blocks" if huge else "") + " (dsvbench.process)")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:func:`malloc_thresholds`); True when the C library took both.
    A no-op (False) off Linux, on a C library without ``mallopt`` or with ``DSVBENCH_MALLOC=system``."""
    thresholds = malloc_thresholds()
    if thresholds is None or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt   # the running process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_taken = mallopt(M_MMAP_THRESHOLD, thresholds[0])
    trim_taken = mallopt(M_TRIM_THRESHOLD, thresholds[1])   # set even when the first was refused
    return bool(mmap_taken and trim_taken)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024


def peak_memory_mb(device: torch.device) -> float:
    """On CUDA the most memory allocated on ``device`` since its last reset, else :func:`peak_rss_mb`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return peak_rss_mb()
