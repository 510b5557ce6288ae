"""sdviz.figures — the explanatory figures of "The Illustrated Stable Diffusion", from real runs.

Every function is pure: it takes a traced run (see `sdviz.trace`) or a pipeline,
draws on a new `matplotlib.figure.Figure` (or the `fig=` / `ax=` you pass) inside a
local style context, and returns the figure; global matplotlib state is never touched.

    run = sdviz.generate(pipe, "a red circle", attention_layers="attn2")
    sdviz.figures.denoising_filmstrip(run, pipe).savefig("filmstrip.png")

Figures (numbers as in the seed article): 1 `components`, 2 `forward_noising`,
3 `noise_schedule`, 4 `training_example`, 5 `denoising_filmstrip` /
`denoising_animation`, 6 `latent_space`, 7 `tokens_and_embeddings`,
8 `clip_similarity`, 9 `unet_diagram`, 10 `cross_attention` / `attention_drilldown`,
11 `guidance_terms` / `guidance_sweep`. `save` writes reproducible files;
`sdviz figures` (gallery.py) writes them all plus an HTML gallery.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (imported lazily: matplotlib and torch load only when used)
_API = {
    "components": "overview",
    "forward_noising": "noising",
    "noise_schedule": "schedule",
    "training_example": "training",
    "denoising_filmstrip": "denoising",
    "denoising_animation": "animation",
    "latent_space": "latents",
    "tokens_and_embeddings": "text",
    "clip_similarity": "similarity",
    "unet_diagram": "unet",
    "cross_attention": "attention",
    "attention_drilldown": "attention",
    "guidance_terms": "guidance",
    "guidance_sweep": "guidance",
    "save": "style",
    "to_png": "style",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module 'sdviz.figures' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
