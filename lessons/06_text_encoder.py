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
# ## Byte-pair encoding: where the pieces come from
#
# CLIP's tokenizer uses **byte-pair encoding** (BPE, Sennrich et al. 2016). Its vocabulary
# is *learned* from text: start with every single character (every byte, so that any text
# can be written down), then again and again add the most frequent adjacent pair of
# pieces in the corpus as a new token — a **merge** — until the vocabulary is as large as
# wanted. The loaded tokenizer's vocabulary, counted by kind:

# %%
sdviz.course.tables.vocabulary_table(pipe.tokenizer)

# %% [markdown]
# sdviz-mini's tokenizer learned its merges from ShapesWorld's captions alone, and stopped
# when every word in them was one token: the merges in the table build ShapesWorld's few
# dozen words, and nothing more. It is a tiny, **closed** vocabulary. Stable Diffusion's
# CLIP tokenizer learned 48,894 merges (of its 49,408 tokens) from a large corpus of web
# text, so it holds pieces for the frequent letter sequences of English.
#
# Tokenizing a word replays the learned merges, the earliest-learned (most frequent) first,
# as long as one applies. A ShapesWorld word is merged all the way into one token:

# %%
sdviz.course.tables.bpe_table(pipe.tokenizer, "triangle")

# %% [markdown]
# A word is never rejected: it is cut into the pieces the merges can build. Two words
# the captions never contained, against one they did:

# %%
sdviz.course.tables.pieces_table(pipe.tokenizer, ["triangle", "rectangle", "dodecahedron"])

# %% [markdown]
# "rectangle" never appears in ShapesWorld, yet it comes out in three pieces: "re" (from
# "red"), "ct" (from "picture") and "angle" (from "triangle") were all learned. That is
# what BPE is for: an unseen word is built from known pieces. "dodecahedron" has almost no
# letter pair that ShapesWorld's captions repeat, so this vocabulary can only spell it out
# letter by letter — a symptom of the tiny closed vocabulary, not of BPE. A vocabulary
# learned from a large corpus has merges for the frequent parts of words: Stable
# Diffusion's tokenizer (CLIP's 48,894 merges) cuts "dodecahedron" into five pieces,
# do·de·ca·he·dron, "rectangle" into rec·tangle, and keeps "triangle" whole. Load it
# (`MODEL` in the setup cell) and these cells show it.
#
# Every piece takes one of the L positions, and a prompt longer than L tokens is cut: the
# text encoder never sees the end of it.
# sdviz reports what was lost (diffusers only prints a warning):

# %%
long_prompt = ", ".join([lesson.prompt] * 12)
cut = sdviz.tokenize(pipe, long_prompt)
print(
    f"{len(long_prompt.split())} words; kept {cut['n_tokens']} tokens (start and end included);"
    f" cut off: {len(cut['truncated'])} tokens"
)
print("cut off:", sdviz.text.readable_text(cut["truncated"])[:150], "...")

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
# The text encoder that made them, read from the loaded model:

# %%
text_config = pipe.text_encoder.config
print(
    f"{text_config.num_hidden_layers} Transformer layers, {text_config.hidden_size} wide (d), "
    f"{text_config.num_attention_heads} attention heads: "
    f"{sdviz.course.count_parameters(pipe.text_encoder):,} parameters"
)

# %% [markdown]
# The article gives "ClipText" 63M parameters. That is the *base* text Transformer of the
# CLIP paper (Radford et al. 2021: 12 layers, 512 wide). Stable Diffusion 1.x uses the text
# tower of a larger CLIP, ViT-L/14: also 12 layers, but 768 wide (d = 768), which makes
# 123M parameters — the number this cell prints with SD 1.5 loaded. Both are small next to
# the UNet; sdviz-mini's is smaller still, sized for its few dozen words.

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
sdviz.figures.live_training(clip_run)

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
# image faces its own caption and its two **counterfactuals** — the same words, another
# picture: the relation flipped, and two colours swapped (`sdviz.shapes.contrast_captions`).
# `sdviz.probes.clip.counterfactuals` picks the test pictures whose captions have both.

