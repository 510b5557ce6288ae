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
# # Lesson 5 — Latent space and the autoencoder
#
# *"The Illustrated Stable Diffusion"* calls it the **speed boost**: diffusion does not run on
# the pixels of the image but on a **compressed** version of it. Stable Diffusion's
# autoencoder (a VAE, Kingma & Welling 2014; Rombach et al. 2022, Sec. 3) squeezes a
# 3×512×512 image into a 4×64×64 **latent** — 48 times fewer numbers — with a decoder that
# paints the image back. The UNet is trained and run entirely on latents; the decoder runs
# once at the end.
#
# In this lesson we encode images, look at the latent channels, decode them back, measure
# what is lost, and measure what the compression buys.

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
# ## Encoding: image → latents
#
# Pictures of ShapesWorld's test split (the kind the embedded model was trained on, in
# layouts it never saw), at the model's image size. One image would tell us little, so we
# take a few hundred: `sdviz.autoencoder.reconstruct_many` encodes each to its latent and
# decodes it back, and scores every reconstruction.

# %%
side = sdviz.autoencoder.native_size(pipe)  # the image side the model was built for
world = sdviz.shapes.ShapesWorld(size=side, split="test")
images, captions = world.batch(0, lesson.pick(full=256, smoke=16))  # (n, H, W, 3) uint8
recs = sdviz.autoencoder.reconstruct_many(pipe, images)  # encode, decode, score each
latents = recs.latents  # (n, c, h, w): what the UNet works on
c, h, w = latents.shape[1:]
print(f"{len(recs)} images of 3×{side}×{side} → latents {tuple(latents.shape)}")
print(
    f"{3 * side * side:,} numbers → {c * h * w:,}: {3 * side * side / (c * h * w):.0f}× fewer;"
    f" one latent cell per {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels"
)

# %% [markdown]
# The latent of one typical image (the one with the median reconstruction score), channel
# by channel, and the image decoded back from it:

# %%
typical = recs.ranked([0.5])[0]  # index of the median-PSNR image
print("caption:", captions[typical])
sdviz.figures.latent_space(recs[typical])

# %% [markdown]
# The latent channels still look like the picture: the autoencoder keeps *where* things
# are and stores *what* is there in a few numbers per cell. The latents are multiplied by
# the VAE's **scaling factor** so that, on the images the model was trained on, their
# overall spread is about one and their mean about zero — the scale of the noise of
# lesson 2. (Stable Diffusion's factor is 0.18215.) Measured on the test images:

# %%
print(f"scaling factor: {pipe.vae.config.scaling_factor} (latents = factor × encoder output)")
print(f"std of all {len(recs)} test images' latents: {latents.std():.2f} (the target is 1)")
print(f"their mean: {latents.mean():.3f} (the target is 0)")
sdviz.course.table(
    {
        "latent channel": range(c),
        "mean": latents.mean((0, 2, 3)),
        "std": latents.std((0, 2, 3)),
    },
    formats={"mean": ".2f", "std": ".2f"},
    notes=f"over the {len(recs)} test images and all {h}×{w} positions",
)

# %% [markdown]
# One factor for all channels fits only when the channels have about the same spread.
# sdviz-mini's VAE centres each channel and gives them one spread (folded into its
# `quant_conv`, so it is still SD's `AutoencoderKL`). Before that, one channel carried
# most of the variance, the noise drowned the weakest channels first, and those held
# blue and purple: the model drew those right only 12-25% of the time. SD 1.x and 2.x
# use the one factor alone; some later models record a shift (`shift_factor`, SD 3) or
# per-channel statistics (`latents_mean`, `latents_std`) in the VAE's config.

# %% [markdown]
# ## Decoding: latents → image, and what is lost
#
# The peak signal-to-noise ratio (PSNR, in dB; higher is better, 30 dB and up is hard to
# tell apart by eye) scores each reconstruction. It varies from image to image, so look
# at all of them: the histogram, then examples picked from the spread — the worst image,
# the 10th percentile, the median, the 90th percentile and the best — with where each
# reconstruction differs from its image.

# %%
sdviz.course.table(
    {
        "held-out images": [len(recs)],
        "mean PSNR (dB)": [recs.psnr.mean()],
        "std (dB)": [recs.psnr.std()],
        "worst (dB)": [recs.psnr.min()],
        "best (dB)": [recs.psnr.max()],
        "under 30 dB": [recs.below(30)],
        "share under 30 dB": [recs.below(30) / len(recs)],
    },
    formats={
        "mean PSNR (dB)": ".1f",
        "std (dB)": ".1f",
        "worst (dB)": ".1f",
        "best (dB)": ".1f",
        "share under 30 dB": ".0%",
    },
    notes="sdviz-mini's model card: 32.2 dB, the same mean over 256 other test images",
)

# %%
sdviz.figures.reconstruction_quality(recs)

