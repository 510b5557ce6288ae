"""Seeded model construction from a local `torch.Generator`, without touching the global RNG.

`diffusers` and `transformers` models draw their initial weights in their constructors
from torch's global generator, and take no generator of their own. Inside
`drawing_from(generator)`, every torch random draw that names no generator (the
`torch.nn.init` functions, `Tensor.normal_`, `torch.randn`, ...) draws from `generator`
instead, so that

    model = ...  # built inside `with drawing_from(torch.Generator().manual_seed(seed)):`

gets the same weights as after `torch.manual_seed(seed)`, while the global generator is
neither reseeded nor advanced. It works through a `TorchFunctionMode`, which is
thread-local: other threads draw as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

# torch's random functions (torch.*, Tensor.* and torch.nn.init.*, and the wrappers of the
# latter that transformers calls), by name: each takes a `generator` keyword
RANDOM_FUNCTIONS = frozenset(
    {
        "bernoulli", "bernoulli_", "cauchy_", "exponential_", "geometric_", "kaiming_normal_",
        "kaiming_uniform_", "log_normal_", "multinomial", "normal", "normal_", "orthogonal_",
        "poisson", "rand", "rand_like", "randint", "randint_like", "randn", "randn_like",
        "random_", "randperm", "sparse_", "trunc_normal_", "uniform_", "xavier_normal_",
        "xavier_uniform_",
    }
)  # fmt: skip


class _DrawFrom(TorchFunctionMode):
    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in RANDOM_FUNCTIONS and kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": self.generator}
        return func(*args, **kwargs)


@contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[torch.Generator]:
    """Within the block, torch's random draws that name no generator draw from `generator`."""
    with _DrawFrom(generator):
        yield generator
