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
# # Lesson 4 — Painting by removing noise
#
# Lesson 3 trained a network to look at a noisy latent and say which noise is in it. Now we
# run it **backwards**, as *"The Illustrated Stable Diffusion"* pictures it: start from
# noise: a random latent x_T, drawn as if it were pure noise although, as lesson 2
# measured, the first sampled timestep still keeps a little signal (ᾱ > 0). At each step the
# UNet predicts the noise, and the **scheduler** subtracts a portion of it, giving a
# slightly cleaner latent. After a few dozen steps a picture is left.
#
# Two quantities make each step easy to see:
#
# - **x_t**, the current noisy latent (what the UNet sees);
# - **x̂0**, the clean latent the UNet's noise prediction implies:
#   $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$ — the
#   forward formula of lesson 2 solved for x_0. It is the model's current guess of the
#   final picture; the scheduler moves x_t towards it (DDIM, Song et al. 2021, does exactly
#   that).

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
# ## One generation, traced
#
# `sdviz.generate` records every step: the latents going in, the noise predicted, the
# x̂0 implied, the timestep and its ᾱ_t. Steps are counted from 0, as Python indexes
# them: step k is `run["denoiser.latents"][k]`, in the tables, the figures and the explorer
# alike.

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("scheduler:", run["scheduler.name"])
sdviz.course.table(
    {
        "step": range(run.n_steps),
        "t (timestep)": run["scheduler.step_timestep"].int(),
        "ᾱ_t (signal share)": run["scheduler.step_alpha_bar"],
    },
    formats={"ᾱ_t (signal share)": ".3f"},
    notes="step: counted from 0 (step k is run[...][k]); even the first step's ᾱ_t is above 0",
)

# %% [markdown]
# The film strip shows a few steps in three rows:
#
# - **x_t, linear preview**: the latent drawn one pixel per latent position by a linear map
#   from its channels to RGB (least squares, fitted on the run's final image);
# - **x_t, VAE-decoded**: the same latent through the VAE's decoder;
# - **x̂0, VAE-decoded**: the model's current guess of the final picture.
#
# (`sdviz.probes.step_images` decodes them with the VAE; the figure draws.)

# %%
images = sdviz.probes.step_images(run, pipe)
sdviz.figures.denoising_filmstrip(run, images=images)

# %% [markdown]
# Early on x_t is noise, and the preview shows it as noise, while x̂0 already holds a
# blurry guess of the layout; later the guess sharpens and x_t converges to it. The decoded
# x_t row tells another story: pale background with purple shards at first, and — with
# sdviz-mini — a red circle drawn **green** for a while before it turns red. Lesson 2
# explained both: a decoder trained only on ShapesWorld draws anything, noise included, in
# ShapesWorld's vocabulary, and it draws a *shrunk* latent (x_t holds √ᾱ_t of the picture)
# in another colour. The UNet never sees those pictures; it sees the latent, which the
# preview shows more honestly. Measured on this run's pictures:

# %%
k = lesson.steps // 2  # a middle step
sdviz.course.table(
    sdviz.probes.colour_statistics(
        {
            "x_t decoded, step 0": images.latents[[0]],
            f"x_t decoded, step {k}": images.latents[[k]],
            f"x̂0 decoded, step {k}": images.pred_original_sample[[k]],
            "final image": run["vae.image"][None],
        },
        sdviz.shapes.COLOURS,
    ),
    formats=sdviz.probes.images.COLOUR_FORMATS,
    notes=sdviz.probes.images.colour_notes(),
)

# %% [markdown]
# ## Explore every step
#
# Move the slider (or press play). All panels show the same step (counted from 0, as in the
# table): x_t through the linear preview and decoded by the VAE, x̂0 decoded, the predicted
# noise in latent space (one tile per latent channel), where each word of the prompt is
# attended to (lesson 7), and where the step sits on the noise schedule.
# Nothing is recomputed: the widget reads the recorded run.

# %%
sdviz.widgets.DenoisingExplorer(run, pipe)

# %% [markdown]
# ## One step by hand
#
# `sdviz.denoise_step` performs a single step — one UNet call with guidance, one scheduler
# update — on any latent you give it. Feed it the recorded x_t of a middle step: it should
# reproduce what the pipeline did at that step. (Lesson 9, `09_sampling_loop.py`, opens it
# up: you write the whole loop — tokenizer, text encoder, UNet on [unconditional, text],
# guidance, `scheduler.step`, decode — in plain diffusers calls, and match `pipe(...)`.)

# %%
x_t, t = run["denoiser.latents"][k], int(run["scheduler.step_timestep"][k])
step = sdviz.denoise_step(
    pipe,
    x_t,
    t,
    lesson.prompt,
    guidance_scale=run["pipeline.guidance_scale"],
    num_inference_steps=lesson.steps,
)
print(f"step {k}: t = {t} → next t = {step['prev_t']}")
print(
    "noise prediction, largest difference to the run:",
    float((step["noise_pred"] - run["denoiser.noise_pred"][k]).abs().max()),
)
print(
    "next latent,      largest difference to the run:",
    float((step["prev_sample"] - run["denoiser.latents"][k + 1]).abs().max()),
)

# %% [markdown]
# And x̂0 really is the forward formula solved for x_0:

# %%
abar = run["scheduler.step_alpha_bar"][k]
x0_by_hand = (x_t - (1 - abar).sqrt() * run["denoiser.noise_pred"][k]) / abar.sqrt()
print(
    "x̂0 by hand vs the run's, largest difference:",
    float((x0_by_hand - run["denoiser.pred_original_sample"][k]).abs().max()),
)

