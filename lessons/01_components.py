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
# resolutions and grows it back. Two things come in from outside besides the latent: the
# timestep t (how noisy the input is), turned into a vector that every ResNet block adds,
# and the text's token vectors, read by the cross-attention layers in its blocks. Drawn
# from the loaded model's own modules:

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
# Here is the generation as a film strip, at a few of its steps (counted from 0). The
# first two rows show the noisy latents x_t: mapped straight to colours (a linear
# preview of the four latent channels: noise looks like noise), and painted by the VAE
# decoder — which, trained only on ShapesWorld, paints even pure noise as ShapesWorld-like
# shards. The bottom row is the UNet's guess of the finished picture at
# that step (x̂0, lesson 4). `sdviz.probes.step_images` runs the VAE decoder; the figure
# draws.

# %%
images = sdviz.probes.step_images(run, pipe)
sdviz.figures.denoising_filmstrip(run, images=images)

# %% [markdown]
# ## How big is the real one? sdviz-mini next to Stable Diffusion 1.5
#
# sdviz-mini has the parts and the classes of Stable Diffusion, not its size. sdviz can
# build SD 1.5's published architecture on PyTorch's *meta* device — every layer with its
# shape, no memory, no weights, nothing downloaded — so the two can be compared part by
# part:

# %%
import torch

from sdviz.builder import count_parameters

sd15 = sdviz.probes.sd_skeleton("1.5")  # its modules on the meta device: no memory
sdviz.course.components_table(pipe, sd15, labels=["parameters here", "in SD 1.5"])

# %%
print(
    f"SD 1.5's UNet has {count_parameters(sd15.unet) / count_parameters(pipe.unet):,.0f}× "
    "the parameters of the loaded model's UNet,"
)
print(
    f"its text encoder {count_parameters(sd15.text_encoder) / count_parameters(pipe.text_encoder):,.0f}×, "
    f"its VAE {count_parameters(sd15.vae) / count_parameters(pipe.vae):,.0f}×."
)
mini_total = (
    count_parameters(pipe.unet) + count_parameters(pipe.text_encoder) + count_parameters(pipe.vae)
)
sd15_total = (
    count_parameters(sd15.unet) + count_parameters(sd15.text_encoder) + count_parameters(sd15.vae)
)
print(f"the three networks together: {mini_total:,} parameters here,")
print(f"{sd15_total:,} in SD 1.5 (about one billion, as the article says)")

# %% [markdown]
# ### 63M or 123M? The article's text encoder, counted
#
# The article gives ClipText 63M parameters; the table above gives SD 1.5's text encoder
# 123M. Both are right, about different models. 63M is the size of the *base* text
# Transformer of the CLIP paper (Radford et al. 2021, "Learning Transferable Visual Models
# From Natural Language Supervision", §2.4: "a 63M-parameter 12-layer 512-wide model with 8
# attention heads"). Stable Diffusion 1.x uses the text tower of CLIP **ViT-L/14**, also 12
# layers but 768 wide (12 heads) — and a layer's weights grow with the square of its width.
# Counted, both built on the meta device from `transformers.CLIPTextModel`:

# %%
import transformers

with torch.device("meta"):
    clip_paper_base = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12
        )
    )
sdviz.course.table(
    {
        "text Transformer": ["CLIP paper's base", "CLIP ViT-L/14 (SD 1.x)"],
        "layers": [
            clip_paper_base.config.num_hidden_layers,
            sd15.text_encoder.config.num_hidden_layers,
        ],
        "width": [clip_paper_base.config.hidden_size, sd15.text_encoder.config.hidden_size],
        "heads": [
            clip_paper_base.config.num_attention_heads,
            sd15.text_encoder.config.num_attention_heads,
        ],
        "parameters": [
            count_parameters(clip_paper_base),
            count_parameters(sd15.text_encoder),
        ],
    },
    formats={"parameters": ","},
    notes="both: a 49,408-token vocabulary, 77 positions; width: numbers per token vector",
)

# %% [markdown]
# ### Data and compute
#
# The gap in training is larger still. Stable Diffusion 1.x learned from **LAION-2B-en**,
# 2.32 billion English image–caption pairs collected from the web (Schuhmann et al. 2022,
# "LAION-5B"): SD v1-1 trained 237,000 steps at 256×256 on it, then 194,000 at 512×512
# on LAION's high-resolution images (170M of at least 1024 px); v1-2 to v1-5 went on at
# 512×512 on subsets of LAION-2B-en filtered for aesthetics ("laion-improved-aesthetics",
# "laion-aesthetics v2 5+"), v1-5 for 595,000 steps. The model card counts about
# **150,000 A100 GPU-hours** for the v1 models (Stable Diffusion v1 model card,
# "Environmental Impact"). sdviz-mini's numbers come from its own folder:

# %%
import json

from sdviz.training.config import FULL

record = json.loads((sdviz.pipeline.EMBEDDED_MODEL / "training_record.json").read_text())
minutes = record["total_seconds"] / 60
laion_2b_en, sd_gpu_hours = 2_320_000_000, 150_000  # LAION-5B paper; SD v1 model card
print(f"sdviz-mini: {FULL.images:,} ShapesWorld images of 64×64 pixels, made by code")
print(f"            trained in {minutes:.1f} minutes on a 2-core CPU, all stages, no GPU")
print(f"SD 1.x:     {laion_2b_en / FULL.images:,.0f}× more training images, at up to 512×512")
print(
    f"            {sd_gpu_hours / (minutes / 60):,.0f}× more hours, each on a data-centre GPU"
    " instead of two CPU cores"
)

