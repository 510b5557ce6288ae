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
# Gaussian noise, and **add an amount of it** — a little, a lot, or so much that almost
# nothing of the picture is left. Every (noisy picture, noise amount) pair is a training
# example for a network whose job is to say *which noise was added*. This lesson is about
# that forward, noise-adding process; lesson 3 trains the noise predictor, lesson 4 runs it
# backwards.
#
# The amount of noise is indexed by a **timestep** t from 0 (almost clean) to T−1 (almost
# pure noise — how "almost", the numbers below say). DDPM (Ho et al. 2020) gives the noisy
# version in closed form, with no need to add noise step by step:
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,
# \qquad \varepsilon \sim \mathcal N(0, I)$$
#
# ᾱ_t ("alpha bar") is the fraction of the signal's variance left at step t: close to 1 at
# t = 0, close to 0 at the end. The list of ᾱ_t values is the **noise schedule**.

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

side = sdviz.autoencoder.native_size(pipe)  # the model's image size: its latent side × VAE factor
photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
x0 = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
print("image tensor", tuple(x0.shape), f"values in [{x0.min():.0f}, {x0.max():.0f}]")
sdviz.figures.filmstrip(x0[None] / 2 + 0.5, [f"the photograph at {side}×{side} pixels"])

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
# Three things to notice in the printed numbers. The signal fades smoothly while the noise
# grows, and the overall spread of the values (the standard deviation) stays of order one:
# the process is *variance preserving* — the network always sees inputs of a similar scale.
# At t = 0 the image is only *almost* clean: ᾱ₀ is a little below 1, so a faint noise
# (weight √(1−ᾱ₀), the first row) is already there. And at the last timestep the
# picture's weight √ᾱ is small but **not zero**: the schedule never reaches pure noise. We
# come back to this under "The schedule" below.
#
# The formula is all there is to it — check it by hand with a fixed noise tensor:

# %%
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
by_hand = abar[3].sqrt() * x0 + (1 - abar[3]).sqrt() * noise
by_sdviz = sdviz.add_noise(x0, timesteps[3], pipe.scheduler, noise=noise)
print("by hand vs sdviz.add_noise, largest difference:", float((by_hand - by_sdviz).abs().max()))

# %% [markdown]
# Here is the photo at those noise levels, noise added to its pixels.
# `sdviz.probes.noised_images` does the noising; the figure draws what it returns
# (`show=["pixels"]`: only the pixel-space row — why, just below).

# %%
noised_photo = sdviz.probes.noised_images(pipe, photo, timesteps, seed=lesson.seed)
sdviz.figures.forward_noising(noised_photo, show=["pixels"])

# %% [markdown]
# ## Noise in latent space
#
# Stable Diffusion adds its noise not to pixels but to the *latents* of its autoencoder (the
# VAE, lesson 5): a few numbers per block of pixels (Stable Diffusion: 4 per 8×8 block;
# sdviz-mini: 4 per 4×4, `pipe.vae_scale_factor` says). To see noisy latents we must turn them
# back into an image, and the VAE must be able to rebuild the picture in the first place.
# The embedded model's VAE was trained only on ShapesWorld (below), never on a photograph.
# PSNR measures how close a rebuilt image is to the original, in decibels: above ~30 dB
# the two are hard to tell apart, below ~20 dB you see the difference at once.

# %%
world = sdviz.shapes.ShapesWorld(size=side)
samples = sdviz.course.examples(world, 16)  # the first 16 pictures, with their captions
photo_vae = sdviz.autoencoder.reconstruct(pipe, photo)
shape_vae = sdviz.autoencoder.reconstruct(pipe, samples.images[0])
sdviz.course.table(
    {
        "image": ["the photograph", f"ShapesWorld: {samples.captions[0]!r}"],
        "PSNR of decode(encode(image)), dB": [photo_vae.psnr, shape_vae.psnr],
    },
    formats={"PSNR of decode(encode(image)), dB": ".1f"},
    notes="higher is closer: 30+ dB hard to tell apart, under 20 dB visibly different",
)

# %%
sdviz.figures.filmstrip(
    [photo_vae.image, photo_vae.reconstruction],
    ["the photograph", f"decode(encode(photo)): {photo_vae.psnr:.1f} dB"],
)

# %% [markdown]
# With sdviz-mini the photo comes back as a smear: its latents are no picture of Grace
# Hopper at all, and noising them would show you noise added to a smear. (Stable Diffusion's
# own VAE, trained on photographs, rebuilds it well; lesson 5 is about the VAE.) So
# for latent space we use the pictures this model *does* know.
#
# ## The training images: ShapesWorld
#
# The embedded model never saw a photograph. It was trained on **ShapesWorld**: procedural
# pictures of coloured shapes, each with a caption, generated on the fly from a seed (so
# the data set is unlimited and needs no download).

# %%
print(samples)
samples.strip()

