"""Figure 2 — forward noising: one image at increasing t, in pixel space and latent space.

The forward process of DDPM (Ho et al. 2020, Eq. 4) jumps to any noise level at once:
x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε with ε ~ N(0, I). Latent diffusion (Rombach et
al. 2022) applies it to the VAE latents instead of pixels. Noisy latents are drawn two
ways: through a linear latent->RGB preview (one pixel per latent position: the noise
looks like noise) and decoded by the VAE (what a decoder trained on one world makes of
noise: shapes and colours of that world).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ..language import Texts, course_language
from ..probes import NoisedImages
from .style import PANEL, Canvas, expect, new_figure, show_image, style

T = Texts(
    __name__,
    {
        "pixels": ("pixel space", "像素空间"),
        "preview": ("latent space,\nlinear preview", "潜在空间，\n线性预览"),
        "decoded": ("latent space,\nVAE-decoded", "潜在空间，\n经 VAE 解码"),
        "pixel_space": ("pixel space (3×{H}×{W})", "像素空间（3×{H}×{W}）"),
        "latent_space": ("latent space ({c}×{h}×{w})", "潜在空间（{c}×{h}×{w}）"),
        "suptitle": (
            "Forward noising x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, in {spaces}",
            "前向加噪 x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε，在{spaces}中",
        ),
        "and": (" and ", "和"),
        "panel": ("t={t}, ᾱ={abar:.3f}", "t={t}，ᾱ={abar:.3f}"),
    },
)

# row name -> (NoisedImages field, key of T's row label)
NOISING_ROWS = {
    "pixels": ("pixels", "pixels"),
    "preview": ("preview", "preview"),
    "decoded": ("decoded", "decoded"),
}


def forward_noising(
    noised: NoisedImages,
    *,
    show: Sequence[str] | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """An image noised to each timestep: one row per view, one column per t.

    `noised` comes from `sdviz.probes.noised_images(pipe, image, timesteps, seed=...)`:
    one noise draw for all t. `show` picks the rows, from "pixels" (noise added to the
    pixels), "preview" (noise added to the latents, drawn by the linear latent->RGB map)
    and "decoded" (the same latents decoded by the VAE); default: all three. Each panel
    is titled with t and ᾱ_t. `lang`: the language of the texts ("en", "zh"; default
    `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> noised = sdviz.probes.noised_images(pipe, run, timesteps=[0, 250, 500, 999])
        >>> fig = sdviz.figures.forward_noising(noised, show=["preview", "decoded"])
    """
    lang = course_language(lang)
    expect(noised, NoisedImages, "sdviz.probes.noised_images(pipe, image)")
    rows = list(NOISING_ROWS if show is None else show)
    unknown = [r for r in rows if r not in NOISING_ROWS]
    if unknown or not rows:
        raise ValueError(f"show picks rows from {list(NOISING_ROWS)}; got {list(show or [])}.")
    if show is None and noised.preview is None:
        rows.remove("preview")
    elif "preview" in rows and noised.preview is None:
        raise ValueError("This record has no linear preview (its latents held inf or NaN).")
    ts, abar = noised.timesteps, noised.alpha_bar
    c, h, w = noised.latent_shape
    H, W = noised.pixels.shape[-2:]
    spaces = [T("pixel_space", lang, H=H, W=W)] if "pixels" in rows else []
    spaces += [T("latent_space", lang, c=c, h=h, w=w)] if rows != ["pixels"] else []
    with style(lang):
        fig = new_figure(
            fig,
            PANEL * len(ts) + 0.4,
            len(rows) * PANEL + 1.0,
            suptitle=T("suptitle", lang, spaces=T("and", lang).join(spaces)),
        )
        axes = fig.subplots(len(rows), len(ts), squeeze=False)
        for row, name in enumerate(rows):
            field, label = NOISING_ROWS[name]
            for col, (t, a) in enumerate(zip(ts, abar.tolist(), strict=True)):
                show_image(
                    axes[row, col], getattr(noised, field)[col], T("panel", lang, t=t, abar=a)
                )
            axes[row, 0].set_ylabel(T(label, lang))
    return fig
