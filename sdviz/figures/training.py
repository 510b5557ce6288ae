"""Figure 4 — a training example: noisy latent + t -> predicted noise vs the true noise.

Training a diffusion model (Ho et al. 2020, Algorithm 1; Rombach et al. 2022, Eq. 2)
takes a clean latent z_0, draws ε ~ N(0, I) and a timestep t, forms
z_t = sqrt(ᾱ_t)·z_0 + sqrt(1-ᾱ_t)·ε, and asks the UNet for ε̂(z_t, t, text); the loss is
‖ε̂ - ε‖². Here that one example is computed with the loaded model, and the same ε is
scored over many t (v-prediction models are converted to ε, Salimans & Ho 2022).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .inputs import check_timesteps, image_batch, prompt_of
from .style import (
    SIGNED_CMAP,
    Canvas,
    maps_and_plot,
    plot_over_t,
    show_map,
    style,
    symmetric_limit,
    to_numpy,
)

DEFAULT_SWEEP = 10  # timesteps at which the prediction error is measured
BATCH = 4  # noisy latents per UNet call


def predict_noise(pipe: Any, z0: torch.Tensor, noise: torch.Tensor, ts: list[int], prompt: str):
    """(noisy latents, predicted ε) for z0 noised with `noise` at each t of `ts`: (n, c, h, w)."""
    from ..diffusion import add_noise
    from ..text import embed

    z_t = torch.cat([add_noise(z0, t, pipe.scheduler, noise=noise) for t in ts]).float().cpu()
    param = next(pipe.unet.parameters())
    emb = embed(pipe, prompt)[None].to(param.device, param.dtype)  # (1, L, d)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(ts), BATCH):  # bounded memory at SD sizes
            x = z_t[start : start + BATCH].to(param.device, param.dtype)
            t = torch.tensor(ts[start : start + BATCH], device=param.device)
            pred = pipe.unet(x, t, encoder_hidden_states=emb.expand(len(x), -1, -1)).sample
            chunks.append(pred.float().cpu())
    out = torch.cat(chunks)
    if pipe.scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
        abar = pipe.scheduler.alphas_cumprod[ts].float().view(-1, 1, 1, 1)
        out = abar.sqrt() * out + (1 - abar).sqrt() * z_t  # ε = √ᾱ·v + √(1−ᾱ)·z_t
    return z_t, out


def training_example(
    pipe: Any,
    image: Any,
    t: int | None = None,
    *,
    prompt: str | None = None,
    timesteps: Sequence[int] | None = None,
    channel: int = 0,
    seed: int = 0,
    fig: Canvas | None = None,
) -> Figure:
    """z_0, the true noise ε, z_t, the UNet's ε̂ and the error ε̂ − ε at `t`, plus the error over t.

    `image` is a traced run (its image and prompt are used) or an image with a
    `prompt`. `t` is a training timestep (default: the middle one); `timesteps` are
    where the mean squared error is measured (default: 10 evenly spaced). Maps show
    latent `channel`.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.training_example(pipe, run, t=500)
    """
    from ..autoencoder import encode

    text = prompt_of(image, prompt)
    if text is None:
        raise ValueError(
            "Pass the caption of the image: training_example(pipe, image, prompt=...)."
        )
    T = int(pipe.scheduler.config.num_train_timesteps)
    t = check_timesteps(T // 2 if t is None else t, pipe, 1)[0]
    sweep = sorted(set(check_timesteps(timesteps, pipe, DEFAULT_SWEEP)) | {t})
    x0 = image_batch(image, pipe)
    with torch.no_grad():
        z0 = encode(pipe, x0).float().cpu()  # (1, c, h, w)
    c = z0.shape[1]
    if not isinstance(channel, (int, np.integer)) or not 0 <= channel < c:
        raise IndexError(f"channel {channel!r} is out of range: the latents have {c} channels.")
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    z_t, eps_hat = predict_noise(pipe, z0, noise, sweep, text)
    mse = ((eps_hat - noise) ** 2).mean(dim=(1, 2, 3)).numpy()
    k = sweep.index(t)
    abar = float(pipe.scheduler.alphas_cumprod[t])
    maps = [to_numpy(x[channel]) for x in (z0[0], noise[0], z_t[k], eps_hat[k])]
    err = maps[3] - maps[1]
    with style():
        fig, axes = maps_and_plot(
            fig,
            5,
            f"A training example at t={t} (ᾱ={abar:.3f}), caption {text!r}, latent channel {channel}",
        )
        lim = symmetric_limit(*maps)
        titles = ("clean latent z_0", "true noise ε", f"noisy latent z_t (t={t})", "predicted ε̂")
        for ax, m, title in zip(axes[:4], maps, titles, strict=True):
            im = show_map(ax, m, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, title=title)
        show_map(axes[4], err, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, title="error ε̂ − ε")
        fig.colorbar(im, ax=list(axes[:5]), label="value", shrink=0.8)
        plot_over_t(axes[5], sweep, mse, k, ylabel="MSE(ε̂, ε)", title="Prediction error over t")
    return fig
