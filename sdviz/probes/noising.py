"""Forward noising and the UNet's noise prediction, outside a generation (figures 2 and 4).

`noised_images` noises one image to several training timesteps, in pixels and in the
VAE's latent space, x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (Ho et al. 2020, eq. 4);
the noised latents are shown twice, decoded by the VAE and through a linear latent->RGB
preview (a least-squares fit, as `Run.preview`), because a decoder trained on one small
world decodes noise into that world; `noise_predictions` is one training example (Ho et al. 2020, Alg. 1): z_0 noised with
one ε, and the UNet's ε̂ at each timestep, with the error the training minimises.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..autoencoder import decode, encode, image_input
from ..diffusion import add_noise, alpha_bar, to_epsilon
from ..text import embed
from ..tracing.run import fit_preview, linear_preview


def check_timesteps(timesteps: Any, pipe: Any, default_count: int) -> list[int]:
    """Training timesteps in [0, T): given ones validated, else `default_count` evenly spaced."""
    T = int(pipe.scheduler.config.num_train_timesteps)
    if timesteps is None:
        return [int(round(x)) for x in np.linspace(0, T - 1, default_count)]
    items = [timesteps] if isinstance(timesteps, (int, np.integer)) else list(timesteps)
    bad = [t for t in items if not isinstance(t, (int, np.integer)) or not 0 <= t < T]
    if bad or not items:
        raise ValueError(f"Timesteps must be integers in 0..{T - 1} (training steps); got {bad}.")
    return [int(t) for t in items]


@dataclass(frozen=True)
class NoisedImages:
    """One image noised to several training timesteps, in pixel and in latent space."""

    timesteps: list[int]
    alpha_bar: torch.Tensor  # (n,) ᾱ_t
    pixels: torch.Tensor  # (n, 3, H, W): x_t = √ᾱ·x_0 + √(1−ᾱ)·ε on pixels, clipped to [0, 1]
    decoded: torch.Tensor  # (n, 3, H, W) in [0, 1]: the VAE latents noised alike, decoded
    latent_shape: tuple[int, int, int]  # (c, h, w)
    preview: torch.Tensor | None = None  # (n, 3, h, w) in [0, 1]: the same latents, linear preview


@torch.no_grad()
def noised_images(
    pipe: Any, image: Any, timesteps: Collection[int] | None = None, *, seed: int = 0
) -> NoisedImages:
    """Noise `image` (a run, a (3, H, W) tensor in [0, 1] or PIL) to each timestep (default 6).

    One noise draw (from `seed`) serves every t: in pixel space, and in latent space
    (VAE-encoded, noised, then decoded and previewed). The preview's latent->RGB map is the
    run's own (`vae.preview_coefficients`) when `image` is a run, else fitted on this image.
    """
    ts = check_timesteps(timesteps, pipe, 6)
    x0 = image_input(image, pipe)  # (1, 3, H, W) in [0, 1]
    g = torch.Generator().manual_seed(seed)
    pixel_noise = torch.randn(x0.shape, generator=g)
    z0 = encode(pipe, x0)  # (1, c, h, w)
    latent_noise = torch.randn(z0.shape, generator=g)
    pixels = torch.cat([add_noise(x0 * 2 - 1, t, pipe, noise=pixel_noise) for t in ts])
    latents = torch.cat([add_noise(z0, t, pipe, noise=latent_noise) for t in ts])
    coef = image.get("vae.preview_coefficients") if isinstance(image, Mapping) else None
    coef = fit_preview(z0[0], x0[0]) if coef is None else coef  # (c+1, 3)
    return NoisedImages(
        ts,
        alpha_bar(pipe, ts),
        ((pixels + 1) / 2).clamp(0, 1),
        decode(pipe, latents),
        tuple(z0.shape[1:]),
        None if coef is None else linear_preview(latents, coef),
    )


@dataclass(frozen=True)
class NoisePredictions:
    """One training example (Ho et al. 2020, Alg. 1): z_0 and ε, and per timestep z_t, ε̂."""

    prompt: str
    t: int  # the timestep drawn in full
    timesteps: list[int]  # where the error is measured (t among them)
    alpha_bar: float  # ᾱ at t
    clean: torch.Tensor  # (c, h, w) z_0
    noise: torch.Tensor  # (c, h, w) ε
    noisy: torch.Tensor  # (n, c, h, w) z_t per timestep
    predicted: torch.Tensor  # (n, c, h, w) ε̂ (as ε also for v-prediction models)
    mse: torch.Tensor  # (n,) mean of (ε̂ − ε)² per timestep

    @property
    def index(self) -> int:
        """The position of `t` in `timesteps`."""
        return self.timesteps.index(self.t)


@torch.no_grad()
def predict_noise(pipe: Any, noisy: torch.Tensor, ts: list[int], prompt: str) -> torch.Tensor:
    """The UNet's ε̂ for latents `noisy` (n, c, h, w) at timesteps `ts`, conditioned on
    `prompt`: CPU float32, converted to ε for v-prediction models (Salimans & Ho 2022)."""
    param = next(pipe.unet.parameters())
    emb = embed(pipe, prompt)[None].to(param.device, param.dtype)  # (1, L, d)
    chunks = []
    for start in range(0, len(ts), 4):  # 4 latents per call: bounded memory at SD sizes
        x = noisy[start : start + 4].to(param.device, param.dtype)
        t = torch.tensor(ts[start : start + 4], device=param.device)
        pred = pipe.unet(x, t, encoder_hidden_states=emb.expand(len(x), -1, -1)).sample
        chunks.append(pred.float().cpu())
    kind = pipe.scheduler.config.get("prediction_type", "epsilon")
    return to_epsilon(noisy, torch.cat(chunks), alpha_bar(pipe, ts), kind)


def noise_predictions(
    pipe: Any,
    image: Any,
    t: int | None = None,
    *,
    prompt: str | None = None,
    timesteps: Collection[int] | None = None,
    seed: int = 0,
) -> NoisePredictions:
    """Encode `image`, noise it with one ε (from `seed`) and ask the UNet for ε̂ at each t.

    `image` is a traced run (its image and prompt) or an image with its caption `prompt`;
    `t` the timestep drawn in full (default T/2); `timesteps` where the error is measured
    (default 10 evenly spaced).
    """
    text = image.get("pipeline.prompt") if prompt is None and isinstance(image, Mapping) else prompt
    if text is None:
        raise ValueError("Pass the image's caption: noise_predictions(pipe, image, prompt=...).")
    T = int(pipe.scheduler.config.num_train_timesteps)
    t = check_timesteps(T // 2 if t is None else t, pipe, 1)[0]
    ts = sorted(set(check_timesteps(timesteps, pipe, 10)) | {t})
    z0 = encode(pipe, image_input(image, pipe))[0]  # (c, h, w)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    noisy = torch.stack([add_noise(z0, step, pipe, noise=noise) for step in ts])
    predicted = predict_noise(pipe, noisy, ts, text)
    mse = ((predicted - noise) ** 2).mean(dim=(1, 2, 3))
    abar = float(alpha_bar(pipe, t))
    return NoisePredictions(text, t, ts, abar, z0, noise, noisy, predicted, mse)