# %% [markdown]
# ## The training data sets what it draws
#
# Everything sdviz-mini ever saw looks like this — ShapesWorld: one to three coloured
# shapes on a plain, light background, each picture with a caption written by code:

# %%
samples = sdviz.course.examples(sdviz.shapes.ShapesWorld(), 6)
print(samples)  # index: caption
sdviz.figures.filmstrip(samples.images, ["0", "1", "2", "3", "4", "5"])

# %% [markdown]
# So that is all it can draw. Ask for something from outside its world, and sdviz says so
# before it generates (the warning under the cell): the words it never saw are spelled in
# letters the model never learned. The image is still drawn — a ShapesWorld picture,
# steered by the one word it knows, "a". Put it next to the prompt "a" alone, and the
# letters of "photo" and "cat" turn out to have changed little. (Stable Diffusion has seen
# millions of captioned cat photos; with `MODEL` set to it there is no notice, and a cat.)

# %%
cat = sdviz.generate(
    pipe, "a photo of a cat", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
just_a = sdviz.generate(
    pipe, "a", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("the cat prompt's tokens:", cat.words)
print(
    "mean |difference| of the cat image to the image of 'a':",
    f"{float((cat['vae.image'] - just_a['vae.image']).abs().mean()):.3f};",
    f"to the lesson's prompt's: {float((cat['vae.image'] - run['vae.image']).abs().mean()):.3f}",
)
print("(pixel values lie in [0, 1]; 0 is the same picture)")
sdviz.figures.filmstrip(
    torch.stack([run["vae.image"], cat["vae.image"], just_a["vae.image"]]),
    ["the lesson's prompt", "a photo of a cat", "a"],
)

# %% [markdown]
# ## Where Stable Diffusion comes from
#
# The article explains a model released in August 2022, at the end of a fast two years:
#
# - **DDPM** (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models") showed
#   that a network trained only to remove Gaussian noise, step by step, generates
#   images of high quality — working on pixels, in 1,000 steps, hence slowly.
# - In spring 2022 two text-to-image systems built on it appeared: **DALL·E 2** (Ramesh et
#   al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents"), which
#   turns a CLIP text embedding into a CLIP image embedding and diffuses pixels from it,
#   and **Imagen** (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models
#   with Deep Language Understanding"), which conditions a pixel-space cascade on a frozen
#   T5-XXL language model. Imagen's key finding: making the **text encoder** bigger
#   improved image fidelity and image–text alignment much more than making the image
#   UNet bigger.
# - **Latent diffusion** (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
#   Diffusion Models") moved the diffusion into a VAE's small latent space and let the
#   UNet read the text through cross-attention. Trained on LAION and released openly as
#   Stable Diffusion, with a frozen CLIP ViT-L/14 text encoder (its model card: "as
#   suggested in the Imagen paper"), it is the system of these lessons.

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
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** How many numbers does the text encoder hand the UNet for one prompt — here, and in
# Stable Diffusion 1.5 (the article: 77 token vectors of 768)?

# %%
print("here:  ", tuple(run["text_encoder.prompt_embeds"].shape), "(tokens, numbers per token)")
print("SD 1.5:", (sd15.tokenizer.model_max_length, sd15.text_encoder.config.hidden_size))

# %% [markdown]
# **2.** Which network holds the largest share of the parameters, here and in SD 1.5 —
# and is its share larger or smaller in the miniature?

# %%
print(f"UNet's share of the parameters here:   {count_parameters(pipe.unet) / mini_total:.0%}")
print(f"UNet's share of the parameters, SD 1.5: {count_parameters(sd15.unet) / sd15_total:.0%}")

# %% [markdown]
# **3.** "a photo of a dog" instead of "a photo of a cat": a very different picture, or
# nearly the same one? (For comparison, the cat image differed from the lesson's prompt's
# by the amount printed above.)

# %%
dog = sdviz.generate(
    pipe, "a photo of a dog", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print(
    "mean |difference| dog vs cat:",
    f"{float((dog['vae.image'] - cat['vae.image']).abs().mean()):.3f}",
)

# %% [markdown]
# ## Recap
#
# - Stable Diffusion is three networks around a scheduler: the **CLIP text encoder**
#   (prompt → token vectors), the **UNet** with its **scheduler** (noise → clean latents, one
#   step at a time, steered by the text), and the **VAE decoder** (latents → pixels).
# - The loop runs in the small latent space; pixels appear only at the end.
# - The UNet holds most of the parameters and runs at every step: it is where the time goes.
# - sdviz-mini is the same system, each network 100–600 times smaller, trained on a world
#   of shapes in under three hours of a CPU; SD 1.5 has about a billion parameters, learned from billions of web images
#   in ~150,000 GPU-hours. The article's 63M is the CLIP paper's base text encoder; SD 1.x's
#   is CLIP ViT-L/14's, 123M.
# - What a model can draw is what its training data showed it.
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
