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
# # Lesson 10 — From SD 1.5 to SDXL, SD3 and Flux
#
# The article's picture — **text encoder → denoiser + scheduler over latents → VAE
# decoder** — still describes the models people use today. What changed is inside the
# boxes:
#
# | model | year | text encoders | denoiser | sampling |
# |---|---|---|---|---|
# | Stable Diffusion 1.5 (Rombach et al. 2022) | 2022 | CLIP-L | UNet | diffusion (ε), CFG |
# | SDXL (Podell et al. 2023) | 2023 | CLIP-L + CLIP-G | bigger UNet | diffusion (ε), CFG |
# | Stable Diffusion 3 (Esser et al. 2024) | 2024 | CLIP-L + CLIP-G + T5-XXL | MMDiT transformer | flow matching (v), CFG |
# | FLUX.1 [dev] (Black Forest Labs 2024) | 2024 | CLIP-L + T5-XXL | double/single-stream transformer | flow matching (v), guidance distilled |
#
# This lesson puts the four side by side twice: first from their **published configs**
# (built on PyTorch's `meta` device: every layer with its real shape, no weights, no
# memory), then as **traced generations** with the same `sdviz.generate` you have used
# since lesson 1, so you can see each new record the newer families add.
#
# **About the traces.** With `MODEL = None` the Stable Diffusion column is sdviz-mini
# (trained: its picture is a picture), and SDXL, SD3 and Flux are *tiny pipelines
# built in code with random weights* (`sdviz.builder.tiny_sdxl_pipeline` and friends,
# 64 px, about a million parameters each). Their pictures are noise and their attention
# maps say nothing about where the words are; what they show is the **structure and the
# shapes** of each family's record, which are the real ones. Set `MODEL` to a real SDXL,
# SD3 or Flux folder and that family's traced cells run on the real model instead (a
# CUDA GPU needed: SDXL is 3.5 B parameters, SD3-medium 7.7 B with T5, Flux-dev 17 B);
# sdviz-mini then stands in for Stable Diffusion.

# %% [markdown]
# ## Setup

# %%
# Setup — the only cell you need to edit. MODEL = None loads the embedded sdviz-mini model
# (or the one the SDVIZ_MODEL environment variable names): offline, a few MB, about a
# second per image on a laptop CPU. A hub id loads the real thing (online the first time;
# use a CUDA GPU: sdviz then picks float16 by itself), a path a local diffusers folder —
# here also an SDXL, SD3 or Flux folder, which then replaces that family's tiny pipeline:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# MODEL = "/models/stable-diffusion-3-medium-diffusers"
# %matplotlib inline
import sdviz.course

MODEL = None
lesson = sdviz.course.setup(MODEL)  # the pipeline; the steps, seed, prompt and guidance
pipe = lesson.pipe  # the diffusers pipeline of its family; the others are built below
lesson

# %% [markdown]
# ## 1. Four models from their published configs
#
# `sdviz.architectures` holds each model's published `config.json` files and builds the
# networks on the `meta` device, so every count below is the real model's, read from the
# real diffusers / transformers classes (a few seconds, no download). One row per fact,
# one column per model.

# %%
import torch

from sdviz.probes import families as fam

sdviz.course.table(
    fam.families_table(),
    title="The published architectures, built on the meta device",
    notes=[
        "B params: billions of parameters. Text tokens L: the token positions the denoiser's",
        "attention reads per prompt. Attention grid: the image positions each text-attention",
        "layer sees at the native size (a transformer sees 2x2 patches of the latent).",
        "Guidance: classifier-free (two denoiser branches per step) or distilled (one).",
    ],
)

# %% [markdown]
# Three things grew. The **text side**: from one 123 M-parameter CLIP to 0.8 B (SDXL)
# and about 5 B (SD3, Flux: T5-XXL's encoder alone is 4.76 B, more than SD3's own
# denoiser). The **denoiser**: 0.86 B → 2.6 B (SDXL's UNet) → 2.0 B (SD3-medium's
# transformer) → 11.9 B (Flux). The **latent**: 4 channels → 16 channels for SD3 and Flux,
# whose VAE keeps more detail per latent cell. The VAE itself stayed about 84 M
# parameters. Each text encoder in detail:

