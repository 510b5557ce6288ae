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
# Between the examples and a live training run, this lesson opens the noise predictor:
# how its blocks are laid out, how it is told t, and where the text comes in.

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
# ## Inside the noise predictor
#
# The article draws the noise predictor as one box with three inputs: the noisy latent,
# the timestep, and the text (through attention), and one output, the predicted noise.
# Inside the box is a UNet. Here it is, drawn from the loaded model's own modules:
# `sdviz.probes.unet_structure` walks `pipe.unet`'s module tree and config (nothing is
# run), and the figure draws what it found.

# %%
structure = sdviz.probes.unet_structure(pipe)  # blocks, layers, skips: read from pipe.unet
sdviz.figures.unet_diagram(structure)

# %% [markdown]
# How to read it:
#
# - **The U.** The noisy latent enters at the top left (`conv_in` widens its channels),
#   goes *down*: each down block works at one resolution and its downsampler (↓) halves
#   it; the mid block works at the coarsest one; the up blocks climb back (↑) to the
#   latent's own size, where `conv_out` turns the features into the predicted noise, the
#   same shape as the input. Coarse levels see the whole picture (where things are),
#   fine levels the detail (edges).
# - **Skips** (dashed green). Every tensor saved on the way down is concatenated, at the
#   same resolution, to the input of one ResNet on the way up, so fine detail need not
#   squeeze through the bottleneck (Ronneberger et al. 2015).
# - **The chips** inside each block are its layers in the order they run: ResNet blocks
#   (R, convolutions) alternate with attention layers: self-attention (S) and
#   cross-attention (C).
# - **t** (purple) and **the text** (orange) enter from outside, as the article draws
#   them: t into every ResNet, the text into every cross-attention layer.
#
# The same, as a table (one row per block; "skips in": how many saved tensors it
# concatenates):

# %%
sdviz.course.table(structure.table(), title="The loaded UNet, block by block")

# %%
print(f"{structure.count('resnet')} ResNet blocks: each adds the timestep's embedding")
print(
    f"{structure.count('cross-attention')} cross-attention layers: each reads the "
    f"{structure.text_tokens} token vectors of the prompt, {structure.text_dim} numbers each"
)
print(f"{structure.count('self-attention')} self-attention layers: image positions read each other")
print(f"{len(structure.skips)} skip tensors cross the U")

# %% [markdown]
# ### How the network knows t
#
# One set of weights denoises at every noise level, so the UNet must be told how noisy its
# input is. It gets t as a vector, in three steps (DDPM's design, Ho et al. 2020):
#
# 1. `time_proj` writes t as sines and cosines at geometrically spaced frequencies, the
#    positional encoding of the Transformer (Vaswani et al. 2017): fast ones tell t=0
#    from t=1, slow ones tell early from late;
# 2. `time_embedding`, a small MLP (linear, SiLU, linear), turns those features into one
#    vector; its weights were trained with the rest of the UNet;
# 3. every ResNet block projects that vector with its own linear layer (`time_emb_proj`)
#    to one number per channel and adds it to its feature maps, at every pixel.
#
# `sdviz.probes.timestep_embeddings` runs steps 1 and 2 of the loaded UNet on every
# training timestep:

# %%
emb = sdviz.probes.timestep_embeddings(pipe)  # every t through the loaded time_proj and MLP
print("sinusoidal features", emb.features.shape, "(timesteps, features)")
print("MLP embeddings     ", emb.embeddings.shape, "(timesteps, embedding width)")
sdviz.figures.timestep_embedding(emb)

# %% [markdown]
# Panel 1 shows the features of a few t, one row each: the fast columns (left in each
# half) change from t=0 to t=1 to t=2, the slow ones (right) only over hundreds of steps.
# Panel 2: how alike the raw features of two timesteps are depends only on how far apart
# they are (the same stripes along every diagonal). Panels 3 and 4: what the trained MLP
# makes of them. Cosine similarity: 1 = the same direction, 0 = unrelated, −1 = opposite.
# The table compares every t with t=0:

# %%
last = pipe.scheduler.config.num_train_timesteps - 1  # the noisiest training timestep
ts = [1, 10, 100, 250, 500, 750, 850, last]
sdviz.course.table(
    {
        "t": ts,
        "ᾱ_t (signal's share of x_t's variance)": pipe.scheduler.alphas_cumprod[ts].numpy(),
        "cos(features of t, of t=0)": emb.cosines(0, ts, "features"),
        "cos(embedding of t, of t=0)": emb.cosines(0, ts),
    },
    title="How alike t and t=0 look to the network, before and after its MLP",
)

# %% [markdown]
# The raw features only say how far apart two timesteps are. The MLP learned more: for
# sdviz-mini its embedding stays nearly the same over the first few hundred steps and
# turns around among the noisiest timesteps, where its cosine to t=0 goes negative
# (the last rows above), where ᾱ_t says only a few percent of x_t is still signal. The
# network spends its "sense of time" where the task changes most: between removing some
# noise from a picture and inventing a picture from almost pure noise.
#
# Step 3 in one of the loaded model's ResNets: a linear map from the embedding's width
# to that block's channels.

