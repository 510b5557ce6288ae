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
# # Lesson 1 — The components of Stable Diffusion
#
# *"The Illustrated Stable Diffusion"* (Jay Alammar, 2022) starts with a surprise: Stable
# Diffusion is not one model but a **system of several models** working together:
#
# 1. a **text encoder** (the text half of CLIP) turns the prompt into a list of token vectors;
# 2. an **image information creator** — a **UNet** and a **scheduler** — starts from random
#    noise and removes it step by step, guided by those token vectors. It works in a small,
#    compressed **latent** space, not on pixels: that is what makes Stable Diffusion fast;
# 3. an **image decoder** — the decoder of a **variational autoencoder (VAE)** — paints the
#    final picture from the last latents.
#
# In this lesson we open a real `diffusers.StableDiffusionPipeline`, find those three models
# inside it, and follow one generation through them. Every number below is printed by code
# from the model you loaded: run the same notebook with Stable Diffusion 1.5 and the numbers
# become the article's (77×768 text embeddings, 4×64×64 latents, a 3×512×512 image).

# %% [markdown]
# ## Setup
#
# One cell chooses the model. By default it is **sdviz-mini**, a miniature Stable
# Diffusion that ships inside sdviz: the same three kinds of networks and the same classes
# as the real one, trained from scratch on *ShapesWorld* (coloured shapes with captions),
# small enough to run on a laptop CPU. `sdviz.course.setup` loads it and returns the
# settings every later cell uses: how many denoising steps, the seed of the starting
# noise, the prompt, and the guidance scale the model recommends (lesson 7 explains it).

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
# ## Three models and a scheduler
#
# A diffusers pipeline is a container: its `components` are the parts. Some are neural
# networks (with parameters learned in training), some are not (the tokenizer is a fixed
# vocabulary; the scheduler is a formula). Each part, its class and its parameter count:

# %%
sdviz.course.components_table(pipe)

# %% [markdown]
# The UNet is by far the biggest network — in Stable Diffusion 1.5 it has 860 million of the
# roughly one billion parameters — and it runs once per denoising step (twice, in fact, with
# classifier-free guidance: lesson 7). The text encoder runs once per prompt, the VAE
# decoder once per image.
#
# Here is the whole system drawn with the loaded model's real shapes:

# %%
sdviz.figures.components(pipe)

# %% [markdown]
# ## Following one generation
#
# `sdviz.generate` runs the pipeline exactly as `pipe(prompt)` would, and *traces* it: it
# records what goes in and out of each stage. The result, a `Run`, is a dictionary of
# tensors; printing it lists everything that was recorded, with shapes.

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
run

# %% [markdown]
# ### 1. Text encoder: prompt → token vectors
#
# The tokenizer cuts the prompt into tokens and looks up their ids; the list is padded to a
# fixed length (77 for Stable Diffusion). The text encoder turns each token id into a
# vector that depends on the whole sentence.

# %%
n = run["tokenizer.n_tokens"]
print("tokens:", run.words)
print("ids:   ", run["tokenizer.input_ids"][:n].tolist())
print(f"{n} real tokens, padded to {run['tokenizer.input_ids'].shape[0]}")
print(
    "token ids",
    tuple(run["tokenizer.input_ids"].shape),
    "→ embeddings",
    tuple(run["text_encoder.prompt_embeds"].shape),
)

# %% [markdown]
# ### 2. UNet + scheduler: noise → latents, step by step
#
# The image information creator starts from pure Gaussian noise in latent space and runs
# the UNet once per step. At each step the UNet *predicts the noise* in its input; the
# scheduler uses that prediction to compute a slightly less noisy latent. The run recorded
# the latents entering every step, and the final ones:

# %%
latents = run["denoiser.latents"]  # (steps + 1, channels, height, width)
print("latents through the loop:", tuple(latents.shape))
print("noise predictions:       ", tuple(run["denoiser.noise_pred"].shape))
print("timesteps visited:       ", run["scheduler.step_timestep"].int().tolist())

# %% [markdown]
# The UNet is an encoder–decoder with skip connections: it shrinks the latent to coarse
# resolutions and grows it back. Cross-attention layers — where the text comes in — sit
# in its blocks:

# %%
sdviz.figures.unet_diagram(pipe)

# %% [markdown]
# ### 3. VAE decoder: latents → pixels
#
# Only at the very end does the VAE decoder turn the last latents into an image. Each
# latent cell stands for a square of `pipe.vae_scale_factor` × `pipe.vae_scale_factor`
# pixels.

# %%
image, final = run["vae.image"], latents[-1]
print("final latents", tuple(final.shape), "→ image", tuple(image.shape))
print(
    f"each latent cell covers {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels; "
    f"the image has {image.numel() / final.numel():.0f}× more numbers than the latents"
)

# %% [markdown]
# Here is the generation as a film strip: the top row decodes the noisy latents x_t at a
# few steps, the bottom row the UNet's guess of the finished picture at that step (x̂0,
# lesson 4). `sdviz.probes.step_images` runs the VAE decoder on them; the figure draws.

# %%
images = sdviz.probes.step_images(run, pipe)
sdviz.figures.denoising_filmstrip(run, images=images)

# %% [markdown]
# ## Your turn
#
# Type a prompt: the box below shows, as you type, the tokens and ids the text encoder
# will receive (lesson 6 explains them). Press **Generate** to run the whole system on it.
# This model knows the words of ShapesWorld — shapes (circle, square, triangle, star),
# colours, sizes and positions.

# %%
explorer = sdviz.widgets.PromptExplorer(
    pipe, "a small yellow star at the top", steps=lesson.steps, guidance_scale=lesson.guidance
)
explorer.generate()
explorer

# %% [markdown]
# ## Recap
#
# - Stable Diffusion is three networks around a scheduler: the **CLIP text encoder**
#   (prompt → token vectors), the **UNet** with its **scheduler** (noise → clean latents, one
#   step at a time, steered by the text), and the **VAE decoder** (latents → pixels).
# - The loop runs in the small latent space; pixels appear only at the end.
# - The UNet holds most of the parameters and runs at every step: it is where the time goes.
#
# ### Exercises
#
# 1. Generate with a prompt of your own (`sdviz.generate(pipe, "a small green star",
#    steps=lesson.steps)`) and print the same shapes: which change, and which stay fixed?
#    Why is the token list always the same length?
# 2. Generate with `steps=5` and then `steps=50`. How does the number of UNet calls change,
#    and how does the image change?
# 3. If you have a GPU and internet, set `MODEL` to the Stable Diffusion 1.5 hub id and
#    compare every printed number with the article's figures.
