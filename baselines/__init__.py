"""Comparison methods of Table 1, one file each.  Installed as ``dsvbench.baselines``.

Every module in this folder is imported by :func:`dsvbench.methods.load_methods`, so a
new baseline is one file with one ``@register_method`` decorator.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
