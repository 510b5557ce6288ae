"""The DDPM training objective: what the UNet learns to predict, and how much each step counts.

DDPM (Ho et al. 2020) noises a clean latent to x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
and trains the network to undo it. Stable Diffusion 1.x predicts eps; 2.x predicts
v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022). Min-SNR-gamma (Hang et al.
2023) weighs each timestep's error so that neither the nearly clean nor the nearly pure-noise
steps dominate the loss.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from ..builder import SD_SCHEDULE

PREDICTION_TYPES = ("epsilon", "v_prediction")


def noise_scheduler() -> DDPMScheduler:
    """SD's training schedule: 1000 steps, scaled_linear betas 0.00085..0.012."""
    kwargs = {k: v for k, v in SD_SCHEDULE.items() if k != "set_alpha_to_one"}
    return DDPMScheduler(**kwargs)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}."
        )


def training_target(
    sched: DDPMScheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """What the UNet learns to output for x_t = sched.add_noise(x0, noise, t).

    x0, noise: (batch, c, h, w); t: (batch,). "epsilon": the noise; "v_prediction":
    v = sqrt(abar) noise - sqrt(1 - abar) x0 (diffusers' `get_velocity`).
    """
    _check_prediction_type(prediction_type)
    return noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)


def loss_weights(
    snr: torch.Tensor,
    prediction_type: str = "epsilon",
    snr_gamma: float | None = 5.0,
    snr_floor: float = 0.0,
) -> torch.Tensor:
    """Per-timestep weights of the squared error on the target (Min-SNR, Hang et al. 2023).

    Min-SNR-gamma weighs the error on x0 by min(snr, gamma); an error on epsilon is snr
    times one on x0 and an error on v (snr + 1) times, hence the divisions.
    `snr_floor` raises the x0 weight of the noisiest timesteps to at least that much:
    where the picture's layout is decided, Min-SNR's weight is only snr (0.005 at t=999).
    `snr_gamma=None`: weight 1, the plain mean squared error (no floor then).
    """
    _check_prediction_type(prediction_type)
    if snr_floor < 0:
        raise ValueError(f"snr_floor must be 0 or more, not {snr_floor}.")
    if snr_gamma is None:
        if snr_floor:
            raise ValueError("snr_floor needs snr_gamma: a floor under the plain MSE is unused.")
        return torch.ones_like(snr)
    if snr_gamma <= 0 or snr_floor > snr_gamma:
        raise ValueError(
            f"snr_gamma must be positive and at least snr_floor, not {snr_gamma} "
            f"(snr_floor {snr_floor})."
        )
    x0_weight = torch.clamp(snr, min=snr_floor, max=snr_gamma)
    return x0_weight / (snr if prediction_type == "epsilon" else snr + 1)


def snr(sched: DDPMScheduler) -> torch.Tensor:
    """Signal-to-noise ratio abar / (1 - abar) of each of `sched`'s training timesteps, (T,)."""
    abar = sched.alphas_cumprod
    return abar / (1 - abar)
