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
# ## Making training examples
#
# A batch of ShapesWorld images with their captions, encoded to latents, each noised to a
# random timestep with its own noise:

# %%
import torch

side = pipe.unet.config.sample_size * pipe.vae_scale_factor
world = sdviz.shapes.ShapesWorld(size=side)
samples = sdviz.course.examples(world, 8)  # 8 pictures with their captions
z0 = sdviz.encode(pipe, samples.images)  # (8, c, h, w): the clean latents
gen = torch.Generator().manual_seed(lesson.seed)
t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(samples),), generator=gen)
noise = torch.randn(z0.shape, generator=gen)  # the labels
z_t = sdviz.add_noise(z0, t, pipe.scheduler, noise=noise)  # the inputs
print("inputs z_t", tuple(z_t.shape), "labels ε", tuple(noise.shape), "(examples, c, h, w)")
sdviz.course.table({"t (random amount of noise)": t, "caption": samples.captions})

# %% [markdown]
# One example, in detail: the clean latent z_0, the noise ε (the label), the noisy latent
# z_t (the input), what the loaded model predicts for it, and the error. The plot on the
# right measures the prediction error of this model across timesteps.
# `sdviz.probes.noise_predictions` runs the UNet on the example; the figure draws it:

# %%
first = sdviz.probes.noise_predictions(pipe, samples.images[0], 500, prompt=samples.captions[0])
sdviz.figures.training_example(first)

# %% [markdown]
# ## A short live training run
#
# Now train a noise predictor from random weights, on exactly such examples: a fresh UNet
# of the loaded model's design, fed ShapesWorld latents and captions through the loaded
# VAE and text encoder. On a laptop CPU a real training run takes hours (the embedded
# model's took about two); a minute shows how the loss starts to fall.

# %%
import sdviz.training.live

live = sdviz.training.live.train_noise_predictor(
    pipe,
    steps=lesson.pick(full=60, smoke=5),  # training steps (5 in the tests' smoke mode)
    n_images=lesson.pick(full=256, smoke=32),  # distinct ShapesWorld pictures it sees
    seed=lesson.seed,
)
print(
    f"a {sdviz.course.count_parameters(live.model):,}-parameter UNet trained {len(live.loss)} "
    f"steps in {live.seconds:.1f} s: loss {live.loss[0]:.3f} at the first step, "
    f"{live.loss[-1]:.3f} at the last"
)
sdviz.figures.training_curves(
    live.loss,
    loss_label="noise-prediction loss MSE(ε̂, ε)",
    references={"a UNet that always answers ε̂ = 0": 1.0},
    title="Live training of a UNet from random weights",
)

# %% [markdown]
# A network that always answered "zero noise" would score about 1 (the noise has
# variance 1: the dashed line); the loss falls well below that within a few dozen steps,
# because the noisy latent itself says a lot about its noise. Getting from there to a
# model that paints shapes takes thousands of steps more.
#
# ## The trained model's predictions against the truth
#
# Put the freshly trained UNet into a copy of the pipeline and compare its prediction for
# one training example with the fully trained UNet of the loaded model. The right-hand
# plot measures the error at every noise level.

# %%
live_pipe = sdviz.course.pipeline_with(pipe, unet=live.model)  # the same parts, the new UNet
example, caption = samples.images[1], samples.captions[1]
sdviz.figures.training_example(
    sdviz.probes.noise_predictions(live_pipe, example, 500, prompt=caption)
)

# %% [markdown]
# And the loaded model's fully trained UNet on the same example:

# %%
sdviz.figures.training_example(sdviz.probes.noise_predictions(pipe, example, 500, prompt=caption))

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
# 2. Train twice as long: by how much does the final loss drop? Plot both curves in one
#    panel: `sdviz.figures.training_curves({"60 steps": live.loss, "120 steps": ...})`.
# 3. The loaded model was trained with 10% of the captions replaced by an empty one. Why is
#    that needed for classifier-free guidance (lesson 7)?