# %% [markdown]
# ## What each step removes
#
# How far is each step from the final result? Measure the distance of x_t, and of the
# UNet's guess x̂0, to the final latent:

# %%
latents, x0_hat = run["denoiser.latents"], run["denoiser.pred_original_sample"]
final = latents[-1]
sdviz.course.table(
    {
        "step": range(run.n_steps),
        "t": run["scheduler.step_timestep"].int(),
        "‖x_t − final‖": (latents[:-1] - final).flatten(1).norm(dim=1),
        "‖x̂0 − final‖": (x0_hat - final).flatten(1).norm(dim=1),
    },
    formats={"‖x_t − final‖": ".1f", "‖x̂0 − final‖": ".1f"},
    notes=f"‖·‖: Euclidean distance in latent space; the final latent's own ‖final‖ = {float(final.norm()):.1f}",
)

# %% [markdown]
# x_t approaches the result steadily, one slice of noise per step. x̂0 gets close much
# sooner: the composition — which shapes, which colours, where — is settled in the first
# steps, and the later steps mostly remove the remaining noise and refine details.

# %% [markdown]
# ## Schedulers compared
#
# The UNet is the same; the **scheduler** decides how to turn its noise predictions into
# the next latent and which timesteps to visit. DDIM steps deterministically towards x̂0;
# Euler integrates the same process as an ordinary differential equation in σ; DPM-Solver++
# uses a higher-order solver and gets away with fewer steps. All three use the model's ᾱ_t:
# it belongs to the training, not to the sampler, so the figure draws one curve for the
# three. What differs is where each one steps (right panel) — with these settings DDIM and
# Euler visit the very same timesteps:

# %%
sdviz.figures.noise_schedule(
    pipe, "euler", "dpm++", steps=[lesson.steps, lesson.steps, lesson.steps // 2]
)

# %% [markdown]
# Swap the scheduler for the length of a `with` block (`sdviz.schedulers.using_scheduler`
# builds it from the model's own schedule, and puts the old one back afterwards, even if
# the block fails), keep the seed, and generate again — DPM-Solver++ with half the steps:

# %%
with sdviz.schedulers.using_scheduler(pipe, "euler"):
    run_euler = sdviz.generate(
        pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
    )
with sdviz.schedulers.using_scheduler(pipe, "dpm++"):
    run_dpm = sdviz.generate(
        pipe,
        lesson.prompt,
        steps=lesson.steps // 2,
        seed=lesson.seed,
        guidance_scale=lesson.guidance,
    )
print("after the with-blocks the pipeline samples with", type(pipe.scheduler).__name__, "again")
difference = f"mean |difference| to the {run['scheduler.name']} image"
sdviz.course.table(
    {
        "scheduler": [run_euler["scheduler.name"], run_dpm["scheduler.name"]],
        "steps": [run_euler.n_steps, run_dpm.n_steps],
        difference: [
            (run_euler["vae.image"] - run["vae.image"]).abs().mean(),
            (run_dpm["vae.image"] - run["vae.image"]).abs().mean(),
        ],
    },
    formats={difference: ".3f"},
    notes="pixel values lie in [0, 1]: 0 is the same picture, 0.01 a barely visible change",
)

# %%
sdviz.figures.denoising_filmstrip(run_euler, images=sdviz.probes.step_images(run_euler, pipe))

# %%
sdviz.figures.denoising_filmstrip(run_dpm, images=sdviz.probes.step_images(run_dpm, pipe))

# %% [markdown]
# ## Check yourself
#
# Predict, then run the cell below to check:
#
# 1. `run["denoiser.latents"]` holds one more latent than there are steps. What is its
#    shape, and why one more?
# 2. What are the first and the last timestep of this run, and is the first one 999?
# 3. In `images` (from `sdviz.probes.step_images`), which is larger: the linear preview of
#    x_t or its VAE decode? By what factor per side?

# %%
print(
    "1. latents",
    tuple(run["denoiser.latents"].shape),
    "for",
    run.n_steps,
    "steps: x_T and each step's output",
)
print(
    "2. first and last timestep:",
    int(run["scheduler.step_timestep"][0]),
    int(run["scheduler.step_timestep"][-1]),
)
print(
    "3. preview",
    tuple(images.preview.shape[-2:]),
    "vs decode",
    tuple(images.latents.shape[-2:]),
    "(height, width): the VAE's factor",
    pipe.vae_scale_factor,
)

# %% [markdown]
# ## Recap
#
# - Generation runs diffusion backwards: at each step the UNet predicts the noise in x_t,
#   and the scheduler removes part of it.
# - x̂0, the clean picture implied by the prediction, is a running guess that sharpens from
#   step to step; x_t follows it.
# - To look at x_t, use the linear preview: the VAE decodes it into the world it was
#   trained on (for sdviz-mini, ShapesWorld's shards and shifted colours).
# - Early steps decide the composition, late steps the details.
# - The scheduler is interchangeable: different solvers of the same process visit
#   different timesteps and need different numbers of steps.
#
# ### Exercises
#
# 1. In the explorer, find the first step at which x̂0 shows the right colours, and the
#    first at which it shows the right shapes. What is ᾱ_t there?
# 2. Run `sdviz.denoise_step` on pure noise (`torch.randn_like(x_t)`) at the first timestep
#    of `run["scheduler.step_timestep"]`: what does x̂0 look like after a single step? Decode it with
#    `sdviz.decode(pipe, ...)`.
# 3. Try `"euler_ancestral"` with the same seed twice: why do its results depend on more
#    than the starting noise?
