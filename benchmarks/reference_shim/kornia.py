"""A stand-in for ``kornia``, which MTT's ``utils.py`` imports for ZCA whitening only.

The MNIST comparison of ``benchmarks/vs_reference_mtt.py`` runs without ZCA (as the reference does for
every dataset unless ``--zca``), so any use of this module is an error, never a silent substitute.
"""


def __getattr__(name: str):
    raise NotImplementedError(f"kornia.{name}: not in the dsvbench reference shim (run the reference without --zca)")
