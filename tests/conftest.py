"""Shared fixtures: a tiny separable dataset and contexts for method builds (the plug-in kit's, dsvbench.testing)."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(min(torch.get_num_threads(), 2))

from dsvbench.data import ImageDataset  # noqa: E402
from dsvbench.testing import tiny_context as make_context  # noqa: E402,F401
from dsvbench.testing import tiny_dataset as make_tiny_dataset  # noqa: E402


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    return make_tiny_dataset()
