"""Method registry: the suite's own methods live here, the baselines in ``dsvbench.baselines``.

:func:`load_methods` imports both (and external packages that register methods
through the ``dsvbench.methods`` entry-point group), then the registry is complete.  The registry
calls it itself before its first lookup, so no caller needs to.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from importlib.metadata import entry_points

from .base import (METHODS, AccessDenied, BuildContext, CondensedSet, MethodFailed, MethodSpec, NamesOwnTheta,
                   NamesRetraining, register_method, take_per_class)

__all__ = ["METHODS", "AccessDenied", "BuildContext", "CondensedSet", "MethodFailed", "MethodSpec",
           "NamesOwnTheta", "NamesRetraining", "register_method", "take_per_class", "load_methods"]

BUILTIN_MODULES = ("dsvbench.baselines",)
_loaded = False


def _import_builtin(name: str) -> None:
    """Import ``dsvbench.baselines``; from a plain checkout on ``PYTHONPATH`` (no install maps the
    top-level ``baselines/`` folder into the package) load that folder under the package name."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        folder = Path(__file__).resolve().parents[2] / name.rsplit(".", 1)[-1]
        if error.name != name or not (folder / "__init__.py").exists():
            raise
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def load_methods() -> None:
    """Import every built-in method module and every ``dsvbench.methods`` entry point once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        _import_builtin(module)
    for info in pkgutil.iter_modules(__path__):  # the suite's own methods (dsvs, dsvg, ...)
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in entry_points(group="dsvbench.methods"):
        entry.load()


METHODS.set_loader(load_methods)
