"""dsvbench: dataset distillation and coreset selection at tiny budgets (Deep Support Vectors, Table 1).

The library call is :func:`dsvbench.run` (and :func:`dsvbench.rerender`), imported on first use::

    import dsvbench
    results = dsvbench.run(dataset="digits", methods=["random", "herding"], seeds=2, out="results/api-demo")
    print(results.table())
"""
from .version import __version__

__all__ = ["__version__", "run", "rerender", "evaluate", "Results", "BenchConfig", "config_from_flags", "UserError"]
_LAZY = {"run": "api", "rerender": "api", "evaluate": "api", "Results": "api", "BenchConfig": "config", "config_from_flags": "options",
         "UserError": "registry"}


def __getattr__(name: str):
    """The public names, imported when first used (``import dsvbench`` stays cheap for workers)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dsvbench' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
