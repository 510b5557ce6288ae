"""How many CPU threads torch uses for a generation: one for a small model such as sdviz-mini.

torch runs each op on `torch.get_num_threads()` OpenMP threads (by default one per
physical core), and those threads spin while they wait for each other. For a model as
small as the embedded sdviz-mini (a 1.6M-parameter UNet on 16x16 latents) every op is so
short that the waiting costs more than a second core gives, and where the cores are
busy with other work the spinning threads fight it for them. Measured on a 2-core CPU
without a GPU (sdviz-mini, `sdviz.generate`, 25 steps, guidance 3, s/image; "busy": two
processes spinning on the two cores):

    setting                        quiet host     busy      shared host (load 2-4)  + busy
    torch default (2 threads)         1.03        4.03            12.65             34.56
    1 thread                          0.74        1.12             1.20              2.98
    OMP_WAIT_POLICY=PASSIVE           1.92        1.82             1.86              3.03

(left: the 2026-12-06 measurement; right: `benchmarks/threads.py`, run A of
`benchmarks/results/2026-12-06-threads-cpu.txt`, with other engineers' jobs on the same
cores), and `sdviz trace` took 23.4 s with torch's threads on a busy host against 1.9 s
on one. One thread is the fastest in all four columns, and within 1.04x of the fastest in
every cell of the results file but one (1.7x of PASSIVE with spinners under a load of 6-7),
while PASSIVE costs 1.5-2.6x where nothing of ours spins: so one thread is sdviz's default
for a small model. A big UNet (SD 1.5: 860M parameters, 64x64
latents) has ops long enough to share between cores, so there sdviz keeps torch's
default; that half of the rule is not measured (a 2-core machine cannot time SD 1.5
usefully). OMP_WAIT_POLICY only takes effect when set before torch is imported, so it
is not this module's to set.

    from sdviz.threads import configure_threads
    configure_threads(None)                             # sdviz's default for sdviz-mini: 1
    configure_threads(None, unet_parameters=860_000_000)  # a big model: torch's default
    configure_threads(4)                                # exactly 4
"""

from __future__ import annotations

import os

import torch

# UNets with fewer parameters than this run fastest on one CPU thread (sdviz-mini: 1.6M;
# Stable Diffusion 1.x/2.x: 860M). The same cut as `sdviz figures` uses.
SMALL_UNET = 100_000_000

# torch's own choice (one thread per physical core, or OMP_NUM_THREADS), read before sdviz
# changes it: torch cannot be asked for its default once `set_num_threads` was called.
_TORCH_DEFAULT = torch.get_num_threads()


def _from_environment() -> int | None:
    """OMP_NUM_THREADS when it holds one positive count: the user chose, sdviz follows."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def default_threads(unet_parameters: int | None = None) -> int:
    """The CPU threads sdviz uses when the user names none.

    OMP_NUM_THREADS when it is set to a count; otherwise 1 for a UNet of fewer than
    `SMALL_UNET` parameters (`None`: the embedded sdviz-mini, `sdviz.load()`'s default),
    and torch's default (one per physical core) for a bigger one.
    """
    _check_parameters(unet_parameters)
    chosen = _from_environment()
    if chosen is not None:
        return chosen
    if unet_parameters is None or unet_parameters < SMALL_UNET:
        return 1
    return _TORCH_DEFAULT


def configure_threads(threads: int | None = None, *, unet_parameters: int | None = None) -> int:
    """Set torch's CPU threads (`torch.set_num_threads`) and return the count used.

    `threads`: a count >= 1, or None for `default_threads(unet_parameters)` (1 for a
    small model such as sdviz-mini; see the module's docstring for why). Pass the
    UNet's parameter count as `unet_parameters` when the model is not the embedded one.
    """
    if threads is None:
        threads = default_threads(unet_parameters)
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads must be an int >= 1 (torch CPU threads; this machine has "
            f"{os.cpu_count()} cores) or None (sdviz's default: 1 for a small model such as "
            f"sdviz-mini, torch's {_TORCH_DEFAULT} for a big one), got {threads!r}."
        )
    else:
        _check_parameters(unet_parameters)
    torch.set_num_threads(threads)
    return threads


def _check_parameters(unet_parameters: int | None) -> None:
    if unet_parameters is not None and (
        isinstance(unet_parameters, bool)
        or not isinstance(unet_parameters, int)
        or unet_parameters < 0
    ):
        raise ValueError(
            "unet_parameters must be the UNet's parameter count, an int >= 0 (such as "
            "sum(p.numel() for p in pipe.unet.parameters())), or None for the embedded "
            f"sdviz-mini, got {unet_parameters!r}."
        )
