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
# A few ShapesWorld images (the kind of pictures the embedded model was trained on) and
# the Grace Hopper photograph that ships with matplotlib, at the model's image size:

# %%
from matplotlib.cbook import get_sample_data
from PIL import Image

side = pipe.unet.config.sample_size * pipe.vae_scale_factor
world = sdviz.shapes.ShapesWorld(size=side, split="test")
shapes = sdviz.course.examples(world, 4)  # four test pictures, with their captions
photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
pictures = [*shapes.images, photo]
latents = sdviz.encode(pipe, pictures)
c, h, w = latents.shape[1:]
print(f"{len(pictures)} images of 3×{side}×{side} → latents {tuple(latents.shape)}")
print(
    f"{3 * side * side:,} numbers → {c * h * w:,}: {3 * side * side / (c * h * w):.0f}× fewer;"
    f" one latent cell per {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels"
)

# %% [markdown]
# The latent of one image, channel by channel, and the image decoded back from it
# (`sdviz.autoencoder.reconstruct` encodes and decodes; the figure draws):

# %%
sdviz.figures.latent_space(sdviz.autoencoder.reconstruct(pipe, pictures[0]))

# %% [markdown]
# The latent channels still look like the picture: the autoencoder keeps *where* things
# are and stores *what* is there in a few numbers per cell. The latents are multiplied by
# the VAE's **scaling factor** so that their overall spread is about one — the scale of the
# noise of lesson 2. (Stable Diffusion's factor is 0.18215.)

# %%
print("scaling factor:", pipe.vae.config.scaling_factor)
print(f"overall std of the {len(pictures)} images' latents: {latents.std():.2f}")
sdviz.course.table(
    {
        "latent channel": range(c),
        "mean": latents.mean((0, 2, 3)),
        "std": latents.std((0, 2, 3)),
    },
    formats={"mean": ".2f", "std": ".2f"},
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
# Decode the latents and compare with the originals. The peak signal-to-noise ratio
# (PSNR, in dB; higher is better, 30 dB and up is hard to tell apart by eye) measures the
# reconstruction:

# %%
rebuilt = sdviz.decode(pipe, latents)  # (5, 3, H, W) in [0, 1]
sdviz.course.table(
    {
        "image": [*shapes.captions, "the photograph"],
        "PSNR (dB)": sdviz.probes.reconstruction_psnr(pictures, rebuilt),
    },
    formats={"PSNR (dB)": ".1f"},
)

# %%
sdviz.figures.latent_space(sdviz.autoencoder.reconstruct(pipe, photo))

# %% [markdown]
# An autoencoder only reconstructs well what resembles its training data. Stable
# Diffusion's VAE was trained on millions of photographs; the embedded model's only ever
# saw ShapesWorld — compare the photograph's PSNR with the shapes'.

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
