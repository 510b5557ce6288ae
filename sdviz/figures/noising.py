"""Figure 2 — forward noising: one image at increasing t, in pixel space and latent space.

The forward process of DDPM (Ho et al. 2020, Eq. 4) jumps to any noise level at once:
x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε with ε ~ N(0, I). Latent diffusion (Rombach et
al. 2022) applies it to the VAE latents instead of pixels; decoding noisy latents
shows that noise in latent space looks different from pixel noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure

from .inputs import check_timesteps, image_batch
from .style import PANEL, Canvas, new_figure, show_image, style, to_numpy

DEFAULT_LEVELS = 6  # noise levels shown by default (t = 0 ... T-1)


def forward_noising(
    pipe: Any,
    image: Any,
    timesteps: Sequence[int] | None = None,
    *,
    seed: int = 0,
    fig: Canvas | None = None,
) -> Figure:
    """An image noised to each timestep: pixel space (top) and latent space, decoded (bottom).

    `image` is a traced run (its final image), a (3, H, W) tensor in [0, 1] or a PIL
    image; `timesteps` are training timesteps in 0..T-1 (default: 6 evenly spaced).
    Each panel is titled with t and ᾱ_t. One noise draw (from `seed`) is used for all t.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.forward_noising(pipe, run, timesteps=[0, 250, 500, 999])
    """
    from ..autoencoder import decode, encode
    from ..diffusion import add_noise

    ts = check_timesteps(timesteps, pipe, DEFAULT_LEVELS)
    x0 = image_batch(image, pipe)  # (1, 3, H, W) in [0, 1]
    abar = to_numpy(pipe.scheduler.alphas_cumprod)[ts]
    g = torch.Generator().manual_seed(seed)
    pixel_noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        z0 = encode(pipe, x0).float().cpu()  # (1, c, h, w)
        latent_noise = torch.randn(z0.shape, generator=g)
        pixels = [(add_noise(x0 * 2 - 1, t, pipe.scheduler, noise=pixel_noise) + 1) / 2 for t in ts]
        latents = torch.cat([add_noise(z0, t, pipe.scheduler, noise=latent_noise) for t in ts])
        decoded = decode(pipe, latents)  # (n, 3, H, W) in [0, 1]
    c, h, w = z0.shape[1:]
    with style():
        fig = new_figure(
            fig,
            PANEL * len(ts) + 0.4,
            2 * PANEL + 1.0,
            suptitle="Forward noising x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, "
            f"in pixel space (3×{x0.shape[2]}×{x0.shape[3]}) and latent space ({c}×{h}×{w})",
        )
        axes = fig.subplots(2, len(ts), squeeze=False)
        for col, (t, a) in enumerate(zip(ts, abar, strict=True)):
            title = f"t={t}, ᾱ={a:.3f}"
            show_image(axes[0, col], to_numpy(pixels[col][0]).clip(0, 1), title)
            show_image(axes[1, col], to_numpy(decoded[col]), title)
        axes[0, 0].set_ylabel("pixel space")
        axes[1, 0].set_ylabel("latent space\n(decoded)")
    return fig
