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
# ## A real photograph
#
# Matplotlib ships a photograph of Grace Hopper with its test data, so it is on every
# machine that has matplotlib. To a model, an image is a grid of numbers: 3 colour channels
# × height × width, scaled to [−1, 1] as Stable Diffusion's autoencoder expects. We resize it
# to the size the loaded model was trained at.

# %%
import numpy as np
import torch
from matplotlib.cbook import get_sample_data
from PIL import Image

side = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the model's image size
photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
x0 = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
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
    x0, timesteps, pipe.scheduler, generator=torch.Generator().manual_seed(lesson.seed)
)
print(f"{T} training timesteps; noisy batch {tuple(noisy.shape)} (one image per t)")
sdviz.course.table(
    {
        "t": timesteps,
        "ᾱ_t": abar,
        "signal weight √ᾱ_t": abar.sqrt(),
        "noise weight √(1−ᾱ_t)": (1 - abar).sqrt(),
        "std(x_t)": noisy.std(dim=(1, 2, 3)),
    },
    formats={
        "ᾱ_t": ".4f",
        "signal weight √ᾱ_t": ".3f",
        "noise weight √(1−ᾱ_t)": ".3f",
        "std(x_t)": ".2f",
    },
    notes="ᾱ_t: the share of the signal's variance left; std(x_t): the spread of the noisy values",
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
print("by hand vs sdviz.add_noise, largest difference:", float((by_hand - by_sdviz).abs().max()))

# %% [markdown]
# Here is the photo at those noise levels. The top row adds noise to the pixels. Stable
# Diffusion, however, adds noise to the *latents* of the autoencoder (lesson 5): the bottom
# row noises the photo's latents and decodes them back to see what that looks like.
# `sdviz.probes.noised_images` does the noising (and the VAE's encoding and decoding);
# the figure draws what it returns.

# %%
noised_photo = sdviz.probes.noised_images(pipe, photo, timesteps, seed=lesson.seed)
sdviz.figures.forward_noising(noised_photo)

# %% [markdown]
# ## The training images: ShapesWorld
#
# The embedded model never saw a photograph. It was trained on **ShapesWorld**: procedural
# pictures of coloured shapes, each with a caption, generated on the fly from a seed (so
# the data set is unlimited and needs no download).

# %%
world = sdviz.shapes.ShapesWorld(size=side)
samples = sdviz.course.examples(world, 6)  # the first six pictures, with their captions
print(samples)
samples.strip()

# %% [markdown]
# A training example is one of these pictures, noised to a random timestep:

# %%
sdviz.figures.forward_noising(
    sdviz.probes.noised_images(pipe, samples.images[0], timesteps, seed=lesson.seed)
)

# %% [markdown]
# ## The schedule
#
# How fast ᾱ_t falls is a design choice. Stable Diffusion uses a "scaled linear" schedule
# of the per-step noise β_t from 0.00085 to 0.012 over 1000 steps. The plot shows ᾱ_t, the
# noise level σ_t = √((1−ᾱ_t)/ᾱ_t) and the signal-to-noise ratio; the dots are the
# timesteps a sampler with `lesson.steps` steps visits on its way back (lesson 4).

# %%
config = pipe.scheduler.config
print("training timesteps T:         ", config.num_train_timesteps)
print("β at the first timestep:      ", config.beta_start)
print("β at the last timestep:       ", config.beta_end)
print("how β goes from one to other: ", config.beta_schedule)
sdviz.figures.noise_schedule(pipe, steps=lesson.steps)

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
