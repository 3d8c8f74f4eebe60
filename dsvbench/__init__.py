"""dsvbench: dataset distillation and coreset selection at tiny budgets (Deep Support Vectors, Table 1).

The library call is :func:`dsvbench.run` (and :func:`dsvbench.rerender`), imported on first use::

    import dsvbench
    results = dsvbench.run(dataset="digits", methods=["random", "herding"], seeds=2, out="results/api-demo")
    print(results.table())
"""
import os as _os

from .version import __version__

# Torch reads this once, when it first allocates: set before any dsvbench module imports torch, so that
# a run's (and each worker's) blocks of 2 MB and more fault in as huge pages (dsvbench.process).  A
# process that imported torch first keeps torch's default.  Part of the default allocator policy only:
# any DSVBENCH_MALLOC setting, or an explicit THP_MEM_ALLOC_ENABLE=0, opts out.
if not _os.environ.get("DSVBENCH_MALLOC"):
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__all__ = ["__version__", "run", "rerender", "evaluate", "Results", "BenchConfig", "config_from_flags", "UserError"]
_LAZY = {"run": "api", "rerender": "api", "evaluate": "api", "Results": "api", "BenchConfig": "config", "config_from_flags": "options",
         "UserError": "registry"}


def __getattr__(name: str):
    """The public names, imported when first used (``import dsvbench`` stays cheap for workers)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dsvbench' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
