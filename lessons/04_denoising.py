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
# run it **backwards**, as *"The Illustrated Stable Diffusion"* pictures it: start from pure
# noise; at each step the UNet predicts the noise, and the **scheduler** subtracts a
# portion of it, giving a slightly cleaner latent. After a few dozen steps a picture is left.
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
# Setup — the only cell you need to edit: which model, and the test switch.
# %matplotlib inline
import os

import sdviz

# MODEL = None loads the embedded sdviz-mini model: offline, a few MB, about a second per
# image on a laptop CPU. A hub id loads the real thing (online the first time, ~4 GB; use a
# CUDA GPU: sdviz.load then picks float16 by itself), and a path loads a local diffusers folder:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MODEL = os.environ.get("SDVIZ_MODEL")
SMOKE = os.environ.get("SDVIZ_SMOKE") == "1"  # set by the tests: shorter loops, same story

pipe = sdviz.load(MODEL)  # device="auto": CUDA, else Apple MPS, else CPU
pipe.set_progress_bar_config(disable=True)  # no progress bars in the lessons
STEPS = 8 if SMOKE else 25
SEED = 0
PROMPT = "a red circle to the left of a blue square"
GUIDANCE = 7.5 if MODEL else 3.0  # lesson 7: 7.5 for SD 1.5, 3 for sdviz-mini (model card)
print(f"{type(pipe).__name__} on {pipe.device} ({pipe.dtype}), {STEPS} denoising steps")

# %% [markdown]
# ## One generation, traced
#
# `sdviz.generate` records every step: the latents going in, the noise predicted, the
# x̂0 implied, the timestep and its ᾱ_t.

# %%
run = sdviz.generate(pipe, PROMPT, steps=STEPS, seed=SEED, guidance_scale=GUIDANCE)
print(run["scheduler.name"], "visited t =", run["scheduler.step_timestep"].int().tolist())
print("ᾱ_t at those steps:", [round(a, 3) for a in run["scheduler.step_alpha_bar"].tolist()])

# %% [markdown]
# The film strip decodes x_t (top) and x̂0 (bottom) at a few steps. Early on, x_t is noise
# but x̂0 already shows a blurry guess of the layout; later, the guess sharpens and x_t
# converges to it.

# %%
sdviz.figures.denoising_filmstrip(run, pipe)

# %% [markdown]
# ## Explore every step
#
# Move the slider (or press play). All panels show the same step: x_t and x̂0 decoded by the
# VAE, the predicted noise in latent space (one tile per latent channel), where each word
# of the prompt is attended to (lesson 7), and where the step sits on the noise schedule.
# Nothing is recomputed: the widget reads the recorded run.

# %%
sdviz.widgets.DenoisingExplorer(run, pipe)

# %% [markdown]
# ## One step by hand
#
# `sdviz.denoise_step` performs a single step — one UNet call with guidance, one scheduler
# update — on any latent you give it. Feed it the recorded x_t of a middle step: it should
# reproduce what the pipeline did at that step.

# %%
k = STEPS // 2
x_t, t = run["denoiser.latents"][k], int(run["scheduler.step_timestep"][k])
step = sdviz.denoise_step(
    pipe, x_t, t, PROMPT, guidance_scale=run["pipeline.guidance_scale"], num_inference_steps=STEPS
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
    "largest difference:", float((x0_by_hand - run["denoiser.pred_original_sample"][k]).abs().max())
)

# %% [markdown]
# ## What each step removes
#
# How far is each step from the final result? Measure the distance of x_t, and of the
# UNet's guess x̂0, to the final latent:

# %%
latents, x0_hat = run["denoiser.latents"], run["denoiser.pred_original_sample"]
final = latents[-1]
print(
    "x_t  to the final latent:",
    [round(v, 1) for v in (latents[:-1] - final).flatten(1).norm(dim=1).tolist()],
)
print(
    "x̂0  to the final latent:",
    [round(v, 1) for v in (x0_hat - final).flatten(1).norm(dim=1).tolist()],
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
# uses a higher-order solver and gets away with fewer steps. Their timesteps on the
# schedule:

# %%
sdviz.figures.noise_schedule(pipe, "euler", "dpm++", steps=[STEPS, STEPS, STEPS // 2])

# %% [markdown]
# Swap the scheduler in the pipeline (`sdviz.pipeline.set_scheduler`), keep the seed, and
# generate again — DPM-Solver++ with half the steps:

# %%
original = pipe.scheduler
sdviz.pipeline.set_scheduler(pipe, "euler")
run_euler = sdviz.generate(pipe, PROMPT, steps=STEPS, seed=SEED, guidance_scale=GUIDANCE)
sdviz.pipeline.set_scheduler(pipe, "dpm++")
run_dpm = sdviz.generate(pipe, PROMPT, steps=STEPS // 2, seed=SEED, guidance_scale=GUIDANCE)
pipe.scheduler = original
print(
    *[
        f"{r['scheduler.name']:>28}: {r['pipeline.num_inference_steps']} steps, mean |difference| to "
        f"{run['scheduler.name']}: {float((r['vae.image'] - run['vae.image']).abs().mean()):.3f}"
        for r in (run_euler, run_dpm)
    ],
    sep="\n",
)

# %%
sdviz.figures.denoising_filmstrip(run_euler, pipe)

# %%
sdviz.figures.denoising_filmstrip(run_dpm, pipe)

# %% [markdown]
# ## Recap
#
# - Generation runs diffusion backwards: at each step the UNet predicts the noise in x_t,
#   and the scheduler removes part of it.
# - x̂0, the clean picture implied by the prediction, is a running guess that sharpens from
#   step to step; x_t follows it.
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