# %%
sdviz.course.table(
    fam.text_encoders_table(),
    title="Every text encoder of the four models",
    formats={"parameters (M)": ",.1f"},
    notes=[
        "parameters (M): millions; width d: the size of each token vector; tokens L: the",
        "padded length per prompt. Pooled: one vector for the whole prompt (CLIP's output",
        "at the end token, projected), added to the timestep embedding, not attended to.",
    ],
)

# %% [markdown]
# ## 2. What changed, and why
#
# **Bigger text encoders.** Imagen (Saharia et al. 2022) found that making the *text*
# encoder bigger improved how well images follow their prompts more than making the
# image model bigger, and used a frozen T5-XXL. SDXL adds OpenCLIP's ViT-bigG (CLIP-G)
# beside CLIP-L and joins their token vectors along the channels (768 + 1280 = 2048 per
# token); its pooled vector and the image's size and crop (`time_ids`) enter with the
# timestep. SD3 adds T5-XXL: its 256 tokens follow CLIP's 77 in one sequence of 333.
# Flux reads only T5's 512 tokens, and CLIP-L's pooled vector.
#
# **Joint attention (MMDiT, Esser et al. 2024).** In SD 1.5 the UNet's image positions
# *cross*-attend to fixed text vectors. SD3's transformer keeps two streams, text and
# image, each with its own weights, and runs **one** attention over both: every image
# token's softmax covers the text tokens *and* the image tokens, and the text tokens are
# updated block after block. The text → image part of that softmax is what sdviz records
# as per-word maps, as it did for cross-attention.
#
# **Flux's blocks.** Flux starts with 19 *double-stream* blocks (joint attention, two sets
# of weights, as SD3) and continues with 38 *single-stream* blocks, where text and image
# tokens are one sequence through shared weights. sdviz slices the text → image part out
# of both kinds.
#
# **Flow matching (rectified flow; Liu et al. 2022, Lipman et al. 2023).** Instead of
# DDPM's curved schedule, x_t moves on a straight line from the image to the noise:
# x_t = (1 − σ)·x0 + σ·ε, with σ from 1 (pure noise) to 0. The network predicts the
# **velocity** v = ε − x0 along that line, the sampler takes Euler steps
# x ← x + (σ_next − σ)·v, and the clean-image estimate of lesson 4 is x̂0 = x_t − σ·v.
# SD3 *shifts* σ towards the noisy end (shift 3): large images need more steps there.
#
# **Guidance distillation (Meng et al. 2023).** Classifier-free guidance (lesson 7) runs
# the denoiser twice per step. A guidance-distilled model was trained to produce the
# guided prediction in *one* call, with the scale g given as an input, embedded like the
# timestep. FLUX.1 [dev] is distilled: no unconditional branch, and g is an embedding.

# %% [markdown]
# ## 3. The four families traced alike
#
# `fam.trace_families` traces the lesson's prompt once per family: the loaded pipeline in
# its family's place, a tiny random pipeline for each other family (64 px), all with the
# lesson's steps and seed and each with its pipeline's own guidance scale.

# %%
families = fam.trace_families(pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed)
sdviz.course.table(
    fam.records_table(families),
    title="What each family's Run records",
    notes=[
        "token lists: one per tokenizer, L tokens each (padding included). Text sequence: the",
        "(tokens, width) the denoiser attends over. latents: x_t at every step and the end.",
        "Shapes are the traced pipelines' (tiny ones are small); the names are the real ones.",
    ],
)

# %%
sdviz.figures.filmstrip(
    families.images(),
    families.labels(),
    title="The four final images: random weights draw noise (the records are what matter)",
)

# %%
sd = families["stable-diffusion"]
xl = families["stable-diffusion-xl"]
sd3 = families["stable-diffusion-3"]
flux = families["flux"]
pipes = families.pipes

# %% [markdown]
# ## 4. SDXL: two text encoders, a pooled vector and the image's size
#
# The components diagram now has two CLIP boxes. Their token vectors are joined per
# token; what else enters is written beside t: the pooled vector and the size/crop ids.

# %%
sdviz.figures.components(pipes["stable-diffusion-xl"], xl)

# %%
sdviz.figures.tokens_and_embeddings(xl)

