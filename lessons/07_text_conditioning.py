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
# # Lesson 7 — Text conditioning: cross-attention and guidance
#
# Lesson 6 turned the prompt into a matrix of token vectors. How does the UNet *use* it?
# *"The Illustrated Stable Diffusion"* shows the answer: the UNet's ResNet blocks are
# interleaved with **attention layers**, and in those the latent image asks the text
# questions. Each latent position (a *query*) compares itself with every token vector
# (the *keys*) and takes a weighted mix of them (the *values*):
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt d}\right)V,
# \qquad Q = W_Q\,\varphi(x_t),\; K = W_K\,\tau(y),\; V = W_V\,\tau(y)$$
#
# (Rombach et al. 2022, Sec. 3.3). The softmax weights are a **map per token**: how much of
# each image position's attention goes to that word. sdviz records them at every step,
# averaged over heads and over the `attn2` layers outside the UNet's middle block — the
# layers DAAM (Tang et al. 2023) averages — and, on request, per layer. This lesson also
# *measures* how well such a map finds its word's object, and why that choice of layers.
#
# The second half of the lesson is **classifier-free guidance**, the trick that makes the
# text matter more.

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
# ## Attention maps of one generation
#
# Which layers attend to the text? In each transformer block of the UNet diffusers names
# the self-attention layer `attn1` (image positions look at each other) and the
# cross-attention layer `attn2` (they look at the tokens). A model can make `attn1` a
# cross-attention layer too (`only_cross_attention` in the UNet's config, one flag per
# down block, mirrored by the up blocks): sdviz-mini does so in its first down block and
# its last up block, the blocks at the latent's full resolution. sdviz records every layer
# that attends to the text, whatever its name; `attention_layers="*"` keeps each one's own
# maps. (Stable Diffusion 1.5 has 16 such layers, all `attn2`.) The average,
# `attention.maps`, takes only the `attn2` layers outside the middle block
# (`sdviz.attention.default_aggregate_layers`): the section "Which layers and steps know
# where the words are" below measures why.

# %%
run = sdviz.generate(
    pipe,
    lesson.prompt,
    steps=lesson.steps,
    seed=lesson.seed,
    guidance_scale=lesson.guidance,
    attention_layers="*",
)
maps = run["attention.maps"]  # (steps, tokens, h, w)
print("tokens:", run.words)
print("only_cross_attention per down block:", pipe.unet.config.only_cross_attention)
print(f"{run['attention.n_layers']} layers attend to the text")
averaged = sdviz.attention.default_aggregate_layers(pipe.unet)
print(
    f"{len(averaged)} of them are averaged into the maps:",
    tuple(maps.shape),
    "(steps, tokens, h, w)",
)
sdviz.course.attention_layers_table(run)

# %% [markdown]
# The softmax runs over the tokens, so at every position the attention shares sum to one:

# %%
print("sum over tokens, min and max:", float(maps.sum(1).min()), float(maps.sum(1).max()))

# %% [markdown]
# Where does each word look? One heat map per word, over the generated image (averaged over
# all steps):

# %%
sdviz.figures.cross_attention(run, ["red", "circle", "blue", "square"])

# %% [markdown]
# Not all attention goes to the words. In Stable Diffusion much of it lands on the start
# token `<start>`, which every later token sees in CLIP's causal text encoder and which
# works as a "nothing in particular" sink; the padding tokens after `<end>` have seen the
# whole sentence and carry a summary of it. How does your model share its attention? The
# average share per token, at the last step:

# %%
share = run.token_shares(step=-1)  # (tokens,): the mean over the image positions
n = run["tokenizer.n_tokens"]  # the real tokens; the rest is padding
sdviz.course.table(
    {"token": run.words, "share of the attention": share[:n]},
    formats={"share of the attention": ".1%"},
    notes=f"and all {len(share) - n} padding tokens together: {float(share[n:].sum()):.1%}",
)

# %% [markdown]
# The same split as a picture: the start token, the prompt's words, and the end token with
# the padding after it. Set `MODEL` to Stable Diffusion 1.5 and the same cells measure the
# real model: there too most of the attention lands on tokens that are not words.