# %%
first_resnet = pipe.unet.get_submodule(structure.layers("resnet")[0])
print(structure.layers("resnet")[0], "→ time_emb_proj:", first_resnet.time_emb_proj)

# %% [markdown]
# ### Where the text comes in: self- and cross-attention
#
# An attention layer lets every position of the image gather information from a set of
# vectors: softmax(Q Kᵀ / √d) V. The **queries** Q always come from the image: one per
# latent position (h·w of them). What the keys K and values V come from makes the
# difference:
#
# - **self-attention** (`attn1`): from the image positions too; each position mixes in
#   what the other positions hold (the whole layout, "left of");
# - **cross-attention** (`attn2`): from the text encoder's token vectors; each position
#   mixes in what the words say. The softmax weights, one row per position over the
#   tokens, are the attention maps lesson 7 draws.
#
# The loaded model's attention layers, read from their modules (`to_k`'s input width is
# what the keys are made from: the text's width in cross-attention, the block's channels
# in self-attention):

# %%
sdviz.course.table(
    structure.attention_table(),
    title="Every attention layer: queries from the image, keys and values from ...",
)

# %% [markdown]
# In sdviz-mini the blocks at the latent's full resolution were built with
# `only_cross_attention`: there `attn1` reads the text too, so they have no self-attention
# (the figure's "C C"). A self-attention matrix there would be the largest of all (one row
# and one column per latent position), and leaving it out made training faster; the
# coarser levels keep their self-attention. Stable Diffusion 1.5 has self- and
# cross-attention in every transformer block:
#
# ### The same picture for Stable Diffusion 1.5
#
# `sdviz.probes.sd_skeleton("1.5")` builds SD 1.5's published architecture on PyTorch's
# meta device: every module and shape, no weights, no memory, about a second.

# %%
sd15 = sdviz.probes.sd_skeleton("1.5")  # SD 1.5's modules, no weights
sd15_structure = sdviz.probes.unet_structure(sd15)
print(
    f"SD 1.5's UNet: {sdviz.course.count_parameters(sd15.unet):,} parameters; "
    f"the loaded one: {sdviz.course.count_parameters(pipe.unet):,}"
)
sdviz.figures.unet_diagram(sd15_structure)

# %% [markdown]
# The same design, larger: four levels instead of three, two ResNets per down block and
# three per up block, 320 to 1280 channels, a 64×64 latent for a 512-pixel image, and the
# 77 token vectors of CLIP ViT-L, 768 numbers each.
#
# ## A short live training run
#
# Now train a noise predictor from random weights, on exactly such examples: a fresh UNet
# of **sdviz-mini's design** (`sdviz.training.unet.build_unet`: the blocks and channels of
# the embedded model's UNet, its cross-attention sized to the loaded text encoder's
# vectors), fed ShapesWorld latents and captions through the loaded VAE and text encoder.
# Whatever model you loaded, the UNet trained here is that small one: SD 1.5's would not
# train on a CPU. sdviz-mini's whole recipe took 161.9 minutes of wall clock on a 2-core
# CPU, 137 of them for 18,000 UNet steps (`sdviz/models/sdviz-mini/training_record.json`);
# a minute shows how the loss starts to fall.

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
sdviz.figures.live_training(live)

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
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** How many ResNet blocks read t in SD 1.5's UNet? (Two per down block, three per up
# block, two in the mid block: count the R chips in its figure.)

# %%
print(sd15_structure.count("resnet"), "ResNets read t in SD 1.5's UNet")

# %% [markdown]
# **2.** Generate at twice the side: the latent doubles. How many queries (latent
# positions) does the first block's cross-attention have then, and how many keys?

# %%
bigger = sdviz.probes.unet_structure(pipe, latent_size=2 * pipe.unet.config.sample_size)
sdviz.course.table(bigger.attention_table(), title="The same UNet on a latent twice the side")

# %% [markdown]
# **3.** Are the embeddings of t=0 and t=1 more alike before or after the MLP?

# %%
print(f"features: {emb.cosine(0, 1, 'features'):.3f}   after the MLP: {emb.cosine(0, 1):.3f}")

# %% [markdown]
# **4.** What loss does a network score that always answers ε̂ = 0? Compute it on the
# labels of the batch at the top of the lesson.

# %%
print(f"MSE(0, ε) = {torch.nn.functional.mse_loss(torch.zeros_like(noise), noise):.3f}")

# %% [markdown]
# ## Recap
#
# - A training example is a clean latent noised to a random timestep; the noise is the label.
# - The UNet learns to predict that noise from the noisy latent, the timestep and the
#   caption, with a mean-squared-error loss.
# - Inside, the UNet goes down in resolution and back up, with skip connections across;
#   ResNet blocks alternate with attention layers.
# - t enters as sinusoids → an MLP → a per-channel shift added in every ResNet; the text
#   enters only through cross-attention, whose keys and values are the token vectors,
#   while self-attention's come from the image itself.
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