# %% [markdown]
# The joined sequence the UNet reads is the two encoders' token vectors side by side,
# checked here on the Run's own records:

# %%
joined = torch.cat([xl["text_encoder.prompt_embeds"], xl["text_encoder_2.prompt_embeds"]], -1)
print("CLIP-L tokens × width:", tuple(xl["text_encoder.prompt_embeds"].shape))
print("CLIP-G tokens × width:", tuple(xl["text_encoder_2.prompt_embeds"].shape))
print("the UNet's sequence:", tuple(xl["pipeline.prompt_embeds"].shape), "= both, joined:")
print(
    "  equal to torch.cat([CLIP-L, CLIP-G], -1):", torch.equal(joined, xl["pipeline.prompt_embeds"])
)
print(
    "pooled vector (enters with t, no attention map shows it):",
    tuple(xl["pipeline.pooled_prompt_embeds"].shape),
)
print("time_ids: original (h, w), crop top-left (y, x), target (h, w) in pixels:")
print("  ", xl["pipeline.add_time_ids"].int().tolist())

# %% [markdown]
# ## 5. SD3: three token lists, one sequence, joint attention
#
# SD3 tokenizes the prompt three times. The two CLIPs fill the same 77 rows (their
# vectors joined along channels and zero-padded to T5's width); T5's tokens follow.
# `attention.text_sequence` says which rows of the per-word maps come from which
# tokenizer.

# %%
sdviz.figures.components(pipes["stable-diffusion-3"], sd3)

# %%
sdviz.figures.tokens_and_embeddings(sd3)

# %%
print("rows of the text sequence per tokenizer (start, stop):", sd3["attention.text_sequence"])
print(
    "per-word joint-attention maps (steps, text tokens, h, w):", tuple(sd3["attention.maps"].shape)
)
print("joint-attention layers averaged into them:", sd3["attention.n_layers"])

# %% [markdown]
# The per-word maps of joint attention: for each word, the share of every image token's
# attention that goes to it, averaged over heads, blocks and steps (the softmax here is
# over the text tokens, as for cross-attention; `text_share=True` also records how much
# of the *full* text + image softmax goes to the text at all). The figure is lesson 7's
# (its title names what it shows: joint attention, image → text part): it reads
# `attention.maps` whatever attention
# filled them. With random weights the maps are patterns of an untrained network, about
# the same for every word; on a real SD3 each word's map finds its object.

# %%
sdviz.figures.cross_attention(sd3, ["red", "circle", "blue", "square"])

# %% [markdown]
# Storing every head of every block would not fit: the same maps for the real
# SD3-medium at its native 1024 px and 28 steps, averaged as sdviz does, against keeping
# them all.

# %%
maps = sdviz.architectures.attention_map_shapes("sd3-medium")
print(f"SD3-medium: {maps.steps} steps × {maps.tokens} text tokens × {maps.h}×{maps.w} patches")
print(f"  averaged per word: {maps.maps_bytes() / 2**20:,.1f} MiB (float32)")
print(f"  every head of all {maps.layers} blocks: {maps.every_head_bytes() / 2**30:,.1f} GiB")

# %% [markdown]
# ## 6. Flow matching: σ, the velocity and x̂0 = x_t − σ·v
#
# The schedule figure writes both kinds as x_t = a_t·x0 + b_t·ε over the same t (flow
# matching's t is 1000·σ). Diffusion's signal fraction a_t² is ᾱ_t; flow matching's is
# (1 − σ)². Its noise weight b_t is σ itself, a straight line, and its SNR
# ((1 − σ)/σ)² reaches **zero** at σ = 1: flow matching starts from pure noise, where
# SD's schedule stops at ᾱ > 0 (lesson 2). The markers show where each sampler steps:
# the shift crowds SD3's steps (shift 3) towards the noisy end.

# %%
sdviz.figures.noise_schedule(sd, xl, sd3, flux, labels=families.labels())

# %% [markdown]
# A flow-matching Run holds σ per step (`scheduler.step_sigma`) and the velocity
# (`denoiser.velocity`, after guidance), and no ᾱ. Its x̂0 is one line, checked here:

