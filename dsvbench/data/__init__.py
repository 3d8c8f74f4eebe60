"""Datasets: one reader per file format, all returning :class:`RawSplits`.

:func:`load_dataset` turns raw splits into normalized tensors (per-channel mean/std
of the training split) and caches them on disk (:mod:`.cache`).  Readers register
themselves in ``DATASETS`` by name, and in ``SOURCES`` the files they read (which key
the cache); a missing file raises :class:`DatasetMissing` naming the path looked at,
the ``--download`` flag and the offline ``digits`` dataset.
"""
from .dataset import (DATASETS, SOURCES, DatasetMissing, ImageDataset, RawSplits, missing, normalize,
                      to_nchw_float)
from .load import load_dataset

__all__ = ["DATASETS", "SOURCES", "DatasetMissing", "ImageDataset", "RawSplits", "missing", "normalize",
           "to_nchw_float", "load_dataset"]
