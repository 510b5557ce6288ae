"""Shared test fixtures and settings.

`device`: where tests put pipelines. Tests run on the CPU unless the environment
variable SDVIZ_DEVICE names another torch device (benchmarks/gpu_check.sh sets
SDVIZ_DEVICE=cuda to run the suite on a GPU).

CPU threads: torch's threads spin while they wait for each other, so on a machine
whose cores are already busy (load average above the core count) two threads per op
made the small test pipelines 10-20x slower than one (measured here: 31 s vs 9.5 min
for the trace tests). The suite then uses one thread; SDVIZ_TORCH_THREADS=n forces n.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    forced = os.environ.get("SDVIZ_TORCH_THREADS")
    if forced:
        torch.set_num_threads(int(forced))
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device() -> torch.device:
    name = os.environ.get("SDVIZ_DEVICE", "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"SDVIZ_DEVICE={name} but torch sees no CUDA device")
    return dev


@pytest.fixture(scope="session")
def benchmark_module():
    """Load a script of benchmarks/ (not a package) by name: `benchmark_module("mini_quality")`."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