# %%
relational = sdviz.probes.clip.counterfactuals(test, 3)  # pictures with both kinds
print(*relational.captions, sep="\n")
sdviz.figures.clip_similarity(
    sdviz.probes.clip_embeddings(
        relational.images,
        relational.captions,
        model=clip_run.model,
        tokenizer=pipe.tokenizer,
        image_mean=clip_run.image_mean,
        image_std=clip_run.image_std,
    ),
    truth=relational.truth,
    caption_kinds=relational.kinds,
)

# %% [markdown]
# Three pictures are few. The same test on a hundred: how often does the true caption
# score higher than each kind of counterfactual? A CLIP that reads only the bag of words
# scores both alike: 50% (a tie counts half); one that reads relations and bindings: 100%.

# %%
import transformers

many = sdviz.probes.clip.counterfactuals(test, lesson.pick(full=100, smoke=8))
live_wins = many.true_wins(
    sdviz.probes.clip_embeddings(
        many.images,
        many.captions,
        model=clip_run.model,
        tokenizer=pipe.tokenizer,
        image_mean=clip_run.image_mean,
        image_std=clip_run.image_std,
    )
)
# sdviz-mini's whole CLIP (both towers), trained with counterfactuals as extra negatives;
# it ships in the embedded model's folder with its own tokenizer and image processor
mini = sdviz.pipeline.EMBEDDED_MODEL / "clip"
mini_wins = many.true_wins(
    sdviz.probes.clip_embeddings(
        many.images,
        many.captions,
        model=transformers.CLIPModel.from_pretrained(mini),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(mini),
        image_processor=transformers.CLIPImageProcessor.from_pretrained(mini),
    )
)
sdviz.course.table(
    {
        "counterfactual": live_wins.keys(),
        f"live CLIP ({len(clip_run.loss)} steps)": live_wins.values(),
        "sdviz-mini's CLIP": mini_wins.values(),
    },
    formats={f"live CLIP ({len(clip_run.loss)} steps)": ".0%", "sdviz-mini's CLIP": ".0%"},
    notes=f"how often the true caption scores higher, over {len(many.images)} test pictures",
)

# %% [markdown]
# If a flipped caption scores about as high as the true one (near 50%), a CLIP does not
# read relations — and the UNet, which sees only the text encoder's vectors, cannot place
# objects from them either. Training with such counterfactuals as extra negatives helps
# the text side: sdviz-mini's CLIP was trained that way (`hard_negatives=True` in
# `sdviz.training.clip`), and the table shows how much more often it prefers the true
# caption; relations stay harder than colours. The text side is not the whole story: the
# UNet must learn to use those words too. sdviz-mini's recipe shows it the captions that
# say where three times as often and weighs the noisiest steps, where the layout is
# decided, more; even so it learns order last, in a jump late in training (its model card
# has the numbers).

# %% [markdown]
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** How many tokens does "a big purple triangle above a small green circle" take,
# start and end tokens included? And how many padding tokens follow?

# %%
check = sdviz.tokenize(pipe, "a big purple triangle above a small green circle")
print(f"{check['n_tokens']} tokens, then {L - check['n_tokens']} padding tokens")

# %% [markdown]
# **2.** ShapesWorld says "square", never "squares". Will the plural come out as "square"
# plus "s"? (Look again at how the merges of "triangle" used `</w>`.)

# %%
sdviz.course.tables.bpe_table(pipe.tokenizer, "squares")

# %% [markdown]
# **3.** CLIP's text encoder is causal. Does a word *after* "circle" change the vector of
# "circle"? Predict the cosine, then compare "a red circle" with "a red circle on the left":

# %%
longer = sdviz.embed(pipe, "a red circle on the left")
print(f"'circle': cosine {float(cosine(red[position], longer[position], dim=0)):.3f}")

# %% [markdown]
# ## Recap
#
# - The tokenizer turns a prompt into exactly L ids: start token, word pieces, end token,
#   padding; anything beyond L is cut off.
# - Its pieces come from byte-pair encoding: merges learned from a corpus, replayed on each
#   word. sdviz-mini's corpus was ShapesWorld's captions, so it spells unrelated words out
#   letter by letter; SD's CLIP tokenizer, learned from web text, keeps most words to a
#   few pieces.
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
#    adjective move it? Does "big" move it as far as a colour does?
# 3. Train the small CLIP for twice as many steps: how do the loss and the similarity
#    matrix change? Does it tell the counterfactuals apart more often, or does that take
#    counterfactual negatives (`hard_negatives=True` in `sdviz.training.clip.train_clip`)?
