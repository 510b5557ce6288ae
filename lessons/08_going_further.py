# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 8 — Going further
#
# You have now seen every part of Stable Diffusion. The same parts, recombined, give the
# features people use every day. This lesson tries four of them:
#
# 1. **image-to-image**: start the reverse process from a noised *existing* image instead of
#    pure noise (SDEdit, Meng et al. 2022) — the "text + image input" mode of the article;
# 2. **prompt interpolation**: the UNet only sees the text encoder's vectors, so you can
#    give it vectors that no prompt produces — for instance, halfway between two prompts;
# 3. a **guidance sweep** on a prompt the model never saw during training;
# 4. **swapping in a bigger model**: the real Stable Diffusion 1.5.

# %% [markdown]
# ## Setup

# %%
# Setup — the only cell you need to edit: which model, and the test switch.
# %matplotlib inline
import os

import torch

import sdviz

# MODEL = None loads the embedded sdviz-mini model: offline, a few MB, about a second per
# image on a laptop CPU. A hub id loads the real thing (online the first time, ~4 GB; use a
# CUDA GPU: sdviz.load then picks float16 by itself), and a path loads a local diffusers folder:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MODEL = os.environ.get("SDVIZ_MODEL")
SMOKE = os.environ.get("SDVIZ_SMOKE") == "1"  # set by the tests: shorter loops, same story

pipe = sdviz.load(MODEL)  # device="auto": CUDA, else Apple MPS, else CPU
pipe.set_progress_bar_config(disable=True)  # no progress bars in the lessons
STEPS = 8 if SMOKE else 25
SEED = 0
PROMPT = "a red circle to the left of a blue square"
GUIDANCE = 7.5 if MODEL else 3.0  # lesson 7: 7.5 for SD 1.5, 3 for sdviz-mini (model card)
print(f"{type(pipe).__name__} on {pipe.device} ({pipe.dtype}), {STEPS} denoising steps")

# %% [markdown]
# ## 1. Image-to-image
#
# Image-to-image encodes a starting picture with the VAE, noises its latents to an
# intermediate timestep with the forward formula of lesson 2, and runs only the remaining
# denoising steps with a new prompt. The **strength** (0 to 1) picks how far back to go:
# low strength keeps the composition, high strength keeps almost nothing.
#
# diffusers' `StableDiffusionImg2ImgPipeline` is built from the same components, and
# `sdviz.trace` records it like any other pipeline: one run per call.

# %%
import numpy as np
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

start = sdviz.generate(pipe, PROMPT, steps=STEPS, seed=SEED, guidance_scale=GUIDANCE)
img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
img2img.set_progress_bar_config(disable=True)
NEW_PROMPT = "a blue circle to the left of a red square"
strengths = [0.3, 0.6, 0.9]
with sdviz.trace(img2img) as tr:
    images = [
        img2img(
            NEW_PROMPT,
            image=start["vae.image"][None],
            strength=s,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(SEED),
        ).images[0]
        for s in strengths
    ]
print(
    *[
        f"strength {s}: starts at t = {int(r['scheduler.step_timestep'][0])} (ᾱ_t = {float(r['scheduler.step_alpha_bar'][0]):.2f}), "
        f"runs {r['denoiser.noise_pred'].shape[0]} of {STEPS} steps"
        for s, r in zip(strengths, tr.runs, strict=True)
    ],
    sep="\n",
)

# %% [markdown]
# The starting image, then the results at strengths 0.3, 0.6 and 0.9:

# %%
Image.fromarray(
    np.hstack(
        [np.asarray(start["vae.image"].permute(1, 2, 0) * 255, dtype=np.uint8)]
        + [np.asarray(im) for im in images]
    )
)

# %% [markdown]
# The film strip of the middle strength starts from a noisy version of the old picture,
# not from pure noise:

# %%
sdviz.figures.denoising_filmstrip(tr.runs[1], pipe)

# %% [markdown]
# ## 2. Prompt interpolation
#
# `sdviz.embed` returns the token vectors the UNet receives for a prompt. A weighted mix of
# two prompts' vectors is a perfectly good input — passed to the pipeline as
# `prompt_embeds` — even though no sentence produces it.

# %%
a, b = sdviz.embed(pipe, "a red circle"), sdviz.embed(pipe, "a blue square")
weights = [0.0, 0.25, 0.5, 0.75, 1.0]
mixed = [
    pipe(
        prompt_embeds=torch.lerp(a, b, w)[None].to(pipe.device, pipe.dtype),
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=torch.Generator().manual_seed(SEED),
    ).images[0]
    for w in weights
]
print("embeddings", tuple(a.shape), "— weights of 'a blue square':", weights)
Image.fromarray(np.hstack([np.asarray(im) for im in mixed]))

# %% [markdown]
# ## 3. Guidance on a prompt never seen in training
#
# ShapesWorld holds some colour–shape pairs out of the training set (a yellow square is
# one of them), so the embedded model has to *compose* "yellow" and "square" from what it
# learned separately. A guidance sweep shows how hard the text must push to get there:

# %%
print("held-out pairs:", sdviz.shapes.HELD_OUT_PAIRS)
sdviz.figures.guidance_sweep(
    pipe, "a yellow square", scales=[1.0, 1.5, 3.0, 7.5], steps=STEPS, seed=SEED
)

# %% [markdown]
# ## 4. A bigger model
#
# Every lesson works unchanged with the real Stable Diffusion: set `MODEL` in the setup
# cell to a hub id such as `"stable-diffusion-v1-5/stable-diffusion-v1-5"` (about 4 GB,
# downloaded once, then cached; on a CUDA GPU sdviz loads it in float16) or to a local
# diffusers folder. What changes is the size. sdviz can build the published SD 1.5
# architecture with random weights on PyTorch's *meta* device — shapes without memory —
# to compare it with the loaded model:

# %%
with torch.device("meta"):  # no memory allocated, nothing downloaded
    sd15 = sdviz.sd_architecture("1.5")
print(
    *[
        f"{name:>12}: {sum(p.numel() for p in getattr(pipe, name).parameters()):>13,} here, "
        f"{sum(p.numel() for p in getattr(sd15, name).parameters()):>13,} in SD 1.5"
        for name in ("text_encoder", "unet", "vae")
    ],
    sep="\n",
)

# %%
sdviz.figures.components(sd15)

# %% [markdown]
# SD 1.5's 860-million-parameter UNet needs about 2 GB in float16 and a few seconds per
# image on a recent GPU; on a laptop CPU a single image takes minutes. Every figure and
# widget in these lessons reads the same trace keys from it.

# %% [markdown]
# ## Recap
#
# - **Image-to-image** is the reverse process started part-way, from a noised encoding of
#   an existing image; the strength picks the starting timestep.
# - The UNet sees only token vectors, so **interpolating embeddings** blends prompts.
# - **Guidance** trades fidelity to the prompt against image quality; held-out
#   combinations show whether the model composes what it learned.
# - The embedded model and Stable Diffusion 1.5 are the same system at different scales.
#
# ### Exercises
#
# 1. Use the Grace Hopper photo of lesson 2 as the starting image for image-to-image. At
#    which strength does the model stop reproducing the photo?
# 2. Interpolate between the *noise* instead of the prompts: two seeds' initial latents,
#    passed as `latents=` to the pipeline. How does that differ from prompt interpolation?
# 3. Load a second scheduler with `sdviz.pipeline.set_scheduler(pipe, "dpm++")` and find
#    the smallest number of steps that still gives a clean image.