# %%
shares = sdviz.probes.token_shares(maps, run["tokenizer.n_tokens"])  # averaged over steps
sdviz.figures.attention_shares({"this run (default aggregate)": shares})

# %% [markdown]
# ## Across layers and steps
#
# Each layer works at its own resolution: the coarse layers in the middle of the UNet
# decide the layout, the fine ones near the output the details. And the maps change over
# the steps, as the image takes shape.

# %%
sdviz.figures.attention_drilldown(run, "circle")

# %% [markdown]
# Explore it yourself: pick a word, a layer and a step.

# %%
sdviz.widgets.AttentionExplorer(run, word="circle")

# %% [markdown]
# ## Which layers and steps know where the words are
#
# A heat map that *looks* right proves little. On ShapesWorld images we know exactly where
# each object is, so we can score the maps. `sdviz.probes.localisation` takes held-out
# ShapesWorld images (never trained on), noises each to timestep t, runs the UNet once with
# the image's own caption, and scores the map of each noun ("circle") and colour word
# ("red") against that object's mask: the **pointing game** (is the map's brightest pixel
# inside the object?) and the **IoU** of the map, scaled to [0, 1] and cut at 0.4, with the
# mask. Per layer, per timestep — and for the two averages: every layer, and the default.
# (The captions are ShapesWorld's: with another `MODEL` the probe still runs, slowly, on
# 64-px drawings its model has never seen.)

# %%
loc = sdviz.probes.localisation(pipe, count=24, timesteps=(901, 701, 501, 301, 101))
sdviz.figures.attention_localisation(loc)

# %%
rates = loc.rate(loc.aggregates["default"], "pointing").mean(0)  # (noun, colour), mean over t
sdviz.course.table(
    {
        "word": ["noun", "colour word"],
        "peak inside its object (default maps)": rates,
        "mIoU": loc.rate(loc.aggregates["default"], "iou").mean(0),
    },
    formats={"peak inside its object (default maps)": ".0%", "mIoU": ".0%"},
    notes=f"{loc.n_images} held-out images, averaged over t = {loc.timesteps}",
)

# %% [markdown]
# These live numbers come from 24 images, about 40 objects: one object is 2.5 points, so
# the two average rows can swap places at some t by chance. The full benchmark decides:
# `benchmarks/attention_localisation.py` (its output is in
# `benchmarks/results/2026-12-07-attention-cpu.txt`) scores 96 held-out images at six
# timesteps, and 64 generated two-object images ("a red circle to the left of a blue
# square", own seeds, 25 steps, g = 2) whose objects it finds in the pixels — both found in
# 53 images, 106 objects. There each word's map is averaged over the steps and scored:
# does it peak inside its object, does it put more mass on its own object than on the
# other, how much of it lies inside its object. Against DAAM 0.2.0 itself, run on the same
# UNet inputs:
#
# | generated images, 106 objects | peak inside: noun | colour | own > other: noun | colour | mass inside: noun | colour |
# |---|---|---|---|---|---|---|
# | sdviz's earlier default (all 10 layers, bilinear) | 96.2% | 27.4% | 84.9% | 67.0% | 14.2% | 6.0% |
# | DAAM 0.2.0 (6 `attn2` layers, bicubic) | 97.2% | 29.2% | 93.4% | 70.8% | 18.0% | 6.4% |
# | **sdviz's default now** (5 `attn2` layers, bicubic) | **97.2%** | **41.5%** | **93.4%** | **71.7%** | **19.7%** | **9.7%** |
#
# (A random pixel lies inside the object 4.9% of the time, the image's centre 3.8%.) On
# the held-out images the default's maps point inside the object 86.7% of the time for
# nouns and 29.1% for colour words (before: 86.1% and 26.6%; DAAM's aggregation of the
# same maps: 86.4% and 23.2%), mIoU 38.6% and 18.6% (before: 33.8% and 12.1%; DAAM's:
# 38.3% and 14.4%).
#
# What changed, and why, measured in the same benchmark: **which layers** are averaged —
# the middle block's 4×4 maps (one cell is a quarter of the picture wide) point inside the
# object for 4.5% of nouns, the `attn1` layers sdviz-mini makes cross-attention for 10–52%,
# the encoder's 8×8 layer (`down 1.0`) for 35% of nouns and 11% of colour words: leaving
# those out takes colour words from 27% to 41%. And **how a coarse map is enlarged**:
# bicubic resizing (DAAM's) keeps the peaks of the 8×8 maps where bilinear flattens them,
# nouns' own > other 92.5% → 93.4%, mass 18.0% → 19.7%. Both use the text half of the
# guidance batch, as DAAM does; neither rescales a word's map.
#
# ### Why are the maps of "red" and "blue" flat?
#
# Nouns find their objects 97% of the time, colour words 41%. Three measured reasons:
#
# 1. *Most layers do not place colours.* Nouns are placed by the coarse layers of the up
#    path (`up 1.1` alone points inside the right object for 75% of held-out nouns);
#    colour words point right in one layer only, the last full-resolution one (`up 2.1`:
#    41%), and for 7–24% in the others. Averaging layers dilutes it.
# 2. *Colour arrives late.* On held-out images the colour words' maps point right for 16%
#    at t = 901 and 35% at t = 21, the nouns' for 59% and 93%; in a generation the colour
#    words' score climbs from 25% at the first step to 41% by step 16. Where a shape goes
#    is settled in the noisiest steps; which colour it is, once there is an image to colour.
# 3. *The colour token does not know its object.* CLIP's text encoder is causal (lesson 6):
#    it encodes "red" before it has read "circle", so the vector of "red" cannot say which
#    object is red — it is the same whatever follows. The noun's vector, read after the
#    colour, carries both. Check it: token 2 is "red" in both prompts, token 3 the noun.

