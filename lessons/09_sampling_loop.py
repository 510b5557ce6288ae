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
# # Lesson 9 — Write the sampling loop yourself
#
# *Best taken right after lesson 4.* Until now every image came from one call,
# `pipe(prompt)` or `sdviz.generate`. Here you write that call out yourself, in about
# fifteen lines of plain `diffusers` and `transformers` calls, exactly the pipeline the
# article draws:
#
# 1. the **tokenizer** turns the prompt (and an empty prompt) into token ids;
# 2. the **text encoder** turns the ids into token vectors;
# 3. the **scheduler** picks the timesteps to visit;
# 4. the starting **latents** are seeded Gaussian noise;
# 5. for each timestep t the **UNet** predicts the noise, **classifier-free guidance**
#    mixes its two predictions, and the scheduler takes one step;
# 6. the **VAE decoder** paints the final latents.
#
# Then you check that your loop gives *the very same image* as `pipe(...)`, bit for bit,
# and change one thing at a time — the steps, the scheduler, the guidance scale, the
# prompt — to see what each does. This is the one lesson that writes a `for` loop: the
# loop is the subject.

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
# ## The settings
#
# Five numbers and words decide the image: the prompt, the number of denoising steps, the
# guidance scale g, the seed of the starting noise, and the scheduler (the pipeline's own,
# DDIM for sdviz-mini). We take them from the lesson's setup.

# %%
import torch

prompt, steps, guidance, seed = lesson.prompt, lesson.steps, lesson.guidance, lesson.seed
scheduler = pipe.scheduler
tokenizer = pipe.tokenizer
print(f"prompt {prompt!r}, {steps} steps, guidance g = {guidance}, seed {seed}")
print("scheduler:", type(scheduler).__name__)

# %% [markdown]
# ## 1. Tokenizer: text → token ids
#
# Classifier-free guidance (lesson 7) runs the UNet twice per step: once with the prompt
# and once with the **empty prompt** `""`, the unconditional branch. So we tokenize both.
# Each is padded to the length the text encoder was trained on; that length belongs to
# the tokenizer (`tokenizer.model_max_length`: 77 for Stable Diffusion and for sdviz-mini).

# %%
ids = tokenizer(
    ["", prompt],
    padding="max_length",
    max_length=tokenizer.model_max_length,
    truncation=True,
    return_tensors="pt",
).input_ids  # (2, L): row 0 the empty prompt, row 1 ours
print("token ids:", tuple(ids.shape), "= (2 prompts, L tokens each)")
print("row 0, first 4 ids:", ids[0, :4].tolist(), "(start, end, then padding)")
print("row 1, first 12 ids:", ids[1, :12].tolist())

# %% [markdown]
# ## 2. Text encoder: token ids → token vectors
#
# One call per prompt, as the pipeline does (`encode_prompt`). `last_hidden_state` holds
# one vector per token; the two are stacked in the order **[unconditional, text]** — the
# order the pipeline uses, and the order the UNet's output will be split in below.
# `torch.no_grad()`: we only run the networks, we do not train them.

# %%
with torch.no_grad():
    uncond = pipe.text_encoder(ids[:1].to(pipe.device)).last_hidden_state
    text = pipe.text_encoder(ids[1:].to(pipe.device)).last_hidden_state
embeddings = torch.cat([uncond, text])  # (2, L, d)
print("token vectors:", tuple(embeddings.shape), "= (2 prompts, L tokens, d numbers each)")

# %% [markdown]
# ## 3. The timesteps
#
# The UNet was trained on 1,000 noise levels; a sampler visits only `steps` of them.
# `set_timesteps` picks which (lesson 4 drew them on the schedule). It comes before the
# noise, as in the pipeline: some schedulers size the starting noise by the first
# timestep they will visit.

# %%
scheduler.set_timesteps(steps, device=pipe.device)
print(f"{len(scheduler.timesteps)} timesteps, from noisiest to cleanest:")
print(scheduler.timesteps.tolist())

# %% [markdown]
# ## 4. The starting latents: seeded noise
#
# Generation starts from Gaussian noise in latent space. Its shape comes from the models'
# configurations: the UNet's number of input channels and its native latent size
# (`sample_size`; the image is `pipe.vae_scale_factor` times larger). A `torch.Generator`
# seeded with `seed` makes the noise — and so the image — reproducible. The scheduler may
# want the noise wider than one standard deviation: `init_noise_sigma` says by how much
# (1 for DDIM; schedulers that count noise in σ, such as Euler, start wider, by an amount
# that depends on the first timestep — which is why `set_timesteps` came first).
#
# *Before you run the cell: what shape will `latents` have?*

