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
# # Lesson 2 — Forward diffusion: adding noise
#
# How do you teach a network to turn noise into pictures? *"The Illustrated Stable
# Diffusion"* answers with a trick: first learn the easy direction. Take a picture, draw some
# Gaussian noise, and **add an amount of it** — a little, a lot, or so much that nothing of
# the picture is left. Every (noisy picture, noise amount) pair is a training example for a
# network whose job is to say *which noise was added*. This lesson is about that forward,
# noise-adding process; lesson 3 trains the noise predictor, lesson 4 runs it backwards.
#
# The amount of noise is indexed by a **timestep** t from 0 (clean) to T−1 (pure noise).
# DDPM (Ho et al. 2020) gives the noisy version in closed form, with no need to add noise
# step by step:
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,
# \qquad \varepsilon \sim \mathcal N(0, I)$$
#
# ᾱ_t ("alpha bar") is the fraction of the signal's variance left at step t: 1 at t = 0,
# close to 0 at the end. The list of ᾱ_t values is the **noise schedule**.

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
print(f"{type(pipe).__name__} on {pipe.device} ({pipe.dtype}), {STEPS} denoising steps")

# %% [markdown]
# ## A real photograph
#
# Matplotlib ships a photograph of Grace Hopper with its test data, so it is on every
# machine that has matplotlib. To a model, an image is a grid of numbers: 3 colour channels
# × height × width, scaled to [−1, 1] as Stable Diffusion's autoencoder expects. We resize it
# to the size the loaded model was trained at.

# %%
import numpy as np
from matplotlib.cbook import get_sample_data
from PIL import Image

side = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the model's image size
photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
x0 = torch.from_numpy(np.asarray(photo)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
print("image tensor", tuple(x0.shape), f"values in [{x0.min():.0f}, {x0.max():.0f}]")
photo

# %% [markdown]
# ## Noise at chosen amounts
#
# `sdviz.add_noise` is the formula above. We noise the photo to a few timesteps with one
# draw of noise, and print how much of the signal is left at each.

# %%
T = pipe.scheduler.config.num_train_timesteps
timesteps = [0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
abar = sdviz.diffusion.alpha_bar(pipe.scheduler, timesteps)
noisy = sdviz.add_noise(
    x0, timesteps, pipe.scheduler, generator=torch.Generator().manual_seed(SEED)
)
print(f"{T} training timesteps; noisy batch {tuple(noisy.shape)}")
print(
    *[
        f"t={t:4d}  ᾱ_t={a:.4f}  signal ×{a.sqrt():.3f}  noise ×{(1 - a).sqrt():.3f}  std(x_t)={x.std():.2f}"
        for t, a, x in zip(timesteps, abar, noisy, strict=True)
    ],
    sep="\n",
)

# %% [markdown]
# Two things to notice in the printed numbers. The signal fades smoothly while the noise
# grows, and the overall spread of the values (the standard deviation) stays of order one:
# the process is *variance preserving* — the network always sees inputs of a similar scale.
# At the last timestep the picture's weight is tiny: x_t is, for all practical purposes,
# pure noise. That is where generation starts.
#
# The formula is all there is to it — check it by hand with a fixed noise tensor:

# %%
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
by_hand = abar[3].sqrt() * x0 + (1 - abar[3]).sqrt() * noise
by_sdviz = sdviz.add_noise(x0, timesteps[3], pipe.scheduler, noise=noise)
print("largest difference:", float((by_hand - by_sdviz).abs().max()))

# %% [markdown]
# Here is the photo at those noise levels. The top row adds noise to the pixels. Stable
# Diffusion, however, adds noise to the *latents* of the autoencoder (lesson 5): the bottom
# row noises the photo's latents and decodes them back to see what that looks like.

# %%
sdviz.figures.forward_noising(pipe, photo, timesteps=timesteps, seed=SEED)

# %% [markdown]
# ## The training images: ShapesWorld
#
# The embedded model never saw a photograph. It was trained on **ShapesWorld**: procedural
# pictures of coloured shapes, each with a caption, generated on the fly from a seed (so
# the data set is unlimited and needs no download).

# %%
world = sdviz.shapes.ShapesWorld(size=side)
samples = [world[i] for i in range(6)]
print(*[f"{i}: {s.caption}" for i, s in enumerate(samples)], sep="\n")
Image.fromarray(np.concatenate([s.image for s in samples], axis=1))

# %% [markdown]
# A training example is one of these pictures, noised to a random timestep:

# %%
sdviz.figures.forward_noising(
    pipe, Image.fromarray(samples[0].image), timesteps=timesteps, seed=SEED
)

# %% [markdown]
# ## The schedule
#
# How fast ᾱ_t falls is a design choice. Stable Diffusion uses a "scaled linear" schedule
# of the per-step noise β_t from 0.00085 to 0.012 over 1000 steps. The plot shows ᾱ_t, the
# noise level σ_t = √((1−ᾱ_t)/ᾱ_t) and the signal-to-noise ratio; the dots are the
# timesteps a sampler with `STEPS` steps visits on its way back (lesson 4).

# %%
print(
    {
        k: pipe.scheduler.config[k]
        for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
    }
)
sdviz.figures.noise_schedule(pipe, steps=STEPS)

# %% [markdown]
# ## Recap
#
# - Forward diffusion mixes an image with Gaussian noise:
#   x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. One formula jumps to any timestep directly.
# - ᾱ_t, the noise schedule, goes from 1 (clean) to almost 0 (pure noise); the mix keeps
#   the overall variance near one.
# - Stable Diffusion applies this to the autoencoder's latents, not to pixels.
# - Each (noisy image, timestep) → noise triple is a training example for the noise
#   predictor: that is lesson 3.
#
# ### Exercises
#
# 1. At which timestep is ᾱ_t closest to 0.5, where signal and noise have equal variance?
#    Find it with `sdviz.diffusion.alpha_bar(pipe.scheduler, range(T))`.
# 2. Noise a ShapesWorld image and the photo to the same t. Which one stays recognisable
#    longer, and why might flat-coloured shapes differ from a photograph?
# 3. Compare Stable Diffusion's schedule with the "linear" one of the original DDPM paper:
#    `sdviz.figures.noise_schedule(pipe, "ddpm")` after changing `beta_schedule`, or by
#    passing a scheduler you build with `diffusers.DDPMScheduler(beta_schedule="linear")`.
