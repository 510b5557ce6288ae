"""Figure 6 — the latent space: an image, its latent channels, its reconstruction.

Latent diffusion (Rombach et al. 2022, Sec. 3.1) trains an autoencoder whose encoder
maps a 3×H×W image to a c×(H/f)×(W/f) latent (f = 8, c = 4 for Stable Diffusion),
scaled by `vae.config.scaling_factor` to unit variance, and runs diffusion there: f²·3/c
times fewer numbers than pixels. The decoder maps latents back; the reconstruction
shows what the compression keeps.
"""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure

from ..probes import psnr
from .inputs import image_batch
from .style import (
    PANEL,
    SIGNED_CMAP,
    Canvas,
    new_figure,
    show_image,
    show_map,
    style,
    symmetric_limit,
    to_numpy,
)

MAX_CHANNELS = 8  # latent channels drawn (SD has 4)


def latent_space(pipe: Any, image: Any, *, fig: Canvas | None = None) -> Figure:
    """The image, each latent channel (signed colormap), the VAE reconstruction and the ratio.

    `image` is a traced run (its final image), a (3, H, W) tensor in [0, 1] or a PIL
    image. The reconstruction is decode(encode(image)) through the pipeline's VAE.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.latent_space(pipe, run)
    """
    from ..autoencoder import decode, encode

    x0 = image_batch(image, pipe)  # (1, 3, H, W)
    with torch.no_grad():
        z = encode(pipe, x0).float().cpu()  # (1, c, h, w)
        recon = decode(pipe, z).float().cpu()  # (1, 3, H, W)
    _, c, h, w = z.shape
    H, W = x0.shape[2:]
    shown = min(c, MAX_CHANNELS)
    ratio = 3 * H * W / (c * h * w)
    original, rebuilt = to_numpy(x0[0]), to_numpy(recon[0])
    with style():
        fig = new_figure(
            fig,
            PANEL * (shown + 2) + 0.8,
            PANEL + 0.9,
            suptitle=f"Latent space: 3×{H}×{W} = {3 * H * W:,} numbers → {c}×{h}×{w} = "
            f"{c * h * w:,} numbers ({ratio:.0f}× fewer)",
        )
        axes = fig.subplots(1, shown + 2)
        show_image(axes[0], original, f"image 3×{H}×{W}")
        lim = symmetric_limit(z[0, :shown])
        for i in range(shown):
            im = show_map(
                axes[1 + i],
                z[0, i],
                cmap=SIGNED_CMAP,
                vmin=-lim,
                vmax=lim,
                title=f"latent channel {i} ({h}×{w})",
            )
        fig.colorbar(im, ax=list(axes[1 : 1 + shown]), label="latent value", shrink=0.8)
        show_image(
            axes[-1],
            rebuilt,
            f"reconstruction\nPSNR {psnr(original, rebuilt):.1f} dB",
        )
    return fig
