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
# ## Encoding: image → latents
#
# A few ShapesWorld images (the kind of pictures the embedded model was trained on) and
# the Grace Hopper photograph that ships with matplotlib, at the model's image size:

# %%
import numpy as np
from matplotlib.cbook import get_sample_data
from PIL import Image

side = pipe.unet.config.sample_size * pipe.vae_scale_factor
world = sdviz.shapes.ShapesWorld(size=side, split="test")
pictures = [Image.fromarray(world[i].image) for i in range(4)]
pictures.append(Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side)))
latents = sdviz.encode(pipe, pictures)
c, h, w = latents.shape[1:]
print(f"{len(pictures)} images of 3×{side}×{side} → latents {tuple(latents.shape)}")
print(
    f"{3 * side * side:,} numbers → {c * h * w:,}: {3 * side * side / (c * h * w):.0f}× fewer;"
    f" one latent cell per {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels"
)

# %% [markdown]
# The latent of one image, channel by channel, and the image decoded back from it:

# %%
sdviz.figures.latent_space(pipe, pictures[0])

# %% [markdown]
# The latent channels still look like the picture: the autoencoder keeps *where* things
# are and stores *what* is there in a few numbers per cell. The latents are multiplied by
# the VAE's **scaling factor** so that their overall spread is about one — the scale of the
# noise of lesson 2. (Stable Diffusion's factor is 0.18215.)

# %%
print("scaling factor:", pipe.vae.config.scaling_factor)
print("per-channel mean:", [round(v, 2) for v in latents.mean((0, 2, 3)).tolist()])
print("per-channel std: ", [round(v, 2) for v in latents.std((0, 2, 3)).tolist()])
print(f"overall std: {latents.std():.2f}")

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
# Decode the latents and compare with the originals. The peak signal-to-noise ratio
# (PSNR, in dB; higher is better, 30 dB and up is hard to tell apart by eye) measures the
# reconstruction:

# %%
originals = torch.from_numpy(np.stack([np.asarray(p) for p in pictures])).permute(0, 3, 1, 2) / 255
rebuilt = sdviz.decode(pipe, latents)
psnr = -10 * torch.log10(((rebuilt - originals) ** 2).mean((1, 2, 3)))
print(
    *[
        f"{name:>12}: {p:5.1f} dB"
        for name, p in zip(
            ["shapes 1", "shapes 2", "shapes 3", "shapes 4", "photograph"],
            psnr.tolist(),
            strict=True,
        )
    ],
    sep="\n",
)

# %%
sdviz.figures.latent_space(pipe, pictures[-1])

# %% [markdown]
# An autoencoder only reconstructs well what resembles its training data. Stable
# Diffusion's VAE was trained on millions of photographs; the embedded model's only ever
# saw ShapesWorld — compare the photograph's PSNR with the shapes'.

# %% [markdown]
# ## What the compression buys
#
# The UNet is fully convolutional (plus attention), so it runs on any input size. Time one
# UNet call on a latent-sized input and on an input as large as the image — that is what a
# *pixel-space* diffusion model of the same design would have to process at every step:

# %%
import time

embeds = sdviz.embed(pipe, PROMPT)[None].to(pipe.device, pipe.dtype)
small = torch.randn(1, c, h, w).to(pipe.device, pipe.dtype)
large = torch.randn(1, c, side, side).to(pipe.device, pipe.dtype)
with torch.no_grad():
    pipe.unet(small, 500, encoder_hidden_states=embeds)  # warm-up
    t0 = time.perf_counter()
    pipe.unet(small, 500, encoder_hidden_states=embeds)
    t1 = time.perf_counter()
    pipe.unet(large, 500, encoder_hidden_states=embeds)
    t2 = time.perf_counter()
print(f"UNet on {h}×{w} latents:   {1000 * (t1 - t0):8.1f} ms")
print(
    f"UNet on {side}×{side} 'pixels': {1000 * (t2 - t1):8.1f} ms  ({(t2 - t1) / (t1 - t0):.0f}× slower)"
)
print(
    f"× {STEPS} steps × 2 (guidance): {2 * STEPS * (t1 - t0):.2f} s vs {2 * STEPS * (t2 - t1):.2f} s per image"
)

# %% [markdown]
# The work grows with the number of positions — the VAE factor squared times more in pixel
# space — and the cost of the self-attention layers with the *square* of that number. That
# is why latent diffusion made high-resolution text-to-image generation affordable.
#
# ## Recap
#
# - The VAE encoder compresses an image into a small latent (SD: 3×512×512 → 4×64×64,
#   48× fewer numbers); the decoder paints it back.
# - Latents keep the layout of the image; a scaling factor brings their spread to about 1.
# - Reconstruction is good on images like the training data and poor on others (compare
#   the PSNRs): the autoencoder only learned to draw what it was shown.
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
