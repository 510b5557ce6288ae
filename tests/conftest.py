"""Shared test fixtures.

`device`: where tests put pipelines. Tests run on the CPU unless the environment
variable SDVIZ_DEVICE names another torch device (benchmarks/gpu_check.sh sets
SDVIZ_DEVICE=cuda to run the suite on a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> torch.device:
    name = os.environ.get("SDVIZ_DEVICE", "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"SDVIZ_DEVICE={name} but torch sees no CUDA device")
    return dev