# %%
shape = (
    1,
    pipe.unet.config.in_channels,
    pipe.unet.config.sample_size,
    pipe.unet.config.sample_size,
)
generator = torch.Generator(pipe.device).manual_seed(seed)
latents = torch.randn(shape, generator=generator, device=pipe.device, dtype=embeddings.dtype)
latents = latents * scheduler.init_noise_sigma
print("latents:", tuple(latents.shape), "= (1 image, channels, height, width) in latent cells")
print(
    f"the image will be {pipe.vae_scale_factor} × {tuple(latents.shape[2:])} = "
    f"{pipe.vae_scale_factor * latents.shape[2]} × {pipe.vae_scale_factor * latents.shape[3]} pixels"
)
print(f"init_noise_sigma = {float(scheduler.init_noise_sigma)}: the noise's standard deviation")

# %% [markdown]
# ## 5. The loop
#
# Here it is — the heart of Stable Diffusion, four lines per step:
#
# - `scale_model_input` scales x_t as the scheduler's UNet expects (DDIM: unchanged;
#   Euler: divided by √(σ²+1));
# - the **UNet** runs once on a batch of two copies of the latents, the first read with
#   the empty prompt's vectors, the second with ours, and predicts the noise in each;
# - **classifier-free guidance**: ε̂ = ε̂_uncond + g · (ε̂_text − ε̂_uncond), a step from
#   "any picture" towards "this prompt's picture", g times as long;
# - the **scheduler** turns that noise prediction into the next, less noisy latent.

# %%
with torch.no_grad():
    for t in scheduler.timesteps:
        latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2, c, h, w)
        noise_uncond, noise_text = pipe.unet(
            latent_input, t, encoder_hidden_states=embeddings
        ).sample.chunk(2)
        noise = noise_uncond + guidance * (noise_text - noise_uncond)  # classifier-free guidance
        latents = scheduler.step(noise, t, latents).prev_sample  # x_t → the next, cleaner x
print("final latents:", tuple(latents.shape))

# %% [markdown]
# ## 6. The decoder: latents → pixels
#
# The UNet works on latents multiplied by the VAE's `scaling_factor` (0.18215 for SD;
# lesson 5), so we divide it out before decoding. The decoder paints values in [−1, 1];
# `/ 2 + 0.5` maps them to [0, 1], the range an image is shown in.

# %%
with torch.no_grad():
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
image = (image / 2 + 0.5).clamp(0, 1)  # (1, 3, H, W) in [0, 1]
print("image:", tuple(image.shape), "= (1 image, 3 colours, height, width)")

# %% [markdown]
# ## Is it the pipeline's image?
#
# Now the pipeline, with the same settings and a generator seeded the same way.
# `output_type="pt"` asks for the decoded tensor in [0, 1]; the default, a PIL image,
# would round every value to 8 bits first. `torch.equal` is True only when every single
# number is identical — not close, *equal*.

# %%
reference = pipe(
    prompt,
    num_inference_steps=steps,
    guidance_scale=guidance,
    generator=torch.Generator(pipe.device).manual_seed(seed),
    output_type="pt",
).images  # (1, 3, H, W) in [0, 1]
print("torch.equal(image, reference):", torch.equal(image, reference))
print(f"(True: all {image.numel():,} numbers of the two images are the same)")
print(
    "largest |difference|:",
    float((image - reference).abs().max()),
    "(pixel values lie in [0, 1]; one step of an 8-bit colour is 1/255 ≈ 0.004)",
)
sdviz.figures.filmstrip(torch.cat([image, reference]), ["your loop", "pipe(...)"])

# %% [markdown]
# Bit for bit. Nothing else happens inside `pipe(...)` that changes the picture: the rest
# of its `__call__` checks the inputs, picks the device, shows a progress bar, calls
# callbacks and handles options not used here (a negative prompt, guidance rescale,
# IP-Adapter images, a safety checker, which sdviz does not load). Equality needs the same
# operations, in the same order, on the same numbers:
#
# - the **same noise**: a generator on the same device with the same seed (a CPU and a
#   CUDA generator draw different numbers from one seed), in the same dtype, times
#   `init_noise_sigma`;
# - the **same text vectors**: one text-encoder call per prompt, padded to
#   `model_max_length`, in the order [unconditional, text];
# - the **same arithmetic**: the guidance formula as written, the scheduler's `step`;
# - the **same output**: the decoded tensor, not an 8-bit PIL image.
#
# Swap any of them — another seed, another g, the batch in the order [text,
# unconditional] — and `torch.equal` says False.