# %% [markdown]
# The mean matches the model card, and a sizeable minority of images falls under 30 dB:
# a number on a card is an average, not a promise for every picture. The difference maps
# show where the decibels go: along the objects' **edges** (a 4×4 patch of pixels shares
# one latent cell, so sharp outlines come back slightly soft), around the image border,
# and in the **colour of the background** or of a large object: a pale tint can come back
# as another pale tint, a small error on every pixel that PSNR counts in full. Images
# with large objects and tinted backgrounds lose the most; even the worst is still
# recognisably the same picture.
#
# ## Out of its world: a photograph
#
# The Grace Hopper photograph that ships with matplotlib, at the same size:

# %%
from matplotlib.cbook import get_sample_data
from PIL import Image

photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
photo_rec = sdviz.autoencoder.reconstruct(pipe, photo)
print(f"PSNR {photo_rec.psnr:.1f} dB, against {recs.psnr.mean():.1f} dB for the test images")
print(
    f"its latents: std {photo_rec.latents.std():.2f}, channel means "
    f"{photo_rec.latents.mean((1, 2)).numpy().round(2)} (ShapesWorld's: about 1 and 0)"
)
sdviz.figures.latent_space(photo_rec)

# %% [markdown]
# An autoencoder only reconstructs well what resembles its training data. Stable
# Diffusion's VAE was trained on millions of photographs; the embedded model's only ever
# saw ShapesWorld: the photograph comes back as a smear of ShapesWorld-like colour, and
# even its latents fall outside the range the scaling factor was fitted to — the UNet
# would be asked to denoise something it never saw. With Stable Diffusion loaded, the
# same cell scores the photograph far higher.

# %% [markdown]
# ## What the compression buys
#
# The UNet is fully convolutional (plus attention), so it runs on any input size. Time one
# UNet call on a latent-sized input and on an input as large as the image — that is what a
# *pixel-space* diffusion model of the same design would have to process at every step.
# `sdviz.probes.time_unet` times one call per size (the median of 3, after a warm-up):

# %%
timing = sdviz.probes.time_unet(pipe, [(h, w), (side, side)], prompt=lesson.prompt)
per_image = f"s per image ({lesson.steps} steps, 2 calls each)"
sdviz.course.table(
    {
        "UNet input": [f"{c}×{h}×{w}: the latents", f"{c}×{side}×{side}: pixel-sized"],
        "ms per call": timing.seconds * 1000,
        per_image: timing.seconds * 2 * lesson.steps,
    },
    formats={"ms per call": ".1f", per_image: ".2f"},
    notes="2 calls a step: with and without the prompt (classifier-free guidance, lesson 7)",
)

# %%
print(f"the pixel-sized input takes {timing.seconds[1] / timing.seconds[0]:.0f}× as long")
print(f"and has {(side * side) / (h * w):.0f}× as many positions")

# %% [markdown]
# The arithmetic grows with the number of positions — the VAE factor squared times more in
# pixel space — and the cost of self-attention layers with the *square* of that number.
# On a model as small as sdviz-mini the measured time grows less than the positions: a
# call on a 16×16 latent is so short that fixed costs (launching each of its many small
# layers) make up much of it. On Stable Diffusion (64×64 latents, 512×512 pixels) the
# arithmetic dominates: pixel space would cost at least 64× as much (its positions), its
# attention layers more. That is why latent diffusion made high-resolution text-to-image
# generation affordable.

# %% [markdown]
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** An image with twice the side (`2 * side` pixels): what shape will its latent have?

# %%
import torch

print(tuple(sdviz.encode(pipe, torch.zeros(3, 2 * side, 2 * side)).shape))

# %% [markdown]
# **2.** The encoder's raw output is the latent *before* the scaling factor. Is its spread
# on the test images larger or smaller than one, and by about how much?

# %%
print(f"std of the unscaled latents: {(latents / pipe.vae.config.scaling_factor).std():.2f}")

# %% [markdown]
# **3.** Which test image reconstructs best, and which worst? Guess from what the
# difference maps showed (few or many objects? plain or tinted background?), then look:

# %%
best, worst = recs.ranked([1.0, 0.0])
print(f"best:  {recs.psnr[best]:.1f} dB  {captions[best]}")
print(f"worst: {recs.psnr[worst]:.1f} dB  {captions[worst]}")

# %% [markdown]
# ## Recap
#
# - The VAE encoder compresses an image into a small latent (SD: 3×512×512 → 4×64×64,
#   48× fewer numbers); the decoder paints it back.
# - Latents keep the layout of the image; a scaling factor brings their spread to about 1
#   and their mean to about 0 on the images the VAE was trained on — measured over a few
#   hundred test images, not one.
# - Reconstruction quality is a distribution: sdviz-mini averages about 32 dB on
#   ShapesWorld, with edges and background tints costing the most, and a sizeable
#   minority under 30 dB. On a photograph it fails (compare the PSNRs): the autoencoder
#   only learned to draw what it was shown.
# - Running the UNet on latents instead of pixels makes every denoising step many times
#   cheaper.
#
# ### Exercises
#
# 1. Encode an image, add 0.5 to one latent channel, and decode: what changes in the picture?
#    Which channel controls what?
# 2. Decode a *random* latent (`torch.randn(1, c, h, w)`). What does the decoder paint when
#    the latent is not the encoding of any image?
# 3. Mix the latents of two images (`0.5 * a + 0.5 * b`) and decode. Is the result a blend
#    of the pictures, or something else?