# %%
red_circle = sdviz.text.embed(pipe, "a red circle")  # (tokens, width)
red_square = sdviz.text.embed(pipe, "a red square")
blue_circle = sdviz.text.embed(pipe, "a blue circle")
print(
    "'red' before 'circle' vs before 'square', largest difference:",
    float((red_circle[2] - red_square[2]).abs().max()),
)
print(
    "'circle' after 'red' vs after 'blue', largest difference:",
    float((red_circle[3] - blue_circle[3]).abs().max()),
)

# %% [markdown]
# The colour word's vector is identical (difference 0) whatever shape follows, while the
# noun's vector changes with the colour before it: so the UNet can learn what to paint red
# from the noun's token, and the map of "red" need not single out the red object.

# %% [markdown]
# ## Classifier-free guidance
#
# At every step the UNet actually runs **twice**: once with the prompt (ε_text) and once
# with an empty prompt (ε_uncond). The difference between the two is the direction "more
# like the prompt". The pipeline exaggerates it by the **guidance scale** g
# (Ho & Salimans 2022):
#
# $$\hat\varepsilon = \varepsilon_\text{uncond} + g\,(\varepsilon_\text{text} - \varepsilon_\text{uncond})$$
#
# The run recorded both halves; check the formula:

# %%
g = run["pipeline.guidance_scale"]
guided = run["denoiser.noise_pred_uncond"] + g * (
    run["denoiser.noise_pred_text"] - run["denoiser.noise_pred_uncond"]
)
print(
    f"guidance scale {g}; largest difference to the pipeline's guided prediction:",
    float((guided - run["denoiser.noise_pred"]).abs().max()),
)
print("the empty prompt's embeddings:", tuple(run["text_encoder.negative_prompt_embeds"].shape))

# %%
sdviz.figures.guidance_terms(run)

# %% [markdown]
# The same prompt and seed at several guidance scales. g = 1 is plain conditional
# sampling (diffusers then skips the unconditional half); larger g pushes harder along
# ε_text − ε_uncond. Stable Diffusion 1.5 is usually run at 7.5; the runs above used
# `lesson.guidance`, the scale the loaded model recommends. `sdviz.probes.guidance_runs`
# generates once per scale, and the figure draws the runs:

# %%
sweep = sdviz.probes.guidance_runs(
    pipe, lesson.prompt, [1.0, 2.0, 4.0, 7.5, 15.0], seed=lesson.seed, steps=lesson.steps
)
sdviz.figures.guidance_sweep(sweep)