# %% [markdown]
# ## Change one thing
#
# Here is the whole loop once more, in one cell: the lines of steps 1–6 again, run once
# for each change below. Each change alters one setting; the first alters nothing, and
# must reproduce the image above. (The names `prompt`, `steps`, `scheduler` and `guidance`
# take each change's values in turn; the lesson's own settings stay in `lesson`.)
#
# - **fewer steps**: 5 instead of the lesson's steps;
# - **another scheduler**: Euler, built from the model's own scheduler config (the same
#   training schedule, a different solver; lesson 4);
# - **guidance 1**: ε̂ = ε̂_text, no push away from the unconditional prediction;
# - **guidance 7.5**: Stable Diffusion's usual scale (with SD loaded, the lesson's own);
# - **another prompt**.

# %%
import diffusers

euler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
other_prompt = "a small yellow star at the top"
changes = [  # (what changed, prompt, steps, scheduler, guidance)
    ("nothing", lesson.prompt, lesson.steps, pipe.scheduler, lesson.guidance),
    ("5 steps", lesson.prompt, 5, pipe.scheduler, lesson.guidance),
    ("Euler scheduler", lesson.prompt, lesson.steps, euler, lesson.guidance),
    ("guidance 1", lesson.prompt, lesson.steps, pipe.scheduler, 1.0),
    ("guidance 7.5", lesson.prompt, lesson.steps, pipe.scheduler, 7.5),
    ("another prompt", other_prompt, lesson.steps, pipe.scheduler, lesson.guidance),
]
images = {}
with torch.no_grad():
    for change, prompt, steps, scheduler, guidance in changes:
        ids = tokenizer(
            ["", prompt],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        uncond = pipe.text_encoder(ids[:1].to(pipe.device)).last_hidden_state
        text = pipe.text_encoder(ids[1:].to(pipe.device)).last_hidden_state
        embeddings = torch.cat([uncond, text])
        generator = torch.Generator(pipe.device).manual_seed(seed)
        scheduler.set_timesteps(steps, device=pipe.device)
        latents = torch.randn(
            shape, generator=generator, device=pipe.device, dtype=embeddings.dtype
        )
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_uncond, noise_text = pipe.unet(
                latent_input, t, encoder_hidden_states=embeddings
            ).sample.chunk(2)
            noise = noise_uncond + guidance * (noise_text - noise_uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        images[change] = (decoded / 2 + 0.5).clamp(0, 1)
print("unchanged settings reproduce the image above:", torch.equal(images["nothing"], reference))

# %% [markdown]
# ### Fewer steps
#
# The same noise, walked down in 5 steps instead of the lesson's: each step has to remove
# far more noise at once, and each of the scheduler's steps is only an approximation, so
# the error grows. It is not only the details that change: the first, biggest steps are
# where the layout is decided (lesson 4), and a coarser walk from the same noise can end
# at another layout.

# %%
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["5 steps"]]),
    [f"{lesson.steps} steps", "5 steps"],
)

# %% [markdown]
# ### Another scheduler
#
# Euler solves the same denoising process as an ODE in σ: its noise starts
# `init_noise_sigma` times wider and `scale_model_input` shrinks the UNet's input back —
# the two lines of the loop that did nothing for DDIM now matter. Same model, same noise, a
# different path: a similar picture, not the same one. And your loop, with Euler in it, is
# still the pipeline's: `sdviz.schedulers.using_scheduler` puts the same Euler into `pipe`
# for a `with` block.

# %%
print(
    f"init_noise_sigma: Euler {float(euler.init_noise_sigma):.2f},",
    f"{type(pipe.scheduler).__name__} {float(pipe.scheduler.init_noise_sigma)}",
)
with sdviz.schedulers.using_scheduler(pipe, "euler"):
    reference_euler = pipe(
        lesson.prompt,
        num_inference_steps=lesson.steps,
        guidance_scale=lesson.guidance,
        generator=torch.Generator(pipe.device).manual_seed(lesson.seed),
        output_type="pt",
    ).images
