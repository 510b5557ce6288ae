"""Figure 6 — the latent space: an image, its latent channels, its reconstruction.

Latent diffusion (Rombach et al. 2022, Sec. 3.1) trains an autoencoder whose encoder
maps a 3×H×W image to a c×(H/f)×(W/f) latent (f = 8, c = 4 for Stable Diffusion),
scaled by `vae.config.scaling_factor` to unit variance, and runs diffusion there: f²·3/c
times fewer numbers than pixels. The decoder maps latents back; the reconstruction
shows what the compression keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ..autoencoder import Reconstruction, Reconstructions
from .style import (
    LINE_COLORS,
    PANEL,
    SIGNED_CMAP,
    WIDE,
    Canvas,
    expect,
    new_figure,
    show_image,
    show_map,
    style,
    symmetric_limit,
)

MAX_CHANNELS = 8  # latent channels drawn (SD has 4)
ERROR_CMAP = "magma"  # |image - reconstruction|: dark where the VAE is exact
EXAMPLE_PLACES = (0.0, 0.1, 0.5, 0.9, 1.0)  # quantiles of PSNR shown as examples
PLACE_NAMES = {0.0: "worst", 0.5: "median", 1.0: "best"}


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


def _place(q: float) -> str:
    """0 -> 'worst', 0.5 -> 'median', 0.1 -> '10th percentile'."""
    if q in PLACE_NAMES:
        return PLACE_NAMES[q]
    n = round(q * 100)
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} percentile"


def reconstruction_quality(
    reconstructions: Reconstructions,
    *,
    places: Sequence[float] = EXAMPLE_PLACES,
    threshold_db: float = 30.0,
    fig: Canvas | None = None,
) -> Figure:
    """The spread of the VAE's reconstruction PSNR over many images (histogram, its mean
    and `threshold_db`), and examples at `places` (quantiles of PSNR: 0 the worst image,
    0.5 the median, 1 the best): each image, its reconstruction and where they differ.

    `reconstructions` come from `sdviz.autoencoder.reconstruct_many(pipe, images)`.

    Example:
        >>> images, _ = sdviz.shapes.ShapesWorld(split="test").batch(0, 128)
        >>> fig = sdviz.figures.reconstruction_quality(
        ...     sdviz.autoencoder.reconstruct_many(pipe, images))
    """
    expect(reconstructions, Reconstructions, "sdviz.autoencoder.reconstruct_many(pipe, images)")
    scores = reconstructions.psnr  # (n,) dB
    chosen = reconstructions.ranked(places)
    errors = (reconstructions.images - reconstructions.reconstructions).abs().mean(1)  # (n, H, W)
    top = float(errors[chosen].max())
    with style():
        fig = new_figure(
            fig,
            WIDE + PANEL * 0.9 * len(chosen) + 0.8,
            PANEL * 0.9 * 3 + 0.6,
            suptitle=f"VAE reconstruction of {len(scores)} images: mean {scores.mean():.1f} dB, "
            f"{reconstructions.below(threshold_db)} under {threshold_db:g} dB",
        )
        left, right = fig.subfigures(1, 2, width_ratios=[WIDE, PANEL * 0.9 * len(chosen) + 0.8])
        ax = left.subplots()
        ax.hist(scores, bins=min(30, max(5, len(scores) // 4)), color=LINE_COLORS[0], alpha=0.8)
        ax.axvline(scores.mean(), color=LINE_COLORS[1], lw=2, label=f"mean {scores.mean():.1f} dB")
        ax.axvline(threshold_db, color="black", ls="--", label=f"{threshold_db:g} dB")
        ax.set_xlabel("PSNR (dB), higher is closer")
        ax.set_ylabel("images")
        ax.legend(loc="upper left")
        ax.set_title("PSNR of each image")
        grid = right.subplots(3, len(chosen), squeeze=False)
        for col, (q, i) in enumerate(zip(places, chosen, strict=True)):
            show_image(grid[0, col], reconstructions.images[i], f"{_place(q)}: {scores[i]:.1f} dB")
            show_image(grid[1, col], reconstructions.reconstructions[i])
            im = show_map(grid[2, col], errors[i], cmap=ERROR_CMAP, vmin=0, vmax=top)
        for row, label in enumerate(("image", "reconstruction", "|difference|")):
            grid[row, 0].set_ylabel(label)
        right.colorbar(im, ax=list(grid[2]), label="mean |error|\n(0-1 scale)", shrink=0.9)
    return fig
