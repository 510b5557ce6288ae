"""Diffusion probes: forward noising, the x0 / epsilon / v algebra, one denoising step.

The forward process of DDPM (Ho et al. 2020) has a closed form: with the cumulative
product of the noise schedule alpha_bar_t,

    x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps,   eps ~ N(0, I)

so a network that predicts eps also predicts the clean sample
``x0_hat = (x_t - sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_bar_t)`` — the quantity
DDIM (Song et al. 2021) steps towards. SD 2.x "v-prediction" models (Salimans & Ho 2022)
output ``v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0`` instead; `to_epsilon` and
`predicted_x0` convert any prediction type. Latent diffusion (Rombach et al. 2022) runs
all of this on VAE latents; the formulas are the same for pixels.

All tensors here use the *variance-preserving* scale above (what the UNet sees), for
every scheduler: sigma-based schedulers (Euler, LMS, ...) internally keep
``x_t / sqrt(alpha_bar_t)``; `denoise_step` converts in and out.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from .text import check_prompt

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _scheduler(obj: Any):
    sched = getattr(obj, "scheduler", obj)  # a pipeline or a scheduler
    if getattr(sched, "alphas_cumprod", None) is None:
        raise TypeError(
            f"Expected a diffusers scheduler (or a pipeline) with `alphas_cumprod`, got "
            f"{type(obj).__name__}."
        )
    return sched


def _timesteps(t: int | Sequence[int] | torch.Tensor, n_train: int) -> torch.Tensor:
    tt = torch.as_tensor(t)
    if tt.dtype.is_floating_point or tt.dtype == torch.bool or tt.ndim > 1:
        raise TypeError(f"t must be an int or a 1-D sequence of ints (timesteps), got {t!r}.")
    if tt.numel() == 0:
        raise ValueError("t is empty: give at least one timestep.")
    if (tt < 0).any() or (tt >= n_train).any():
        raise ValueError(
            f"timesteps must lie in [0, {n_train - 1}] (the scheduler was trained on "
            f"{n_train} steps), got {tt.tolist()}."
        )
    return tt.long()


def alpha_bar(scheduler: Any, t: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """alpha_bar_t (the fraction of signal variance left at step t) as float32, shape of `t`."""
    sched = _scheduler(scheduler)
    abar = sched.alphas_cumprod
    return abar[_timesteps(t, len(abar))].float()


def _bcast(a: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(a, dtype=torch.float32, device=like.device)
    return a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim == 1 else a


Tensor = torch.Tensor
Level = float | torch.Tensor  # alpha_bar: one value, or one per sample


def _signal_and_noise(prediction_type: str, alpha_bar: Level, like: Tensor) -> tuple:
    """(sqrt(alpha_bar), sqrt(1 - alpha_bar)) broadcast to `like`, the kind checked."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}."
        )
    a = _bcast(alpha_bar, like)
    return a.sqrt(), (1 - a).sqrt()


def predicted_x0(x_t: Tensor, model_output: Tensor, alpha_bar: Level, prediction_type="epsilon"):
    """The clean sample x0_hat implied by a model output at noise level alpha_bar."""
    signal, noise = _signal_and_noise(prediction_type, alpha_bar, x_t)
    if prediction_type == "epsilon":
        return (x_t - noise * model_output) / signal
    if prediction_type == "v_prediction":
        return signal * x_t - noise * model_output
    return model_output


def to_epsilon(x_t: Tensor, model_output: Tensor, alpha_bar: Level, prediction_type="epsilon"):
    """The noise eps_hat implied by a model output (identity for epsilon models)."""
    signal, noise = _signal_and_noise(prediction_type, alpha_bar, x_t)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return signal * model_output + noise * x_t
    return (x_t - signal * model_output) / noise


def alpha_bar_from_sigma(sigma: Level) -> Level:
    """alpha_bar of a noise level sigma (Karras et al. 2022): 1 / (1 + sigma^2).

    Sigma schedulers (Euler, LMS, ...) keep x / sqrt(alpha_bar) with
    sigma = sqrt((1 - alpha_bar) / alpha_bar); this is its inverse.
    """
    return 1 / (1 + sigma**2)