# %%
x_t = sd3["denoiser.latents"][:-1]  # (steps, c, h, w): the input of each step
sigma = sd3["scheduler.step_sigma"].reshape(-1, 1, 1, 1)
x0_by_hand = x_t - sigma * sd3["denoiser.velocity"]
print("σ of the first steps (1 = pure noise):", sd3["scheduler.step_sigma"][:6].numpy().round(3))
print("shift s:", float(sd3["scheduler.shift"]))
print(
    "max |x_t − σ·v − recorded x̂0|:",
    float((x0_by_hand - sd3["denoiser.pred_original_sample"]).abs().max()),
)
print(
    "keys with alpha_bar in this Run:",
    "scheduler.step_alpha_bar" in sd3,
    "(flow matching has none)",
)

# %% [markdown]
# ## 7. Flux: one branch, the guidance scale as an input
#
# The diagram of FLUX.1 [dev] itself, built on the meta device (the real shapes and
# parameter counts, no weights): CLIP gives only its pooled vector (dashed), T5's 512
# tokens are the text sequence, the guidance scale enters beside t, and the
# transformer's box lists its 19 double-stream and 38 single-stream blocks. The tiny
# Flux traced above has the same parts, 2 + 2 blocks and 64 px.

# %%
sdviz.figures.components(sdviz.architectures.architecture_pipeline("flux-dev", device="meta"))

# %%
print("SD3 ran an unconditional branch:", sd3["pipeline.do_classifier_free_guidance"], end="; ")
print("it recorded velocity_uncond:", "denoiser.velocity_uncond" in sd3)
print("Flux ran an unconditional branch:", flux["pipeline.do_classifier_free_guidance"], end="; ")
print("it recorded velocity_uncond:", "denoiser.velocity_uncond" in flux)
print(
    "Flux's guidance scale, given to the transformer as an input:", float(flux["denoiser.guidance"])
)
flux_dev = sdviz.architectures.meta_component("flux-dev", "transformer").config
print(
    "FLUX.1-dev: double-stream blocks:",
    flux_dev.num_layers,
    "| single-stream blocks:",
    flux_dev.num_single_layers,
)
print("  distilled guidance (guidance_embeds):", flux_dev.guidance_embeds)

# %% [markdown]
# Flux packs each 2×2 block of latent cells into one token (16 channels × 4 = 64); the
# Run unpacks them, so `denoiser.latents` and the maps have the image's layout like every
# other family:

# %%
print("Flux latents (steps+1, c, h, w):", tuple(flux["denoiser.latents"].shape))
print(
    "Flux per-word maps (steps, T5 tokens, h, w) on the 2×2 token grid:",
    tuple(flux["attention.maps"].shape),
)

# %% [markdown]
# ## 8. Train both designs on the same world: sdviz-mini vs sdviz-mini-flow
#
# Everything above compared the families from their configs and from *random* tiny
# pipelines. To compare the two **designs** themselves you need two models trained on
# the same data. sdviz ships two:
#
# | | sdviz-mini | sdviz-mini-flow |
# |---|---|---|
# | text encoder, VAE | its own CLIP and VAE | **the same files** (borrowed from sdviz-mini) |
# | denoiser | UNet with cross-attention (SD 1.x's design) | SD3's MMDiT transformer: 6 blocks, 4 heads × 32, 2×2 patches |
# | training | DDPM: predict the noise ε (lesson 3) | rectified flow: predict the velocity v = ε − x0 |
# | sampler | DDIM | Euler on σ (FlowMatchEulerDiscreteScheduler) |
# | data | ShapesWorld, 64 px | the same images and captions |
#
# Both were trained from scratch on a 2-core CPU in about two hours (`sdviz train`,
# `sdviz train --flow`). Only the denoiser and its training objective differ, so every
# difference below comes from the design, not from the data. Both models are tiny and
# know only ShapesWorld's words: what follows compares two small models, not SD 1.5 and
# SD3.

# %%
mini, flow = fam.embedded_twins()  # the two embedded models: UNet and MMDiT
print("UNet parameters (millions):", round(mini.unet.num_parameters() / 1e6, 2))
print("MMDiT transformer parameters (millions):", round(flow.transformer.num_parameters() / 1e6, 2))
print(
    "the same VAE weights:",
    torch.equal(mini.vae.decoder.conv_out.weight, flow.vae.decoder.conv_out.weight),
)
print(
    "recommended guidance scale g — UNet:",
    sdviz.pipeline.recommended(mini).guidance_scale,
    "| flow:",
    sdviz.pipeline.recommended(flow).guidance_scale,
)

