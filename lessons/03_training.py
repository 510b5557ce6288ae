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
# # Lesson 3 — Training the noise predictor
#
# Lesson 2 showed how to noise an image to any timestep in one go. *"The Illustrated Stable
# Diffusion"* turns that into a data set: **how training examples are made**.
#
# 1. pick an image (and its caption) from the training data;
# 2. pick a random timestep t, i.e. an amount of noise;
# 3. draw Gaussian noise ε and mix it in: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε;
# 4. the **input** is (x_t, t, caption); the **label** is ε, the noise itself.
#
# The UNet is trained to predict ε from its input, with the mean squared error as the loss
# (Ho et al. 2020's simple objective). In Stable Diffusion x_0 is not the image but its
# VAE latent (lesson 5), and the caption enters through cross-attention (lesson 7).

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
TRAIN_STEPS, TRAIN_IMAGES = (5, 32) if SMOKE else (60, 256)  # the live training run below
PROMPT = "a red circle to the left of a blue square"
print(f"{type(pipe).__name__} on {pipe.device} ({pipe.dtype}), {STEPS} denoising steps")

# %% [markdown]
# ## Making training examples
#
# A batch of ShapesWorld images with their captions, encoded to latents, each noised to a
# random timestep with its own noise:

# %%
from PIL import Image

side = pipe.unet.config.sample_size * pipe.vae_scale_factor
world = sdviz.shapes.ShapesWorld(size=side)
samples = [world[i] for i in range(8)]
z0 = sdviz.encode(pipe, [Image.fromarray(s.image) for s in samples])  # (8, c, h, w)
gen = torch.Generator().manual_seed(SEED)
t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(samples),), generator=gen)
noise = torch.randn(z0.shape, generator=gen)  # the labels
z_t = sdviz.add_noise(z0, t, pipe.scheduler, noise=noise)  # the inputs
print("inputs", tuple(z_t.shape), "labels", tuple(noise.shape))
print(*[f"t={int(ti):4d}  “{s.caption}”" for ti, s in zip(t, samples, strict=True)], sep="\n")

# %% [markdown]
# One example, in detail: the clean latent z_0, the noise ε (the label), the noisy latent
# z_t (the input), what the loaded model predicts for it, and the error. The plot on the
# right measures the prediction error of this model across timesteps:

# %%
sdviz.figures.training_example(
    pipe, Image.fromarray(samples[0].image), t=500, prompt=samples[0].caption
)

# %% [markdown]
# ## A short live training run
#
# Now train a noise predictor from random weights, on exactly such examples: a fresh UNet
# of the loaded model's design, fed ShapesWorld latents and captions through the loaded
# VAE and text encoder. On a laptop CPU a real training run takes hours (the embedded
# model's took about two); a minute shows how the loss starts to fall.

# %%
from matplotlib.figure import Figure

import sdviz.training.live

live = sdviz.training.live.train_noise_predictor(
    pipe, steps=TRAIN_STEPS, n_images=TRAIN_IMAGES, seed=SEED
)
print(
    f"{sum(p.numel() for p in live.model.parameters()):,}-parameter UNet, {len(live.loss)} steps "
    f"in {live.seconds:.0f} s: loss {live.loss[0]:.3f} → {live.loss[-1]:.3f}"
)
fig = Figure(figsize=(7, 3), layout="constrained")
ax = fig.add_subplot(
    title="Live training: noise-prediction loss", xlabel="training step", ylabel="MSE(ε̂, ε)"
)
ax.plot(live.loss)
fig

# %% [markdown]
# A network that always answered "zero noise" would score about 1 (the noise has
# variance 1); the loss falls well below that within a few dozen steps, because the noisy
# latent itself says a lot about its noise. Getting from there to a model that paints
# shapes takes thousands of steps more.
#
# ## The trained model's predictions against the truth
#
# Put the freshly trained UNet into a copy of the pipeline and compare its prediction for
# one training example with the fully trained UNet of the loaded model. The right-hand
# plot measures the error at every noise level.

# %%
live_pipe = type(pipe)(**{**pipe.components, "unet": live.model}, requires_safety_checker=False)
example = Image.fromarray(samples[1].image)
sdviz.figures.training_example(live_pipe, example, t=500, prompt=samples[1].caption)

# %%
sdviz.figures.training_example(pipe, example, t=500, prompt=samples[1].caption)

# %% [markdown]
# ## Recap
#
# - A training example is a clean latent noised to a random timestep; the noise is the label.
# - The UNet learns to predict that noise from the noisy latent, the timestep and the
#   caption, with a mean-squared-error loss.
# - Predicting the noise is hardest at small t (a little noise hidden in a clean latent)
#   and gets easier as t grows: at large t the latent is almost all noise, so the noisy
#   input itself is a good guess. The error-over-t plots show it for the loaded model.
#
# ### Exercises
#
# 1. Run `sdviz.figures.training_example` at t = 50, 500 and 950. At which one does the
#    prediction look most like the true noise, and why?
# 2. Train twice as long: by how much does the final loss drop? Plot both curves.
# 3. The loaded model was trained with 10% of the captions replaced by an empty one. Why is
#    that needed for classifier-free guidance (lesson 7)?
