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
# averaged over heads and layers — the method of DAAM (Tang et al. 2023) — and, on request,
# per layer.
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
# maps besides the average. (Stable Diffusion 1.5 has 16 such layers, all `attn2`.)

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
print(
    f"{run['attention.n_layers']} layers attend to the text; their average maps:",
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
# sampling; larger g follows the prompt harder — until the picture breaks into
# over-saturated artefacts. Small models like the embedded one want small scales; Stable
# Diffusion 1.5 is usually run at 7.5. (The runs above used `lesson.guidance`, the scale
# the loaded model recommends.) `sdviz.probes.guidance_runs` generates once per scale,
# and the figure draws the runs:

# %%
sweep = sdviz.probes.guidance_runs(
    pipe, lesson.prompt, [1.0, 2.0, 4.0, 7.5, 15.0], seed=lesson.seed, steps=lesson.steps
)
sdviz.figures.guidance_sweep(sweep)

# %% [markdown]
# ## Recap
#
# - The text enters the UNet only through **cross-attention**: latent positions are
#   queries, token vectors are keys and values; the attention weights form a map per token.
# - Averaged over heads, layers and steps, the map of a word shows where the model puts it;
#   per layer, coarse layers place things and fine layers refine them.
# - **Classifier-free guidance** runs the UNet with and without the prompt and extrapolates
#   along the difference by the guidance scale; too large a scale over-saturates the image.
#
# ### Exercises
#
# 1. Generate "a red circle to the right of a blue square": do the maps of "circle" and
#    "square" swap sides? Try a few seeds.
# 2. Use `negative_prompt="red"` in `sdviz.generate` with the prompt "a circle": what does
#    the negative prompt replace in the guidance formula, and what happens to the colour?
# 3. With `sdviz.widgets.AttentionExplorer`, find the layer whose map of "circle" is
#    sharpest. At which steps does it become sharp?
