"""Every scheduler family and both prediction types: x0-hat and epsilon are right.

The scheduler's own `step()` returns its predicted clean latents for DDPM, DDIM,
Euler, Euler ancestral and LMS (the pipeline throws them away): the trace's
x0-hat must equal them at every checked step. Euler-type and DPM-Solver++ end on
sigma = 0, so their final latents are exactly the last x0-hat; DDPM/DDIM/PNDM/LMS
stop one small step short of it.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from sdviz.builder import tiny_pipeline
from sdviz.schedulers import make_scheduler
from sdviz.tracing import trace

SCHEDULERS = ["ddpm", "ddim", "euler", "euler_ancestral", "dpm++", "lms", "pndm"]
EXACT_END = {"euler", "euler_ancestral", "dpm++"}
RETURN_X0 = {"ddpm", "ddim", "euler", "euler_ancestral", "lms"}
STEPS = 5


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pipe(request, device):
    return tiny_pipeline(prediction_type=request.param).to(device)


def _call(pipe):
    gen = torch.Generator(pipe.device).manual_seed(1)
    return pipe("a blue square", num_inference_steps=STEPS, generator=gen, output_type="pt").images


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_family(pipe, name):
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(name, original.config)
    try:
        plain = _call(pipe)
        with trace(pipe) as tr:
            traced = _call(pipe)
        n_calls = len(pipe.scheduler.timesteps)
    finally:
        pipe.scheduler = original
    run = tr.last
    kind = original.config.prediction_type
    assert run["denoiser.prediction_type"] == kind
    assert (traced - plain).abs().max() <= 1e-5
    assert run.n_steps == n_calls and run["denoiser.latents"].shape[0] == n_calls + 1

    x0, final = run["denoiser.pred_original_sample"], run["denoiser.latents"][-1]
    rel = ((x0[-1] - final).norm() / final.norm()).item()
    assert rel < (1e-5 if name in EXACT_END else 0.1), rel
    if name in RETURN_X0:
        _check_against_scheduler(run, name, original.config, kind)


def _check_against_scheduler(run, name, config, kind):
    """Feed recorded inputs to a fresh scheduler's step() and compare its x0."""
    for i in (0, STEPS // 2, STEPS - 1):
        sched = make_scheduler(name, config)
        sched.set_timesteps(STEPS)
        t = sched.timesteps[i]
        x = run["denoiser.latents"][i][None]  # VP-scaled x_t, as the UNet saw it
        eps = run["denoiser.noise_pred"][i][None]
        x0 = run["denoiser.pred_original_sample"][i][None]
        abar = run["scheduler.step_alpha_bar"][i]
        output = eps if kind == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        sample = x
        if hasattr(sched, "sigmas") and sched.init_noise_sigma != 1.0:
            sample = x * (1 + sched.sigmas[i] ** 2).sqrt()  # undo scale_model_input
        sched.scale_model_input(sample, t)  # as the pipeline does before step()
        extra = {}
        if "generator" in inspect.signature(sched.step).parameters:  # noise of stochastic steps
            extra["generator"] = torch.Generator().manual_seed(0)
        out = sched.step(output, t, sample, **extra)
        theirs = out.pred_original_sample
        assert torch.allclose(theirs, x0, atol=1e-3, rtol=1e-3), (name, i)