# %% [markdown]
# ### One prompt, one seed, two denoisers
#
# With the same seed both pipelines draw **the same starting noise** (both latents are
# 4×16×16), so the two images differ only by what each denoiser does with it.

# %%
duel_prompt = "a red circle to the left of a blue square"
unet_run = sdviz.generate(mini, duel_prompt, seed=lesson.seed)
flow_run = sdviz.generate(flow, duel_prompt, seed=lesson.seed)
print(
    "same starting noise x_T:",
    torch.equal(unet_run["denoiser.latents"][0], flow_run["denoiser.latents"][0]),
)
print(
    "what each denoiser predicts:",
    unet_run["denoiser.prediction_type"],
    "(the noise ε) |",
    flow_run["denoiser.prediction_type"],
    "(the velocity v)",
)
sdviz.figures.filmstrip(
    torch.stack([unet_run["vae.image"], flow_run["vae.image"]]),
    ["sdviz-mini (UNet, DDIM)", "sdviz-mini-flow (MMDiT, flow)"],
    f"{duel_prompt!r}, seed {lesson.seed}, {lesson.steps} steps",
)

# %% [markdown]
# ### Is the flow's path straighter?
#
# Rectified flow trains the velocity of a *straight line* from the image to the noise.
# If the model had learned perfectly straight paths, its clean-image guess
# x̂0 = x_t − σ·v (section 6) would be the same at every step, and one step would be
# enough. The UNet guesses x̂0 every step too (lesson 4). So watch how far x̂0 moves:
# `measure_straightness` runs a few prompts and seeds through both models at several
# step counts and measures, relative to the size of the final x̂0,
#
# - the **distance to the final x̂0** at each step, and
# - the **path length**: all of x̂0's step-to-step moves added up (0 = a perfectly
#   straight path), and
# - the **gap to 25 steps**: how far the result of a 4- or 8-step run lands from the
#   same prompt and seed sampled with 25 steps: what taking fewer steps costs.
#
# Both samplers take their last step at almost no noise (DDIM at t = 1, the flow at
# σ = 0.001), where x̂0 is simply where the step before landed: the curves end at 0 by
# construction, and a 2-step run would have no real move to measure, so the table starts
# at 4 steps.

# %%
paths = sdviz.probes.measure_straightness(
    {"sdviz-mini (UNet)": mini, "sdviz-mini-flow (MMDiT)": flow}, steps=[4, 8, 25]
)
sdviz.figures.path_straightness(paths)

# %%
sdviz.course.table(
    paths.table(),
    title="x̂0's path, mean over the prompts and seeds",
    formats={
        "sdviz-mini (UNet): path length": ".3f",
        "sdviz-mini (UNet): first guess": ".3f",
        "sdviz-mini (UNet): gap to 25 steps": ".3f",
        "sdviz-mini-flow (MMDiT): path length": ".3f",
        "sdviz-mini-flow (MMDiT): first guess": ".3f",
        "sdviz-mini-flow (MMDiT): gap to 25 steps": ".3f",
    },
    notes=[
        "path length: Σ‖x̂0_s − x̂0_s−1‖ / ‖x̂0_final‖ over the steps (0: x̂0 never moved).",
        "first guess: ‖x̂0_first − x̂0_final‖ / ‖x̂0_final‖, how far the one-step answer is from the last.",
        "gap to 25 steps: ‖final x̂0 with S steps − with 25 steps‖ / ‖with 25 steps‖ (0 at 25 steps).",
    ],
)

# %% [markdown]
# Read the table. The flow's x̂0 travels a little less (path length 1.21 against the
# UNet's 1.28 at 25 steps, 0.91 against 1.02 at 8), and a 4-step run lands nearer its own
# 25-step answer (gap 0.47 against 0.63); but at 8 steps the UNet is the nearer (0.17
# against 0.22), and both first guesses are about as far from the final x̂0 (0.60 and
# 0.66 at 25 steps). **One round of rectified flow does not give straight paths**: the
# network learns the *average* velocity over every image that could lie behind a noisy
# x_t, and that average bends (Liu et al. 2022 straighten it with a second "reflow"
# round, which was not done here). The strips agree: in both rows the first guess is a
# blur of the right colours in the right places, and the layout is settled by step 3.