print(
    "your Euler loop equals pipe(...) with Euler:",
    torch.equal(images["Euler scheduler"], reference_euler),
)
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["Euler scheduler"]]),
    [type(pipe.scheduler).__name__, "EulerDiscreteScheduler"],
)

# %% [markdown]
# ### The guidance scale
#
# At g = 1 the formula gives ε̂_text: the model's plain conditional prediction, with no
# push away from "any picture". Larger g pushes harder towards the prompt. One easy prompt
# cannot show what that buys — lesson 7 measures it over many prompts — but it shows the
# cost: at 7.5 the colours overshoot, with darker rims and a tinted background.

# %%
sdviz.figures.filmstrip(
    torch.cat([images["guidance 1"], images["nothing"], images["guidance 7.5"]]),
    ["g = 1", f"g = {lesson.guidance} (the model's choice)", "g = 7.5"],
)

# %% [markdown]
# ### Another prompt
#
# Same noise, same steps, other token vectors: the UNet steers the same noise to another
# picture. Only the text encoder's output changed.

# %%
print("the lesson's prompt:", repr(lesson.prompt), "— another prompt:", repr(other_prompt))
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["another prompt"]]),
    ["the lesson's prompt", "another prompt"],
)

# %% [markdown]
# ## Check yourself
#
# Answer each question first, then run the cell under it.
#
# **1.** Inside the loop, what shape does the UNet's input have, and why is its first
# dimension 2? What shape does the guided noise `noise` have?

# %%
print("UNet input:", tuple(latent_input.shape), "— guided noise:", tuple(noise.shape))

# %% [markdown]
# **2.** How many UNet calls did one image take at the lesson's settings, and did each
# call run both branches? And is the image of `sdviz.generate` — the traced runs of
# lessons 1–8 — the same as yours? (A trace records the UNet's outputs at every step.)

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("UNet calls recorded:", run["denoiser.noise_pred_text"].shape[0])
print("both branches in each call:", run["pipeline.do_classifier_free_guidance"])
print("sdviz.generate's image equals your loop's:", torch.equal(run["vae.image"], image[0]))

# %% [markdown]
# **3.** Two lines of the loop change nothing for DDIM (sdviz-mini's scheduler; SD 1.5's
# PNDM too): which? Do they change anything for Euler? (True below: the line gives back
# exactly what it got.)

# %%
x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
euler.set_timesteps(lesson.steps)
print(f"the pipeline's scheduler: {type(pipe.scheduler).__name__}")
print("init_noise_sigma     it:", float(pipe.scheduler.init_noise_sigma), end="   ")
print("Euler:", round(float(euler.init_noise_sigma), 2))
print(
    "scale_model_input    it:",
    torch.equal(pipe.scheduler.scale_model_input(x, pipe.scheduler.timesteps[0]), x),
    end="  ",
)
print("Euler:", torch.equal(euler.scale_model_input(x, euler.timesteps[0]), x))

# %% [markdown]
# ## Recap
#
# - `pipe(prompt)` is about fifteen lines: tokenize `""` and the prompt, encode them,
#   draw seeded noise times `init_noise_sigma`, and for each timestep run the UNet on
#   [unconditional, text], mix with ε̂_u + g·(ε̂_t − ε̂_u) and take a scheduler step; then
#   decode `latents / scaling_factor`.
# - Written with the same operations in the same order, the loop reproduces the pipeline
#   bit for bit; `torch.equal` checks it.
# - Every setting is one line of the loop: steps (`set_timesteps`), scheduler (the object
#   the loop calls), guidance (the formula), prompt (the token vectors), seed (the noise).
#
# ### Exercises
#
# 1. A **negative prompt** replaces `""` in the tokenizer call. Put `"blue"` there and
#    compare with `pipe(..., negative_prompt="blue", output_type="pt")`: still equal?
#    How far did the image move from the one without a negative prompt?
# 2. `scheduler.step(...)` also returns `pred_original_sample`, the x̂0 of lesson 4. Keep
#    it at every step and draw the list with `sdviz.figures.filmstrip` (decode each with
#    the VAE first).
# 3. Use `diffusers.EulerAncestralDiscreteScheduler`: it adds fresh noise at each step.
#    What must you pass to `scheduler.step` for your loop to match `pipe(...)` again?