# %% [markdown]
# A training example is one of these pictures, noised to a random timestep. Here is the
# first one at our timesteps, three ways:
#
# - **pixel space**: noise added to the pixels, as for the photo;
# - **latent space, linear preview**: noise added to the latents (one noise draw for all t),
#   and each latent drawn as one pixel by a *linear* map from the 4 latent channels to RGB,
#   fitted by least squares on this image (`Run.preview` does the same for a generation);
# - **latent space, VAE-decoded**: the same noisy latents through the VAE's decoder.

# %%
noised_shapes = sdviz.probes.noised_images(pipe, samples.images[0], timesteps, seed=lesson.seed)
sdviz.figures.forward_noising(noised_shapes)

# %% [markdown]
# The first two rows tell the article's story: the picture fades into noise that looks like
# noise. With sdviz-mini the third row does not: as t grows, the decoder draws pale
# background with purple and green **shards**, and halfway (t = 500) the red circle comes
# out green. Nothing in
# x_t is green or shard-like — that is the decoder's doing. Two measurements show why.
#
# ## Why the decoder draws noise as shards
#
# **1. A decoder can only draw the world it was trained on.** It learned one thing: turn
# the latents of ShapesWorld images back into ShapesWorld images. Every pixel it was ever
# asked to produce was a pale background or one of six flat colours with a crisp edge.
# Give it a latent it never saw — pure Gaussian noise — and it still answers in that
# vocabulary. Measure it: decode 16 pure-noise latents (what generation starts from) and
# compare their colours with 16 ShapesWorld images and with pixel noise.

# %%
g = torch.Generator().manual_seed(lesson.seed)
pure_noise = torch.randn((len(samples), *shape_vae.latents.shape), generator=g)  # x_T
decoded_noise = sdviz.decode(pipe, pure_noise)  # (16, 3, H, W)
pixel_noise = ((torch.randn(len(samples), 3, side, side, generator=g) + 1) / 2).clamp(0, 1)
colours = sdviz.probes.colour_statistics(
    {
        "ShapesWorld": samples.images,
        "VAE decode of noise": decoded_noise,
        f"linear preview of x_{T - 1}": noised_shapes.preview[-1:],
        "pixel noise": pixel_noise,
    },
    sdviz.shapes.COLOURS,
)
sdviz.course.table(
    colours,
    formats=sdviz.probes.images.COLOUR_FORMATS,
    notes=[*sdviz.probes.images.colour_notes(), "the linear preview has one pixel per latent"],
)

# %%
sdviz.figures.filmstrip(
    decoded_noise[:6],
    list(map("noise latent {}".format, range(6))),
    "The VAE's decode of pure-noise latents: what the pipeline would show at the start",
)

# %% [markdown]
# Decoded noise has ShapesWorld's statistics, not noise's: mostly light background, almost
# all of it in ShapesWorld's colours, with smooth blobs (a small neighbour difference)
# instead of independent pixels — and its coloured pixels are mostly one colour of the
# world's palette (the "nearest colour" column). Pixel noise is the opposite on every
# column. The linear preview cannot invent shapes: it draws each latent's noise as a
# coloured square.
#
# **2. Colour lives in the latent's length, and noising shrinks it.** x_t holds √ᾱ_t·x_0:
# the picture's latent *scaled down*. A linear preview draws a scaled-down red as a paler
# red. The decoder is not linear: decode the clean latent times √ᾱ_t, with no noise at
# all, and watch the red circle's colour.

# %%
z0 = shape_vae.latents[None]  # (1, c, h, w): the clean latent of the first picture
signal_only = sdviz.decode(pipe, abar.sqrt()[:, None, None, None] * z0)  # √ᾱ_t·z0 per t
sdviz.figures.filmstrip(
    signal_only,
    list(map("t={}: z0 × {:.2f}".format, timesteps, abar.sqrt().tolist())),
    "decode(√ᾱ_t · z0): the signal part of x_t alone, no noise",
)

# %% [markdown]
# Shrinking the latent walks the circle from red through orange and green towards purple —
# the colour small latents decode to, which is why pure noise comes out in purple shards.
# In the middle of a generation (lesson 4) x_t holds the picture at a fraction of its
# length, so the VAE draws the red circle green until the last steps restore its length.
# The UNet never sees these pictures: it works on the latents, and lesson 4 shows the
# linear preview next to the decode so you can see what it really has.
#
# **What Stable Diffusion's decoder does instead.** SD's VAE (Rombach et al. 2022) was
# trained on photographs: its outputs had to cover every colour and every fine texture. Its
# decode of random latents is colourful, fine-grained texture that reads as noise, which is
# how the fast.ai *Stable Diffusion Deep Dive* shows SD's early steps. (sdviz has not
# measured that: SD's weights were not available where this course was written. Set `MODEL`
# to SD 1.5 and run the cells above to measure it yourself.)
#
# **Could sdviz-mini's decoder do the same?** Not by retraining the whole VAE: the UNet was
# trained on *this* encoder's latents and would have to be retrained too. The route would
# be a decoder-only fine-tune — encoder frozen, decoder shown latents it never saw (noisy
# latents paired with noisy pixels, or pictures from outside ShapesWorld) — measured by
# two numbers: the table above for decoded noise, and the reconstruction PSNR, which must
# not drop. sdviz does not ship that; the linear preview shows the noise honestly instead.

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
# Where does generation start? With Stable Diffusion's settings (`timestep_spacing`
# "leading", `steps_offset` 1) the sampler's `lesson.steps` timesteps are spaced T / steps
# apart from the bottom up, so the first one is below T−1. And even T−1 is not pure noise:

# %%
sampler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # a copy: pipe untouched
sampler.set_timesteps(lesson.steps)
ends = [0, int(sampler.timesteps[0]), T - 1]
abar_ends = sdviz.diffusion.alpha_bar(pipe.scheduler, ends)
sdviz.course.table(
    {
        "t": ends,
        "which": [
            "first training timestep",
            f"first of the {lesson.steps} sampling steps",
            "last training timestep",
        ],
        "ᾱ_t": abar_ends,
        "picture's weight √ᾱ_t": abar_ends.sqrt(),
        "SNR = ᾱ_t/(1−ᾱ_t)": abar_ends / (1 - abar_ends),
    },
    formats={"ᾱ_t": ".4f", "picture's weight √ᾱ_t": ".3f", "SNR = ᾱ_t/(1−ᾱ_t)": ".4g"},
    notes="SNR: the signal's variance over the noise's; 0 would be pure noise",
)

# %% [markdown]
# The SNR at the last timestep is small but not zero: the network was never trained on
# pure noise, yet generation starts from pure noise. Lin et al. (2024, *Common Diffusion
# Noise Schedules and Sample Steps are Flawed*) showed what this costs Stable Diffusion —
# a leftover of the picture's mean brightness at the last timestep teaches the model that
# every image has medium brightness, so it struggles to make very dark or very bright
# pictures — and fixed it: rescale the schedule to zero terminal SNR, predict v instead
# of ε, and start sampling at the last timestep ("trailing" spacing). diffusers has all
# three (`rescale_betas_zero_snr=True`, `prediction_type="v_prediction"`,
# `timestep_spacing="trailing"`); SD 1.5 and sdviz-mini use none of them.

# %% [markdown]
# ## Check yourself
#
# Predict, then run the cell below to check:
#
# 1. `noised_shapes.pixels`, `.preview` and `.decoded` each hold one image per timestep.
#    What are their shapes? (Hint: which of them is drawn one pixel per latent?)
# 2. How much of the picture's amplitude is left at t = T−1: √ᾱ_{T−1} ≈ 0, 0.07 or 0.5?
# 3. At t = 0 is the image exactly clean? What is the noise weight √(1−ᾱ₀)?

# %%
print(
    "1. pixels",
    tuple(noised_shapes.pixels.shape),
    "| preview",
    tuple(noised_shapes.preview.shape),
    "| decoded",
    tuple(noised_shapes.decoded.shape),
    " (timesteps, RGB, height, width)",
)
print(f"2. picture's weight at t={T - 1}: √ᾱ = {float(abar[-1].sqrt()):.3f}")
print(
    f"3. noise weight at t=0: √(1−ᾱ₀) = {float((1 - abar[0]).sqrt()):.3f}  (ᾱ₀ = {float(abar[0]):.4f})"
)

# %% [markdown]
# ## Recap
#
# - Forward diffusion mixes an image with Gaussian noise:
#   x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. One formula jumps to any timestep directly.
# - ᾱ_t, the noise schedule, goes from almost 1 (ᾱ₀ ≈ 0.999: almost clean) to almost 0
#   (SD's ᾱ at T−1 ≈ 0.005: never pure noise); the mix keeps the overall variance near one.
# - Stable Diffusion applies this to the autoencoder's latents, not to pixels. To look at
#   noisy latents, a linear preview shows noise as noise; the VAE's decoder draws them in
#   the vocabulary of its training images — ShapesWorld's shards for sdviz-mini, fine
#   colourful texture for SD.
# - Each (noisy image, timestep) → noise triple is a training example for the noise
#   predictor: that is lesson 3.
#
# ### Exercises
#
# 1. At which timestep is ᾱ_t closest to 0.5, where signal and noise have equal variance?
#    Find it with `sdviz.diffusion.alpha_bar(pipe.scheduler, range(T))`.
# 2. Noise a ShapesWorld image and the photo to the same t in pixel space. Which one stays
#    recognisable longer, and why might flat-coloured shapes differ from a photograph?
# 3. Compare Stable Diffusion's schedule with the "linear" one of the original DDPM paper:
#    `sdviz.figures.noise_schedule(pipe, diffusers.DDPMScheduler(beta_schedule="linear"))`
#    (after `import diffusers`). Which one keeps more signal at t = T/2, and what is its
#    ᾱ at T−1?
