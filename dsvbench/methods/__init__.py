"""Method registry: the suite's own methods live here, the baselines in ``dsvbench.baselines``.

:func:`load_methods` imports both (and external packages that register methods
through the ``dsvbench.methods`` entry-point group), then the registry is complete.
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from .base import (METHODS, AccessDenied, BuildContext, CondensedSet, MethodFailed, MethodSpec,
                   batched_builder, register_method, take_per_class)

__all__ = ["METHODS", "AccessDenied", "BuildContext", "CondensedSet", "MethodFailed", "MethodSpec",
           "batched_builder", "register_method", "take_per_class", "load_methods"]

BUILTIN_MODULES = ("dsvbench.baselines",)
_loaded = False


def load_methods() -> None:
    """Import every built-in method module and every ``dsvbench.methods`` entry point once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for info in pkgutil.iter_modules(__path__):  # the suite's own methods (dsvs, dsvg, ...)
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in entry_points(group="dsvbench.methods"):
        entry.load()