# %% [markdown]
# ### What guidance buys and what it costs, measured
#
# One prompt and one seed cannot say whether guidance helps: this prompt may be easy at
# every scale. `benchmarks/guidance_sweep.py` generated 96 one-object prompts ("a red
# circle"), 96 two-object prompts ("a blue star to the left of a green star") and 36 naming
# a colour-shape pair never seen in training, with fixed seeds, at nine scales, and scored
# every image from its pixels: saturated blobs, the nearest of ShapesWorld's six colours, a
# shape classifier fitted on ShapesWorld's masks — never the model's own CLIP. It also
# measured how far the drawn colours stray from ShapesWorld's palette (mean RGB distance of
# object pixels, 0–255) and how sharp the edges are. sdviz-mini ships the result
# (`guidance.json` in its folder), so nothing is generated here:

# %%
measured = sdviz.probes.measured_guidance()  # sdviz-mini's sweep, whatever MODEL is
sdviz.course.table(
    measured.columns("accuracy"),
    title="Prompts followed (%), sdviz-mini, 25 DDIM steps",
    formats={"guidance g": "g"},
    notes=(
        f"n per scale: {measured.n['one_object']} one-object and "
        f"{measured.n['two_objects']} two-object prompts; {measured.n['held_out_pairs']} "
        "name a colour-shape pair never seen in training"
    ),
)

# %%
sdviz.figures.guidance_benefit(measured)

# %% [markdown]
# Guidance earns its second UNet call. Without it (g = 1) sdviz-mini follows 58% of the
# two-object prompts and 69% of the unseen pairs (it tends to draw the colour it has seen
# with that shape); at g = 2, 83% and 97%. From 2 to 7.5 accuracy stays within a few
# prompts of its best; at 15 two-object prompts fall back to 65%. The cost shows in the
# colours: closest to the palette near g = 2 (15.3 RGB units away; real images decoded by
# the VAE: 11.3), then further with every step up (20.1 at 7.5, 25.3 at 15) — the
# over-saturated look of the largest scale above. Edges do not change with g. That is how
# the model's recommended scale was chosen:

# %%
print(measured.recommendation())

# %% [markdown]
# ## Check yourself
#
# Answer first, then run the cell below to check.
#
# 1. `run["attention.maps"]` has one map per step and token: what are its four sizes for
#    this run (the steps, the tokenizer's length, the latent's height and width)?
# 2. At one image position, what do the attention weights over all tokens add up to?
# 3. Which layer's maps find the colour words' objects most often — a coarse or a
#    full-resolution one?
# 4. Do the words get more or less than half of all the attention?

# %%
print("1. maps:", tuple(run["attention.maps"].shape), "(steps, tokens, h, w)")
print("2. sum over the tokens at one position:", float(run["attention.maps"][0, :, 0, 0].sum()))
colour_by_layer = loc.rate(loc.per_layer, "pointing").mean(1)[:, 1]  # (layers,), mean over t
print("3. best layer for colour words:", loc.layers[int(colour_by_layer.argmax())])
print(f"4. the words' share of the attention: {shares['words']:.0%}")

# %% [markdown]
# ## Recap
#
# - The text enters the UNet only through **cross-attention**: latent positions are
#   queries, token vectors are keys and values; the attention weights form a map per token.
# - Averaged over heads, layers and steps, the map of a word shows where the model puts it;
#   per layer, coarse layers place things and fine layers refine them. Measured against
#   exact masks, nouns' maps find their objects; colour words' maps are flat, because the
#   causal text encoder has not yet read the noun when it encodes the colour.
# - Most of the attention goes to the start, end and padding tokens, not to the words.
# - **Classifier-free guidance** runs the UNet with and without the prompt and extrapolates
#   along the difference by the guidance scale. Measured on sdviz-mini, a little guidance
#   (g = 2) raises the two-object prompts followed from 58% to 83%; large scales pull the
#   colours off the palette and lose prompts again.
#
# ### Exercises
#
# 1. Generate "a red circle to the right of a blue square": do the maps of "circle" and
#    "square" swap sides? Try a few seeds.
# 2. Use `negative_prompt="red"` in `sdviz.generate` with the prompt "a circle": what does
#    the negative prompt replace in the guidance formula, and what happens to the colour?
# 3. With `sdviz.widgets.AttentionExplorer`, find the layer whose map of "circle" is
#    sharpest. At which steps does it become sharp?