def add_noise(
    x: torch.Tensor,
    t: int | Sequence[int] | torch.Tensor,
    scheduler: Any,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise `x` (pixels in [-1, 1] or latents) to timestep(s) `t`: the DDPM forward process.

    `x` is (c, h, w) or (n, c, h, w); `t` an int, or one timestep per output: with a
    single (c, h, w) input and k timesteps the result is (k, c, h, w), the same sample
    at k noise levels. `noise` (default: drawn from `generator`) has the output's shape.
    `scheduler` is a diffusers scheduler or a pipeline.
    """
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise ValueError(
            f"x must be a (c, h, w) or (n, c, h, w) tensor, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}."
        )
    abar = alpha_bar(scheduler, t)  # () or (k,)
    if abar.ndim == 1:
        if x.ndim == 3:
            x = x.expand(len(abar), *x.shape)
        elif len(abar) not in (1, x.shape[0]):
            raise ValueError(
                f"got {len(abar)} timesteps for a batch of {x.shape[0]}: give one int, or one "
                "timestep per sample."
            )
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    elif noise.shape != x.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(x.shape)}.")
    x32 = x.float()
    noise = noise.to(x32.device, torch.float32)
    a = _bcast(abar, x32)
    return (a.sqrt() * x32 + (1 - a).sqrt() * noise).to(x.dtype)


def _fresh_scheduler(pipe: Any, num_inference_steps: int) -> Any:
    """A copy of the pipeline's scheduler with its timesteps set (the original untouched)."""
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(num_inference_steps)
    return sched


def timesteps(pipe: Any, num_inference_steps: int = 50) -> list[int]:
    """The timesteps the pipeline's scheduler visits for `num_inference_steps` steps
    (computed on a copy; the pipeline's scheduler is not changed)."""
    return [int(v) for v in _fresh_scheduler(pipe, num_inference_steps).timesteps]


def _check_step_inputs(
    pipe: Any, latents: Any, prompt: Any, guidance_scale: Any, negative_prompt: Any
) -> None:
    """Teaching errors for `denoise_step`'s prompt, guidance scale and latents."""
    check_prompt(prompt)
    if negative_prompt not in (None, ""):  # "" and None: the unconditional prompt
        check_prompt(negative_prompt, "negative_prompt")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, int | float):
        raise TypeError(f"guidance_scale must be a number (SD uses 7.5), got {guidance_scale!r}.")
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (3, 4):
        raise ValueError("latents must be a (c, h, w) or (n, c, h, w) tensor.")
    channels = pipe.unet.config.in_channels
    if latents.shape[-3] != channels:
        raise ValueError(
            f"latents have {latents.shape[-3]} channels, the UNet takes {channels}: pass VAE "
            "latents (sdviz.encode), not pixels."
        )


def _check_timestep(t: Any, grid: list[int], num_inference_steps: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int | torch.Tensor) or int(t) not in grid:
        near = sorted(grid, key=lambda v: abs(v - int(t)))[:2] if isinstance(t, int) else []
        raise ValueError(
            f"t={t!r} is not a timestep of this scheduler at {num_inference_steps} steps "
            f"(nearest: {near}); pick one of sdviz.diffusion.timesteps(pipe, "
            f"{num_inference_steps}) or change num_inference_steps."
        )


def _step_alpha_bar(sched: Any, t: int) -> float:
    """alpha_bar at the scheduler's current step: from its sigma where it keeps sigmas."""
    index = getattr(sched, "step_index", None)
    sigmas = getattr(sched, "sigmas", None)
    if index is not None and sigmas is not None:
        return float(alpha_bar_from_sigma(sigmas[index].double()))
    return float(sched.alphas_cumprod[t])


def _unet_halves(pipe: Any, x: Tensor, t_sched: Any, prompt: str, negative_prompt: Any):
    """The UNet's raw outputs for `x` without and with the prompt: (uncond, text), float32."""
    cond, uncond = pipe.encode_prompt(
        prompt,
        pipe.device,
        num_images_per_prompt=x.shape[0],
        do_classifier_free_guidance=True,
        negative_prompt=negative_prompt or None,
    )  # (n, L, d) each
    model_in = torch.cat([x, x]).to(pipe.unet.dtype)  # (2n, c, h, w): uncond, then text
    embeds = torch.cat([uncond, cond])  # (2n, L, d)
    raw = pipe.unet(model_in, t_sched, encoder_hidden_states=embeds).sample.float()
    return raw.chunk(2)


