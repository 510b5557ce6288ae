"""sdviz.threads: the CPU thread default (1 for a small model) and its input checks."""

from __future__ import annotations

import pytest
import torch

from sdviz import threads
from sdviz.threads import SMALL_UNET, configure_threads, default_threads

MINI_UNET = 1_552_516  # sdviz-mini's UNet parameters
SD15_UNET = 859_520_964


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Every test leaves torch's thread count as it found it, and sees no OMP_NUM_THREADS."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_count_is_set_and_returned():
    for n in (1, 2, 3):
        assert configure_threads(n) == n
        assert torch.get_num_threads() == n


def test_the_default_is_one_thread_for_sdviz_mini():
    torch.set_num_threads(3)
    assert configure_threads() == 1
    assert torch.get_num_threads() == 1
    assert configure_threads(None, unet_parameters=MINI_UNET) == 1
    assert default_threads(SMALL_UNET - 1) == 1


def test_a_big_model_keeps_torchs_own_default(monkeypatch):
    monkeypatch.setattr(threads, "_TORCH_DEFAULT", 3)  # as if torch chose 3 at import
    torch.set_num_threads(1)
    assert configure_threads(None, unet_parameters=SD15_UNET) == 3
    assert torch.get_num_threads() == 3
    assert default_threads(SMALL_UNET) == 3


def test_omp_num_threads_is_the_users_choice(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() == 2
    assert configure_threads(None, unet_parameters=SD15_UNET) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested levels: not one count, ignored
    assert default_threads() == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, [2]])
def test_a_bad_count_is_refused_and_changes_nothing(bad):
    torch.set_num_threads(2)
    with pytest.raises(ValueError, match=r"threads must be an int >= 1 .* or None .*got") as err:
        configure_threads(bad)
    assert repr(bad) in str(err.value)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [-1, 1e9, "big", False])
def test_a_bad_parameter_count_is_refused(bad):
    with pytest.raises(ValueError, match=r"unet_parameters must be .* got") as err:
        configure_threads(None, unet_parameters=bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError, match="unet_parameters"):
        configure_threads(2, unet_parameters=bad)


# benchmarks/threads.py, which measured the default


def test_benchmark_stops_its_busy_processes_when_the_block_fails(benchmark_module):
    bench = benchmark_module("threads")
    with pytest.raises(RuntimeError, match="boom"):
        with bench.busy(2, seconds=60) as spinners:
            assert len(spinners) == 2 and all(p.poll() is None for p in spinners)
            raise RuntimeError("boom")
    assert all(p.poll() is not None for p in spinners)


def test_benchmark_busy_processes_stop_by_themselves(benchmark_module):
    bench = benchmark_module("threads")
    with bench.busy(1, seconds=0.2) as (spinner,):
        assert spinner.wait(timeout=30) == 0


def test_benchmark_table_gives_ratios_to_the_best_and_the_verdict(benchmark_module):
    bench = benchmark_module("threads")
    quiet = {"torch default": 1.0, "1 thread (OMP_NUM_THREADS=1)": 0.8}
    quiet |= {"OMP_WAIT_POLICY=PASSIVE": 2.0, "sdviz default": 0.8}
    busy = {"torch default": 4.0, "1 thread (OMP_NUM_THREADS=1)": 1.2}
    busy |= {"OMP_WAIT_POLICY=PASSIVE": 1.0, "sdviz default": 1.2}
    results = {}
    for condition, times in (("quiet", quiet), ("busy", busy)):
        for setting, s in times.items():
            results[setting, condition] = {"threads": 2, "seconds": [s, s + 1, s - 0.1]}
    lines = bench.table(results)
    assert lines[0].split() == ["setting", "threads", "quiet", "x", "best", "busy", "x", "best"]
    assert lines[1].split()[-4:] == ["1.00", "1.25", "4.00", "4.00"]  # medians 1.0 and 4.0
    assert lines[-1].endswith("yes (quiet 1.00x, busy 1.20x)")
    results["sdviz default", "busy"]["seconds"] = [1.4] * 3
    assert bench.table(results)[-1].endswith("NO (quiet 1.00x, busy 1.40x)")


@pytest.mark.slow
def test_benchmark_runs_the_sdviz_default_in_a_fresh_process_on_one_thread(benchmark_module):
    bench = benchmark_module("threads")
    worker = bench.Worker("sdviz default", steps=1, timeout=300)
    try:
        assert worker.read() == {"threads": 1}  # loaded and warmed up
        assert 0 < worker.image(seed=1) < 300
    finally:
        worker.stop()
    assert worker.proc.returncode == 0
