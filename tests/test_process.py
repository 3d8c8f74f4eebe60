"""dsvbench.process: freed memory is kept (fewer page faults), numbers are not touched."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dsvbench.process import keep_freed_memory

# Allocate and free a 40 MB tensor 20 times (above glibc's largest dynamic mmap threshold, 32 MiB), after ``keep_freed_memory``; print the minor page
# faults that loop took, whether the C library took the setting, and a checksum of a small
# computation that allocates as it goes.
PROBE = r"""
import json, resource, sys, torch
from dsvbench.process import keep_freed_memory
kept = keep_freed_memory()
torch.set_num_threads(1)   # fewer stray faults from the fill's worker threads
torch.empty(10_000_000).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(10_000_000).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 1, 8, 8, generator=g)
w = torch.randn(16, 1, 3, 3, generator=g, requires_grad=True)
y = torch.nn.functional.conv2d(x, w, padding=1).relu().pow(2).sum()
(grad,) = torch.autograd.grad(y, w)
print(json.dumps({"kept": kept, "faults": faults, "grad": grad.flatten().tolist()}))
"""


def _probe(env_value: str | None) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if k != "DSVBENCH_MALLOC"}
    if env_value is not None:
        env["DSVBENCH_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_memory_saves_page_faults_and_changes_no_number():
    kept, system = _probe(None), _probe("system")
    if not kept["kept"]:
        pytest.skip("this C library has no working mallopt (not glibc)")
    assert system["kept"] is False
    # each allocation is 9 766 pages: the defaults map, fault in and unmap them every time
    # (measured 195 k faults), kept memory mostly reuses the same heap pages (measured 49 k)
    assert system["faults"] > 20 * 9000
    assert kept["faults"] < system["faults"] / 2
    assert kept["grad"] == system["grad"]


def test_opt_out_is_a_no_op(monkeypatch):
    monkeypatch.setenv("DSVBENCH_MALLOC", "system")
    assert keep_freed_memory() is False
    assert torch.ones(3).sum().item() == 3.0


def test_the_threshold_setting_is_read_and_checked():
    from dsvbench.process import KEEP_BYTES, keep_bytes
    from dsvbench.registry import UserError
    assert keep_bytes("") == KEEP_BYTES and keep_bytes("system") is None
    assert keep_bytes("64M") == 64 << 20 and keep_bytes("1G") == 1 << 30 and keep_bytes("512k") == 512 << 10
    for bad in ("lots", "3G", "0M", "-1M"):
        with pytest.raises(UserError, match="DSVBENCH_MALLOC"):
            keep_bytes(bad)