def _scheduler_step(sched: Any, output: Tensor, t_sched: Any, sample: Tensor, generator: Any):
    """`sched.step(...).prev_sample`, passing `generator` to schedulers that draw noise."""
    takes = "generator" in inspect.signature(sched.step).parameters
    extra = {"generator": generator} if takes else {}
    return sched.step(output, t_sched, sample, **extra).prev_sample


@torch.no_grad()
def denoise_step(
    pipe: Any,
    latents: torch.Tensor,
    t: int,
    prompt: str,
    guidance_scale: float = 7.5,
    negative_prompt: str | None = "",
    *,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """One UNet call with classifier-free guidance and one scheduler step at timestep `t`.

    `latents` (c, h, w) or (n, c, h, w) are noisy latents x_t in the variance-preserving
    scale (as from `add_noise`). `t` must be one of ``timesteps(pipe, num_inference_steps)``.
    Returns CPU float32 tensors shaped like `latents`: ``noise_pred_uncond``,
    ``noise_pred_text`` and the guided ``noise_pred = uncond + g * (text - uncond)``
    (Ho & Salimans 2022), all as epsilon (converted for v-prediction models);
    ``pred_original_sample`` (x0_hat) and ``prev_sample`` (x at the next timestep, same
    scale); plus ``t``, ``prev_t`` (None after the last step) and ``alpha_bar``.
    A fresh copy of the scheduler is used: ``pipe.scheduler`` is not touched. So
    multistep solvers (DPM-Solver++, UniPC, DEIS, PNDM, LMS) take their first-order step
    here, not the one they would take mid-run with history; stochastic ones (DDPM, Euler
    ancestral) draw their noise from `generator`. DDIM and Euler match the pipeline.
    """
    _check_step_inputs(pipe, latents, prompt, guidance_scale, negative_prompt)
    sched = _fresh_scheduler(pipe, num_inference_steps)
    grid = [int(v) for v in sched.timesteps]
    _check_timestep(t, grid, num_inference_steps)
    t = int(t)
    t_sched = sched.timesteps[grid.index(t)]  # the scheduler's own value (float for Euler)
    kind = sched.config.prediction_type
    unbatched = latents.ndim == 3
    x = (latents[None] if unbatched else latents).to(pipe.device, torch.float32)  # (n, c, h, w)
    ones = torch.ones_like(x)

    # Sigma schedulers (Euler, LMS, Heun...) keep x / sqrt(abar): scale_model_input maps
    # their sample to the UNet's (VP) input; for the others it is the identity.
    sample = x / sched.scale_model_input(ones, t_sched)
    abar = _step_alpha_bar(sched, t)
    raw_u, raw_c = _unet_halves(pipe, x, t_sched, prompt, negative_prompt)
    raw_g = raw_u + guidance_scale * (raw_c - raw_u)
    prev = _scheduler_step(sched, raw_g, t_sched, sample, generator)
    prev = prev * sched.scale_model_input(ones, t_sched)  # VP scale at the next level
    nxt = getattr(sched, "step_index", None)
    nxt = grid.index(t) + 1 if nxt is None else nxt
    prev_t = grid[nxt] if nxt < len(grid) else None

    def out(v: torch.Tensor) -> torch.Tensor:
        v = v.detach().float().cpu()
        return v[0] if unbatched else v

    return {
        "noise_pred_uncond": out(to_epsilon(x, raw_u, abar, kind)),
        "noise_pred_text": out(to_epsilon(x, raw_c, abar, kind)),
        "noise_pred": out(to_epsilon(x, raw_g, abar, kind)),
        "pred_original_sample": out(predicted_x0(x, raw_g, abar, kind)),
        "prev_sample": out(prev),
        "t": t,
        "prev_t": prev_t,
        "alpha_bar": abar,
    }