# %% [markdown]
# ### Fewer steps: pictures and the benchmark
#
# A straighter path should survive fewer steps. The same prompt and seed at 2, 4 and 25
# steps, UNet in the first three images, flow in the last three:

# %%
sdviz.figures.filmstrip(
    torch.stack(
        [
            sdviz.generate(mini, duel_prompt, steps=2, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            sdviz.generate(mini, duel_prompt, steps=4, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            unet_run["vae.image"],
            sdviz.generate(flow, duel_prompt, steps=2, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            sdviz.generate(flow, duel_prompt, steps=4, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            flow_run["vae.image"],
        ]
    ),
    [
        "UNet, 2 steps",
        "UNet, 4 steps",
        f"UNet, {lesson.steps} steps",
        "flow, 2 steps",
        "flow, 4 steps",
        f"flow, {lesson.steps} steps",
    ],
    "Fewer steps, same prompt and seed",
)

# %% [markdown]
# One image proves little. Scored from the pixels over 96 one-object and 96 two-object
# prompts and seeds (the ShapesWorld scorer of lesson 8: is the largest object the named
# one, are both named objects there, on the named sides?), at 25 steps and each model's
# measured guidance (the model cards, `benchmarks/mini_quality.py`):
#
# | | sdviz-mini (UNet) | sdviz-mini-flow (MMDiT) |
# |---|---|---|
# | guidance g (measured for each) | 2 | 1.5 |
# | one object right | 96.9% | 92.7% |
# | … a colour-shape pair never shown in training | 100% | 58.3% |
# | two objects both right | 84.4% | 89.6% |
# | left/right placement right | 84.4% | 89.6% |
# | seconds per image (25 steps, one CPU thread) | 0.73 | 0.52 |
# | two objects both right with 4 / 8 / 16 steps | 44.8 / 70.8 / 82.3% | 78.1 / 88.5 / 89.6% |
#
# The transformer places two objects better and is faster per image; the UNet draws the
# unseen colour-shape pairs far more often. And the flow needs fewer steps: it reaches its
# 25-step quality at 8 steps, while the UNet is still improving at 16
# (`python benchmarks/flow_vs_unet.py`, `benchmarks/results/2026-12-07-flow-vs-unet-cpu.txt`).

# %% [markdown]
# ### Where each word lands: cross-attention vs joint attention
#
# The UNet's pixels *cross*-attend to the 77 token vectors of CLIP; the transformer's
# image tokens attend to the text and to each other in **one** joint attention, over 24
# text positions (sdviz-mini-flow's tokenizer is cut at 24: its captions are shorter).
# sdviz records the text → image part of joint attention as the same per-word maps, so
# the two can sit side by side: each row is one model, the same prompt, the same seed.
# The UNet's maps are on its 16×16 latent grid, the transformer's on its 8×8 grid of
# 2×2 patches, both drawn over the 64 px image. Each row has its own colour scale.

# %%
sdviz.figures.attention_side_by_side(
    {"sdviz-mini (UNet)": unet_run, "sdviz-mini-flow (MMDiT)": flow_run},
    ["red", "circle", "blue", "square"],
)

# %% [markdown]
# In both rows the nouns find their objects: "circle" lights the circle, "square" the
# square. The colour words are flat in both, as lesson 7 measured for the UNet: in a causal
# text encoder "red" comes before "circle" and cannot know which object it colours. The
# transformer's maps are coarser (one value per 2×2 patch: 8×8 over the picture, against
# the UNet's 16×16 in its finest layers), and each row has its own colour scale.

# %% [markdown]
# **What these small models cannot show.** Both models are a few million parameters
# trained for two hours on 64-px pictures of coloured shapes, at 4×16×16 latents: a
# 2×2 patch is 8×8 pixels, so the transformer's maps are coarse. Their straightness
# and step counts say how *these* two models behave; SD3 was also trained on far more
# data, with T5 beside CLIP, and is usually sampled at 28 steps with shift 3. The
# comparison is fair in one way only: same world, same VAE, same text encoder, same
# hardware and hours — only the denoiser's design and objective differ.

# %% [markdown]
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** SD3-medium's transformer reads 333 text tokens. Which tokenizers do they come
# from, and why not 77 + 77 + 256?

# %%
sd3_facts = sdviz.architectures.architecture_facts("sd3-medium")
print("text tokens the denoiser reads:", sd3_facts.text_tokens)
print(
    "CLIP-L:",
    sd3_facts.text_encoders[0].tokens,
    "| CLIP-G:",
    sd3_facts.text_encoders[1].tokens,
    "(same rows, joined along channels)",
    "| T5:",
    sd3_facts.text_encoders[2].tokens,
)

# %% [markdown]
# **2.** At SD3's last step the scheduler steps to σ = 0. What is the final latent then,
# compared with that step's x̂0?

# %%
print(
    "σ at the last step:",
    round(float(sd3["scheduler.step_sigma"][-1]), 4),
    "→ next σ:",
    float(sd3["scheduler.sigmas"][-1]),
)
print(
    "final latents equal the last x̂0:",
    torch.allclose(
        sd3["denoiser.latents"][-1], sd3["denoiser.pred_original_sample"][-1], atol=1e-5
    ),
)

# %% [markdown]
# **3.** How many denoiser branches does each family run per step? (Two: the
# unconditional and the text branch of classifier-free guidance, batched in one call.)

# %%
sdviz.course.table(
    {
        "family": ["SD", "SDXL", "SD3", "Flux"],
        "branches per step (2: unconditional + text)": [
            1 + int(sd["pipeline.do_classifier_free_guidance"]),
            1 + int(xl["pipeline.do_classifier_free_guidance"]),
            1 + int(sd3["pipeline.do_classifier_free_guidance"]),
            1 + int(flux["pipeline.do_classifier_free_guidance"]),
        ],
    }
)

# %% [markdown]
# ## Recap
#
# - The article's three parts hold from SD 1.5 to Flux; inside them, text encoders grew
#   from one CLIP (123 M) to CLIP + T5-XXL (about 5 B), the denoiser from a 0.86 B UNet
#   to transformers of 2 B (SD3-medium) and 11.9 B (Flux-dev), the latent from 4 to 16
#   channels.
# - SDXL joins two CLIPs per token and adds a pooled vector and size/crop ids beside t:
#   information no attention map shows.
# - SD3 joins CLIP's 77 tokens and T5's 256 in one sequence and attends over text and
#   image together (joint attention); sdviz records its text → image part per word.
# - Flow matching moves x_t on a straight line: σ per step, a velocity v, and
#   x̂0 = x_t − σ·v; it starts from pure noise (SNR 0), and the shift puts steps where
#   the noise is.
# - Flux is guidance-distilled: one denoiser call per step, g given as an input.
# - sdviz-mini-flow is sdviz-mini with SD3's denoiser trained by rectified flow on the
#   same world, VAE and CLIP: it places two objects better (89.6% against 84.4%), draws
#   unseen colour-shape pairs worse (58% against 100%), and its paths are only a little
#   straighter.
# - The tiny pipelines have random weights: they show the records' structure and
#   shapes, not pictures. With `MODEL` set to a real folder, its family's cells run on it.
#
# ### Exercises
#
# 1. Build a Flux without the guidance embedding (as FLUX.1 [schnell]):
#    `sdviz.builder.tiny_flux_pipeline(guidance_embeds=False)`, trace it at 64 px
#    (`height=width=sdviz.builder.TINY_RESOLUTION`) and compare `sorted(run.keys())` with
#    `sorted(flux.keys())`: which record is gone, and why?
# 2. Draw `sdviz.figures.noise_schedule(pipes["stable-diffusion-3"], steps=28)` and
#    `sdviz.figures.noise_schedule(pipes["flux"], steps=28)`: where does Flux's dynamic
#    shift put its steps at 1024 px, compared with SD3's fixed shift 3?
# 3. Print `sdviz.architectures.architecture_facts("sdxl")` and find the number of
#    cross-attention layers (70) and where the image positions are: why does SDXL's
#    per-word map memory exceed SD3-medium's although its text is shorter?
