"""Figure 6 — the latent space: an image, its latent channels, its reconstruction.

Latent diffusion (Rombach et al. 2022, Sec. 3.1) trains an autoencoder whose encoder
maps a 3×H×W image to a c×(H/f)×(W/f) latent (f = 8, c = 4 for Stable Diffusion),
scaled by `vae.config.scaling_factor` to unit variance, and runs diffusion there: f²·3/c
times fewer numbers than pixels. The decoder maps latents back; the reconstruction
shows what the compression keeps.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..autoencoder import Reconstruction
from .style import (
    PANEL,
    SIGNED_CMAP,
    Canvas,
    expect,
    new_figure,
    show_image,
    show_map,
    style,
    symmetric_limit,
)

MAX_CHANNELS = 8  # latent channels drawn (SD has 4)


def latent_space(reconstruction: Reconstruction, *, fig: Canvas | None = None) -> Figure:
    """The image, each latent channel (signed colormap), the VAE reconstruction and the ratio.

    `reconstruction` comes from `sdviz.autoencoder.reconstruct(pipe, image)`:
    decode(encode(image)) through the pipeline's VAE, with its PSNR.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.latent_space(sdviz.autoencoder.reconstruct(pipe, run))
    """
    expect(reconstruction, Reconstruction, "sdviz.autoencoder.reconstruct(pipe, image)")
    z = reconstruction.latents  # (c, h, w)
    c, h, w = z.shape
    H, W = reconstruction.image.shape[1:]
    shown = min(c, MAX_CHANNELS)
    ratio = 3 * H * W / (c * h * w)
    with style():
        fig = new_figure(
            fig,
            PANEL * (shown + 2) + 0.8,
            PANEL + 0.9,
            suptitle=f"Latent space: 3×{H}×{W} = {3 * H * W:,} numbers → {c}×{h}×{w} = "
            f"{c * h * w:,} numbers ({ratio:.0f}× fewer)",
        )
        axes = fig.subplots(1, shown + 2)
        show_image(axes[0], reconstruction.image, f"image 3×{H}×{W}")
        lim = symmetric_limit(z[:shown])
        for i in range(shown):
            im = show_map(
                axes[1 + i],
                z[i],
                cmap=SIGNED_CMAP,
                vmin=-lim,
                vmax=lim,
                title=f"latent channel {i} ({h}×{w})",
            )
        fig.colorbar(im, ax=list(axes[1 : 1 + shown]), label="latent value", shrink=0.8)
        show_image(
            axes[-1],
            reconstruction.reconstruction,
            f"reconstruction\nPSNR {reconstruction.psnr:.1f} dB",
        )
    return fig
