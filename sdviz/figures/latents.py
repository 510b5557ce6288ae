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
from ..language import Texts, course_language, drawing
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
PLACE_NAMES = {0.0: "worst", 0.5: "median", 1.0: "best"}  # quantile -> its Texts key

T = Texts(
    __name__,
    {
        "latent_space": (
            "Latent space: 3×{H}×{W} = {pixels:,} numbers → {c}×{h}×{w} = {numbers:,} numbers "
            "({ratio:.0f}× fewer)",
            "潜在空间：3×{H}×{W} = {pixels:,} 个数 → {c}×{h}×{w} = {numbers:,} 个数"
            "（只有原来的 1/{ratio:.0f}）",
        ),
        "image_size": ("image 3×{H}×{W}", "图像 3×{H}×{W}"),
        "channel": ("latent channel {i} ({h}×{w})", "潜在通道 {i}（{h}×{w}）"),
        "latent_value": ("latent value", "潜在表示的值"),
        "reconstruction_psnr": ("reconstruction\nPSNR {psnr:.1f} dB", "重建\nPSNR {psnr:.1f} dB"),
        "worst": ("worst", "最差"),
        "median": ("median", "中位数"),
        "best": ("best", "最好"),
        "percentile.st": ("{n}st percentile", "第 {n} 百分位"),
        "percentile.nd": ("{n}nd percentile", "第 {n} 百分位"),
        "percentile.rd": ("{n}rd percentile", "第 {n} 百分位"),
        "percentile.th": ("{n}th percentile", "第 {n} 百分位"),
        "example": ("{place}: {psnr:.1f} dB", "{place}：{psnr:.1f} dB"),
        "quality": (
            "VAE reconstruction of {n} images: mean {mean:.1f} dB, {below} under {threshold:g} dB",
            "VAE 对 {n} 张图像的重建：平均 {mean:.1f} dB，{below} 张低于 {threshold:g} dB",
        ),
        "mean": ("mean {mean:.1f} dB", "平均 {mean:.1f} dB"),
        "psnr_axis": ("PSNR (dB), higher is closer", "PSNR（dB），越高越接近"),
        "images": ("images", "图像数"),
        "psnr_title": ("PSNR of each image", "每张图像的 PSNR"),
        "row.image": ("image", "图像"),
        "row.reconstruction": ("reconstruction", "重建"),
        "row.difference": ("|difference|", "|差值|"),
        "error": ("mean |error|\n(0-1 scale)", "平均 |误差|\n（0-1 标度）"),
    },
)


def latent_space(
    reconstruction: Reconstruction, *, fig: Canvas | None = None, lang: str | None = None
) -> Figure:
    """The image, each latent channel (signed colormap), the VAE reconstruction and the ratio.

    `reconstruction` comes from `sdviz.autoencoder.reconstruct(pipe, image)`:
    decode(encode(image)) through the pipeline's VAE, with its PSNR. `lang`: the language
    of its labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.latent_space(sdviz.autoencoder.reconstruct(pipe, run))
    """
    lang = course_language(lang)
    expect(reconstruction, Reconstruction, "sdviz.autoencoder.reconstruct(pipe, image)")
    z = reconstruction.latents  # (c, h, w)
    c, h, w = z.shape
    H, W = reconstruction.image.shape[1:]
    shown = min(c, MAX_CHANNELS)
    ratio = 3 * H * W / (c * h * w)
    title = T(
        "latent_space",
        lang,
        H=H,
        W=W,
        pixels=3 * H * W,
        c=c,
        h=h,
        w=w,
        numbers=c * h * w,
        ratio=ratio,
    )
    with drawing(lang), style():
        fig = new_figure(fig, PANEL * (shown + 2) + 0.8, PANEL + 0.9, suptitle=title)
        axes = fig.subplots(1, shown + 2)
        show_image(axes[0], reconstruction.image, T("image_size", lang, H=H, W=W))
        lim = symmetric_limit(z[:shown])
        for i in range(shown):
            im = show_map(
                axes[1 + i],
                z[i],
                cmap=SIGNED_CMAP,
                vmin=-lim,
                vmax=lim,
                title=T("channel", lang, i=i, h=h, w=w),
            )
        label = T("latent_value", lang)
        fig.colorbar(im, ax=list(axes[1 : 1 + shown]), label=label, shrink=0.8)
        psnr = T("reconstruction_psnr", lang, psnr=reconstruction.psnr)
        show_image(axes[-1], reconstruction.reconstruction, psnr)
    return fig


