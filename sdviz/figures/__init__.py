"""sdviz.figures — the explanatory figures of "The Illustrated Stable Diffusion", from real runs.

Figures only draw. Each takes a traced run (see `sdviz.trace`) or the record a probe
computed (`sdviz.probes`, `sdviz.autoencoder.reconstruct`, `sdviz.text.prompt_record`),
draws on a new `matplotlib.figure.Figure` (or the `fig=` / `ax=` you pass) inside a
local style context, and returns the figure; no figure runs a network, and global
matplotlib state is never touched. (`components`, `unet_diagram` and `noise_schedule`
read a pipeline's configuration, never its weights' outputs.)

    run = sdviz.generate(pipe, "a red circle", attention_layers="attn2")
    images = sdviz.probes.step_images(run, pipe)          # the VAE runs here
    sdviz.figures.denoising_filmstrip(run, images=images).savefig("filmstrip.png")

Figures (numbered in the order of the seed article's story; the article itself numbers
none) and what they draw:

     1 `components(pipe, run=None)`           the pipeline's configuration (any family)
     2 `forward_noising(noised)`               sdviz.probes.noised_images(pipe, image)
     3 `noise_schedule(*sources)`              runs, pipelines or schedulers (diffusion
                                              next to flow matching: SD3, Flux)
     4 `training_example(example)`             sdviz.probes.noise_predictions(pipe, image)
     5 `denoising_filmstrip(run, images=)`     sdviz.probes.step_images(run, pipe)
       `denoising_animation(run, path, images=)`
     6 `latent_space(reconstruction)`          sdviz.autoencoder.reconstruct(pipe, image)
       `reconstruction_quality(recs)`          sdviz.autoencoder.reconstruct_many(pipe, images)
     7 `tokens_and_embeddings(run)`            a run or sdviz.text.prompt_record(pipe, prompt)
                                              (SDXL / SD3 / Flux: a row per tokenizer)
     8 `clip_similarity(embeddings)`           sdviz.probes.clip_embeddings(images, ...)
     9 `unet_diagram(structure)`               sdviz.probes.unet_structure(pipe) (or a pipe)
       `timestep_embedding(emb)`               sdviz.probes.timestep_embeddings(pipe)
    10 `cross_attention(run)` / `attention_drilldown(run, word)`
       `attention_localisation(rec)`          sdviz.probes.localisation(pipe)
       `attention_shares(shares)`             sdviz.probes.attention.token_shares(...)
    11 `guidance_terms(run)` / `guidance_sweep(runs)`   sdviz.probes.guidance_runs(...)
       `guidance_benefit(measured, runs)`    sdviz.probes.measured_guidance(pipe)

Beside them (issue 20, sdviz-mini vs sdviz-mini-flow):

       `path_straightness(rec)`               sdviz.probes.measure_straightness(pipes)
       `attention_side_by_side(runs, words)`  runs of the same prompt and seed, two models

`filmstrip(images, titles)` draws a plain row of images, `training_curves(loss)` a loss
(and accuracy) over training steps, `live_training(run)` a lesson's live run with its
own labels. `save` writes reproducible
files; `sdviz figures` writes them all plus an HTML gallery.
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
    "reconstruction_quality": "latents",
    "tokens_and_embeddings": "text",
    "clip_similarity": "similarity",
    "unet_diagram": "unet",
    "timestep_embedding": "timestep",
    "cross_attention": "attention",
    "attention_drilldown": "attention",
    "attention_localisation": "attention",
    "attention_shares": "attention",
    "guidance_terms": "guidance",
    "guidance_sweep": "guidance",
    "guidance_benefit": "guidance",
    "filmstrip": "image_row",
    "training_curves": "curves",
    "live_training": "curves",
    "save": "style",
    "to_png": "style",
    "path_straightness": "straightness",
    "attention_side_by_side": "attention_pair",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module 'sdviz.figures' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
