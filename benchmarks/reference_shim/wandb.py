"""A stand-in for the few ``wandb`` names MTT's ``distill.py`` uses, offline and logging nothing.

``distill.py`` hands its arguments to ``wandb.init(config=args)`` and reads them back from
``wandb.config._items``; this module keeps them in the same place.  ``log`` is a no-op, so a run
under ``benchmarks/vs_reference_mtt.py`` spends no time on logging that the authors' run spent
on a network service.  Nothing here is imported by dsvbench itself.
"""
from __future__ import annotations

from types import SimpleNamespace

config = SimpleNamespace(_items={})
run = SimpleNamespace(name="offline")


def init(config=None, **_) -> None:
    globals()["config"] = SimpleNamespace(_items=dict(vars(config)) if config is not None else {})


def log(*_, **__) -> None:
    return None


def finish() -> None:
    return None


class Histogram:
    def __init__(self, *_, **__) -> None:
        pass


class Image(Histogram):
    pass