def _place(q: float, lang: str = "en") -> str:
    """0 -> 'worst', 0.5 -> 'median', 0.1 -> '10th percentile' (in `lang`)."""
    if q in PLACE_NAMES:
        return T(PLACE_NAMES[q], lang)
    n = round(q * 100)
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return T(f"percentile.{suffix}", lang, n=n)


def reconstruction_quality(
    reconstructions: Reconstructions,
    *,
    places: Sequence[float] = EXAMPLE_PLACES,
    threshold_db: float = 30.0,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """The spread of the VAE's reconstruction PSNR over many images (histogram, its mean
    and `threshold_db`), and examples at `places` (quantiles of PSNR: 0 the worst image,
    0.5 the median, 1 the best): each image, its reconstruction and where they differ.

    `reconstructions` come from `sdviz.autoencoder.reconstruct_many(pipe, images)`.
    `lang`: the language of its labels (default `sdviz.language.course_language`).

    Example:
        >>> images, _ = sdviz.shapes.ShapesWorld(split="test").batch(0, 128)
        >>> fig = sdviz.figures.reconstruction_quality(
        ...     sdviz.autoencoder.reconstruct_many(pipe, images))
    """
    lang = course_language(lang)
    expect(reconstructions, Reconstructions, "sdviz.autoencoder.reconstruct_many(pipe, images)")
    scores = reconstructions.psnr  # (n,) dB
    chosen = reconstructions.ranked(places)
    errors = (reconstructions.images - reconstructions.reconstructions).abs().mean(1)  # (n, H, W)
    top = float(errors[chosen].max())
    title = T(
        "quality",
        lang,
        n=len(scores),
        mean=scores.mean(),
        below=reconstructions.below(threshold_db),
        threshold=threshold_db,
    )
    with drawing(lang), style():
        fig = new_figure(
            fig, WIDE + PANEL * 0.9 * len(chosen) + 0.8, PANEL * 0.9 * 3 + 0.6, suptitle=title
        )
        left, right = fig.subfigures(1, 2, width_ratios=[WIDE, PANEL * 0.9 * len(chosen) + 0.8])
        ax = left.subplots()
        ax.hist(scores, bins=min(30, max(5, len(scores) // 4)), color=LINE_COLORS[0], alpha=0.8)
        label = T("mean", lang, mean=scores.mean())
        ax.axvline(scores.mean(), color=LINE_COLORS[1], lw=2, label=label)
        ax.axvline(threshold_db, color="black", ls="--", label=f"{threshold_db:g} dB")
        ax.set_xlabel(T("psnr_axis", lang))
        ax.set_ylabel(T("images", lang))
        ax.legend(loc="upper left")
        ax.set_title(T("psnr_title", lang))
        grid = right.subplots(3, len(chosen), squeeze=False)
        for col, (q, i) in enumerate(zip(places, chosen, strict=True)):
            title = T("example", lang, place=_place(q, lang), psnr=scores[i])
            show_image(grid[0, col], reconstructions.images[i], title)
            show_image(grid[1, col], reconstructions.reconstructions[i])
            im = show_map(grid[2, col], errors[i], cmap=ERROR_CMAP, vmin=0, vmax=top)
        for row, name in enumerate(("image", "reconstruction", "difference")):
            grid[row, 0].set_ylabel(T(f"row.{name}", lang))
        right.colorbar(im, ax=list(grid[2]), label=T("error", lang), shrink=0.9)
    return fig
