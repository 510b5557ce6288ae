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
# Setup — the only cell you need to edit. MODEL = None loads the embedded sdviz-mini model
# (or the one the SDVIZ_MODEL environment variable names): offline, a few MB, about a
# second per image on a laptop CPU. A hub id loads the real thing (online the first time,
# ~4 GB; use a CUDA GPU: sdviz then picks float16 by itself), a path a local diffusers folder:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# %matplotlib inline
import sdviz.course

MODEL = None
lesson = sdviz.course.setup(MODEL)  # the pipeline; the steps, seed, prompt and guidance
pipe = lesson.pipe  # the diffusers pipeline every cell below uses
lesson

# %% [markdown]
# ## 1. Image-to-image
#
# Image-to-image encodes a starting picture with the VAE, noises its latents to an
# intermediate timestep with the forward formula of lesson 2, and runs only the remaining
# denoising steps with a new prompt. The **strength** (0 to 1) picks how far back to go:
# low strength keeps the composition, high strength keeps almost nothing.
#
# diffusers' `StableDiffusionImg2ImgPipeline` is built from the same components, and
# `sdviz.trace` records it like any other pipeline: `sdviz.probes.image_to_image` builds
# it from the loaded pipeline and traces one run per strength, all from the same seed.

# %%
start = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
edit = sdviz.probes.image_to_image(
    pipe,
    start["vae.image"],
    "a blue circle to the left of a red square",  # the new prompt: the colours swapped
    [0.3, 0.6, 0.9],  # strengths
    steps=lesson.steps,
    guidance_scale=lesson.guidance,
    seed=lesson.seed,
)
sdviz.course.table(
    {
        "strength": edit.strengths,
        "starts at t": edit.first_timestep,
        "ᾱ_t there": edit.first_alpha_bar,
        f"steps run (of {lesson.steps})": edit.steps_run,
    },
    formats={"ᾱ_t there": ".2f"},
    notes="ᾱ_t: the share of the starting image's signal left in the noised latent",
)

# %% [markdown]
# The starting image, then the results at strengths 0.3, 0.6 and 0.9:

# %%
sdviz.course.image_row([start["vae.image"], *edit.images])

# %% [markdown]
# The film strip of the middle strength starts from a noisy version of the old picture,
# not from pure noise:

# %%
middle = edit.runs[1]
sdviz.figures.denoising_filmstrip(middle, images=sdviz.probes.step_images(middle, pipe))

# %% [markdown]
# ## 2. Prompt interpolation
#
# `sdviz.embed` returns the token vectors the UNet receives for a prompt. A weighted mix of
# two prompts' vectors is a perfectly good input — passed to the pipeline as
# `prompt_embeds` — even though no sentence produces it.

# `sdviz.probes.interpolate_prompts` generates from (1 − w)·embed("a red circle") +
# w·embed("a blue square") for each weight w, with the same seed:

# %%
mix = sdviz.probes.interpolate_prompts(
    pipe,
    "a red circle",
    "a blue square",
    [0.0, 0.25, 0.5, 0.75, 1.0],  # the weight w of "a blue square"
    steps=lesson.steps,
    guidance_scale=lesson.guidance,
    seed=lesson.seed,
)
print("token vectors per prompt:", tuple(sdviz.embed(pipe, mix.first).shape), "(tokens, d)")
print("weight w of 'a blue square', left to right:", mix.weights)
sdviz.course.image_row(mix.images)

# %% [markdown]
# ## 3. Guidance on a prompt never seen in training
#
# ShapesWorld holds some colour–shape pairs out of the training set (a yellow square is
# one of them), so the embedded model has to *compose* "yellow" and "square" from what it
# learned separately. A guidance sweep shows how hard the text must push to get there:

# %%
print("held-out (colour, shape) pairs:", sdviz.shapes.HELD_OUT_PAIRS)
sweep = sdviz.probes.guidance_runs(
    pipe, "a yellow square", [1.0, 1.5, 3.0, 7.5], seed=lesson.seed, steps=lesson.steps
)
sdviz.figures.guidance_sweep(sweep)

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
import torch

with torch.device("meta"):  # no memory allocated, nothing downloaded
    sd15 = sdviz.sd_architecture("1.5")
sdviz.course.components_table(pipe, sd15, labels=["parameters here", "in SD 1.5"])

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
# 3. Generate inside `with sdviz.schedulers.using_scheduler(pipe, "dpm++"):` and find the
#    smallest number of steps that still gives a clean image.
