"""Scheduler registry: swap a pipeline's sampler by a short name.

A diffusion model is trained once on a noise schedule (the betas and their cumulative
product alpha_bar_t, DDPM, Ho et al. 2020); a *scheduler* is the numerical method that
walks that schedule backwards at sampling time. DDPM samples ancestrally, DDIM (Song et
al. 2021, "Denoising Diffusion Implicit Models") takes deterministic larger steps, and
Euler / Heun / LMS / DPM-Solver++ / UniPC treat sampling as an ODE (Karras et al. 2022;
Lu et al. 2022). Stable Diffusion (Rombach et al. 2022) works with all of them because
they share the training schedule: each is built here from the model's own scheduler
config with `from_config`, so the betas, timestep spacing and prediction type carry over.

    make_scheduler("euler a", pipe.scheduler.config)   # -> EulerAncestralDiscreteScheduler
    scheduler_names()                                  # the canonical names
    with using_scheduler(pipe, "dpm++"): ...           # sample with it, then restore

Names are case-, space-, dash- and underscore-insensitive; diffusers class names
("DDIMScheduler") are accepted too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import diffusers

# canonical name -> (diffusers class name, aliases)
_REGISTRY: dict[str, tuple[str, tuple[str, ...]]] = {
    "ddpm": ("DDPMScheduler", ()),
    "ddim": ("DDIMScheduler", ()),
    "pndm": ("PNDMScheduler", ("plms",)),
    "lms": ("LMSDiscreteScheduler", ("klms", "lmsdiscrete")),
    "euler": ("EulerDiscreteScheduler", ("keuler", "eulerdiscrete")),
    "euler_ancestral": (
        "EulerAncestralDiscreteScheduler",
        ("eulera", "keulera", "keulerancestral", "eulerancestraldiscrete"),
    ),
    "heun": ("HeunDiscreteScheduler", ("kheun", "heundiscrete")),
    "dpm++": (
        "DPMSolverMultistepScheduler",
        ("dpmsolver++", "dpmsolver", "dpmpp", "dpm++2m", "dpmpp2m", "dpmsolvermultistep"),
    ),
    "dpm_single": (
        "DPMSolverSinglestepScheduler",
        ("dpmsinglestep", "dpmsolversinglestep", "dpm++2s", "dpmpp2s"),
    ),
    "dpm2": ("KDPM2DiscreteScheduler", ("kdpm2", "kdpm2discrete")),
    "dpm2_ancestral": (
        "KDPM2AncestralDiscreteScheduler",
        ("dpm2a", "kdpm2a", "kdpm2ancestral", "kdpm2ancestraldiscrete"),
    ),
    "deis": ("DEISMultistepScheduler", ("deismultistep",)),
    "unipc": ("UniPCMultistepScheduler", ("unipcmultistep",)),
}


def _normalise(name: str) -> str:
    key = name.strip().lower()
    for ch in " -_":
        key = key.replace(ch, "")
    return key.removesuffix("scheduler") if key != "scheduler" else key


def _lookup() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical, (class_name, aliases) in _REGISTRY.items():
        for alias in (canonical, class_name, *aliases):
            table[_normalise(alias)] = canonical
    return table


_LOOKUP = _lookup()


def scheduler_names() -> list[str]:
    """The canonical scheduler names, e.g. ``["ddpm", "ddim", ..., "unipc"]``."""
    return list(_REGISTRY)


def canonical_name(name: str) -> str:
    """Map any accepted spelling (``"DPM-Solver++"``, ``"EulerDiscreteScheduler"``) to its
    canonical name; raise `ValueError` listing the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"A scheduler name must be a string, got {type(name).__name__}.")
    key = _LOOKUP.get(_normalise(name))
    if key is None:
        raise ValueError(
            f"Unknown scheduler {name!r}. Valid names: {', '.join(scheduler_names())} "
            "(case, spaces and dashes do not matter; diffusers class names such as "
            "'EulerDiscreteScheduler' work too)."
        )
    return key


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class for a name (see `canonical_name`)."""
    class_name = _REGISTRY[canonical_name(name)][0]
    cls = getattr(diffusers, class_name)
    if getattr(cls, "__module__", "").startswith("diffusers.utils.dummy"):
        needs = "scipy" if "scipy" in cls.__module__ else "an optional dependency"
        raise ImportError(
            f"Scheduler {name!r} ({class_name}) needs {needs}: `pip install {needs}`."
        )
    return cls


def scheduler_name(scheduler: Any) -> str | None:
    """The canonical name of a scheduler instance (or class), or None if not registered."""
    cls = scheduler if isinstance(scheduler, type) else type(scheduler)
    return _LOOKUP.get(_normalise(cls.__name__)) if cls.__name__.endswith("Scheduler") else None


def make_scheduler(name: str, config: Mapping[str, Any] | Any):
    """Build the scheduler called `name` from a model's scheduler config.

    `config` is a scheduler's ``.config`` (or the scheduler itself). Keys the new class
    does not know are ignored, so the training schedule (betas, ``num_train_timesteps``,
    ``prediction_type``, ``steps_offset``, ``timestep_spacing``) carries over.
    """
    cls = scheduler_class(name)
    if hasattr(config, "config") and not isinstance(config, Mapping):
        config = config.config
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a scheduler config (e.g. pipe.scheduler.config), got "
            f"{type(config).__name__}."
        )
    return cls.from_config(dict(config))


@contextmanager
def using_scheduler(pipe: Any, name: str) -> Iterator[Any]:
    """Sample with the scheduler called `name` inside a with-block, then put the old one back.

    The new scheduler is built from the pipeline's own scheduler config (`make_scheduler`),
    so the training schedule carries over; the previous scheduler object is restored in
    a `finally`, also when the block raises. Yields the new scheduler.

        with using_scheduler(pipe, "euler"):
            run = sdviz.generate(pipe, "a red circle")
    """
    previous = pipe.scheduler
    new = make_scheduler(name, previous.config)
    pipe.scheduler = new
    try:
        yield new
    finally:
        pipe.scheduler = previous
