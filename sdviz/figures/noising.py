"""Figure 2 — forward noising: one image at increasing t, in pixel space and latent space.

The forward process of DDPM (Ho et al. 2020, Eq. 4) jumps to any noise level at once:
x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε with ε ~ N(0, I). Latent diffusion (Rombach et
al. 2022) applies it to the VAE latents instead of pixels; decoding noisy latents
shows that noise in latent space looks different from pixel noise.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..probes import NoisedImages
from .style import PANEL, Canvas, expect, new_figure, show_image, style


def forward_noising(noised: NoisedImages, *, fig: Canvas | None = None) -> Figure:
    """An image noised to each timestep: pixel space (top) and latent space, decoded (bottom).

    `noised` comes from `sdviz.probes.noised_images(pipe, image, timesteps, seed=...)`:
    one noise draw for all t. Each panel is titled with t and ᾱ_t.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> noised = sdviz.probes.noised_images(pipe, run, timesteps=[0, 250, 500, 999])
        >>> fig = sdviz.figures.forward_noising(noised)
    """
    expect(noised, NoisedImages, "sdviz.probes.noised_images(pipe, image)")
    ts, abar = noised.timesteps, noised.alpha_bar
    c, h, w = noised.latent_shape
    H, W = noised.pixels.shape[-2:]
    with style():
        fig = new_figure(
            fig,
            PANEL * len(ts) + 0.4,
            2 * PANEL + 1.0,
            suptitle="Forward noising x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, "
            f"in pixel space (3×{H}×{W}) and latent space ({c}×{h}×{w})",
        )
        axes = fig.subplots(2, len(ts), squeeze=False)
        for col, (t, a) in enumerate(zip(ts, abar.tolist(), strict=True)):
            title = f"t={t}, ᾱ={a:.3f}"
            show_image(axes[0, col], noised.pixels[col], title)
            show_image(axes[1, col], noised.decoded[col], title)
        axes[0, 0].set_ylabel("pixel space")
        axes[1, 0].set_ylabel("latent space\n(decoded)")
    return fig
