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
# # Lesson 6 — The text encoder, and how CLIP is trained
#
# The first model in the pipeline reads the prompt. In *"The Illustrated Stable Diffusion"*
# it is "a Transformer language model": the text half of **CLIP** (Radford et al. 2021).
# It does two things:
#
# 1. the **tokenizer** cuts the prompt into tokens (whole words, or pieces of unknown
#    words) and maps each to an id; the list is framed by a start and an end token and
#    **padded** to a fixed length — 77 for Stable Diffusion — or **truncated** to it;
# 2. the **text encoder**, a Transformer, turns the ids into one vector per token. Each
#    vector depends on the words before it: "circle" in "a red circle" is not the same
#    vector as in "a blue circle".
#
# Why CLIP's encoder? Because CLIP was trained to put a caption's vector close to its
# image's vector. The second half of this lesson trains a small CLIP live.

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
# ## Tokens and ids

# %%
tok = sdviz.tokenize(pipe, lesson.prompt)
n, L = tok["n_tokens"], pipe.tokenizer.model_max_length
print(f"context length L = {L}; vocabulary of {len(pipe.tokenizer):,} tokens")
print("tokens:", tok["tokens"][:n])
print("ids:   ", tok["input_ids"][:n].tolist())
print(f"then {L - n} padding tokens {tok['tokens'][n]!r} (id {int(tok['input_ids'][n])})")

# %% [markdown]
# A word the tokenizer does not know is not rejected: it is spelled out in smaller pieces
# that it does know (byte-pair encoding). The end of a word is marked `</w>`.

# %%
odd = sdviz.tokenize(pipe, "a red dodecahedron")
print(odd["tokens"][: odd["n_tokens"]])

# %% [markdown]
# And a prompt longer than L tokens is cut: the text encoder never sees the end of it.
# sdviz reports what was lost (diffusers only prints a warning):

# %%
long_prompt = ", ".join([lesson.prompt] * 12)
cut = sdviz.tokenize(pipe, long_prompt)
print(
    f"{len(long_prompt.split())} words; kept {cut['n_tokens']} tokens; cut off: {len(cut['truncated'])} tokens"
)
print("cut off:", " ".join(cut["truncated"]).replace("</w>", "")[:150], "...")

# %% [markdown]
# Try it: type in the box and watch the tokens change. **Generate** runs the pipeline.

# %%
sdviz.widgets.PromptExplorer(
    pipe, lesson.prompt, steps=lesson.steps, guidance_scale=lesson.guidance
)

# %% [markdown]
# ## Embeddings: one vector per token
#
# The text encoder's output is an L × d matrix: what every cross-attention layer of the UNet
# attends to (lesson 7). Padding positions get vectors too.

# %%
embeds = sdviz.embed(pipe, lesson.prompt)
print("embeddings:", tuple(embeds.shape), "(tokens × dimensions)")
sdviz.figures.tokens_and_embeddings(sdviz.text.prompt_record(pipe, lesson.prompt))

# %% [markdown]
# **Context.** Compare the vector of "circle" in two prompts that differ only in the
# colour. Before the Transformer, a token is just a row of an embedding table — the same
# row in both prompts. After it, the colour has leaked into the shape's vector. CLIP's text
# encoder is *causal* (each token sees only the ones before it), so the token "a" before
# the colour is exactly the same in both.

# %%
import torch

red, blue = sdviz.embed(pipe, "a red circle"), sdviz.embed(pipe, "a blue circle")
position = sdviz.tokenize(pipe, "a red circle")["tokens"].index("circle</w>")
cosine = torch.nn.functional.cosine_similarity
print(
    f"'circle' (position {position}), red vs blue prompt: cosine {float(cosine(red[position], blue[position], dim=0)):.3f}"
)
print(
    f"'a' (position 1), before the colour:         cosine {float(cosine(red[1], blue[1], dim=0)):.3f}"
)

# %% [markdown]
# ## How CLIP is trained
#
# CLIP has two towers: an image encoder and a text encoder, each ending in a vector of the
# same size. A batch of N image–caption pairs gives an N × N table of cosine similarities;
# training pushes the N matching pairs (the diagonal) up and every mismatched pair down —
# a **contrastive** loss. After training, a caption's vector sits near the vectors of images
# that fit it: this is the knowledge Stable Diffusion borrows from the text tower.
#
# A short live run on ShapesWorld, from random weights:

# %%
import math

import sdviz.training.live

BATCH = 64  # image-caption pairs per training step: each image has 64 captions to choose from
clip_run = sdviz.training.live.train_small_clip(
    pipe.tokenizer,
    steps=lesson.pick(full=200, smoke=5),  # training steps (5 in the tests' smoke mode)
    batch=BATCH,
    seed=lesson.seed,
)
print(
    f"a {sdviz.course.count_parameters(clip_run.model):,}-parameter CLIP trained "
    f"{len(clip_run.loss)} steps in {clip_run.seconds:.1f} s: contrastive loss "
    f"{clip_run.loss[0]:.2f} → {clip_run.loss[-1]:.2f}; images whose best caption in the "
    f"batch is their own: {clip_run.accuracy[0]:.0%} → {clip_run.accuracy[-1]:.0%}"
)
sdviz.figures.training_curves(
    clip_run.loss,
    clip_run.accuracy,
    loss_label="contrastive loss",
    accuracy_label="images whose best caption is their own",
    references={f"a CLIP that guesses: log({BATCH}) = {math.log(BATCH):.2f}": math.log(BATCH)},
    title="Live training of a small CLIP from random weights",
)

# %% [markdown]
# A random CLIP's loss is log(batch size) (the dashed line): every caption is equally
# likely, and its accuracy is one in the batch size. As the loss falls, images find their
# own captions among the batch's.
#
# ## The CLIP similarity matrix
#
# Test images the model never saw — ShapesWorld's test split, which also holds colour–shape
# pairs kept out of training — against their captions. Each cell is the cosine similarity
# of an image's and a caption's embedding; the best caption of each image is outlined.
# After a good training run the diagonal lights up. (`sdviz.probes.clip_embeddings` runs
# the two towers; the figure draws.)

# %%
test = sdviz.shapes.ShapesWorld(size=32, split="test", seed=lesson.seed)
pairs = sdviz.course.examples(test, 6)  # six test pictures and their captions
similarities = sdviz.probes.clip_embeddings(
    pairs.images,
    pairs.captions,
    model=clip_run.model,
    tokenizer=pipe.tokenizer,
    image_mean=clip_run.image_mean,
    image_std=clip_run.image_std,
)
sdviz.figures.clip_similarity(similarities)

# %% [markdown]
# ## Does CLIP know left from right?
#
# A batch of random captions almost never holds two that differ only in "left" and
# "right", so the contrastive loss can be pushed down without reading word order: a CLIP
# can rank captions by their **bag of words** (Yuksekgonul et al. 2023). Below, each test
# image faces its own caption and its **counterfactuals** — the same words, another
# picture: the relation flipped, or two colours swapped (`sdviz.shapes.contrast_captions`).

# %%
relational = sdviz.course.examples(test, 3, containing=("left of", "right of"))
captions = relational.counterfactual_captions()  # each caption, then its counterfactuals
print(*captions, sep="\n")
sdviz.figures.clip_similarity(
    sdviz.probes.clip_embeddings(
        relational.images,
        captions,
        model=clip_run.model,
        tokenizer=pipe.tokenizer,
        image_mean=clip_run.image_mean,
        image_std=clip_run.image_std,
    )
)

# %% [markdown]
# If a flipped caption scores about as high as the true one, this CLIP does not read
# relations — and the UNet, which sees only the text encoder's vectors, cannot place
# objects from them either. Training with such counterfactuals as extra negatives fixes
# the text side: sdviz-mini's CLIP was trained that way (`hard_negatives=True` in
# `sdviz.training.clip`), and `benchmarks/mini_quality.py` reports how often it prefers
# the true caption. The text side is not the whole story: the UNet must learn to use
# those words too. sdviz-mini's recipe shows it the captions that say where three times as
# often and weighs the noisiest steps, where the layout is decided, more; even so it
# learns order last, in a jump late in training (its model card has the numbers).
#
# ## Recap
#
# - The tokenizer turns a prompt into exactly L ids: start token, word pieces, end token,
#   padding; anything beyond L is cut off.
# - The text encoder turns them into L contextual vectors (L × d): what the UNet reads.
# - CLIP learns those vectors contrastively, pulling matching image–caption pairs together
#   and pushing the others apart. Random batches let it read a bag of words; captions
#   with the same words and another meaning, as extra negatives, make it read relations.
#
# ### Exercises
#
# 1. Find a prompt of ordinary words that uses more tokens than words. Which words were
#    split, and why?
# 2. Compare the vectors of "square" in "a red square" and "a square": how far does one
#    adjective move it? Does a word *after* "square" change it?
# 3. Train the small CLIP for twice as many steps: how do the loss and the similarity
#    matrix change? Does it tell the counterfactuals apart? Then load sdviz-mini's whole
#    CLIP (the model folder's `clip/`, with `transformers.CLIPModel.from_pretrained`) and
#    redo the counterfactual matrix.
