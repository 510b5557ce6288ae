"""Figure 5 — the denoising filmstrip: x_t and the predicted clean image x̂0 along a run.

At each step the UNet predicts the noise ε̂ in the current latent x_t; from it the
scheduler forms the predicted clean latent x̂0 = (x_t - sqrt(1-ᾱ_t)·ε̂) / sqrt(ᾱ_t)
(DDIM, Song et al. 2021, Eq. 12) and moves x_t to a less noisy x_{t-1}. Decoding
both with the VAE shows the picture emerging: x_t stays noisy until the end while x̂0
settles on the layout early and on the details late. x_t is also drawn through the run's
linear latent->RGB preview, because the VAE decodes noise into the world it was trained
on (sdviz-mini's: pale shards of ShapesWorld colours), while the preview shows noise as
noise. Steps are counted from 0, as `run[...][i]` indexes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from ..language import Texts, course_language
from ..probes import STEP_IMAGES, StepImages, step_images
from .style import PANEL, Canvas, check_steps, new_figure, require, show_image, style

T = Texts(
    __name__,
    {
        "x_t_preview": ("x_t, linear preview", "x_t，线性预览"),
        "x_t_decoded": ("x_t, VAE-decoded", "x_t，经 VAE 解码"),
        "x0_decoded": ("predicted x̂0, VAE-decoded", "预测的 x̂0，经 VAE 解码"),
        "x0_preview": ("predicted x̂0, linear preview", "预测的 x̂0，线性预览"),
        "step": ("step {i}, t={t}", "第 {i} 步，t={t}"),
        "step_of": ("step {i} (of 0…{last}), t={t}", "第 {i} 步（编号 0…{last}），t={t}"),
        "suptitle": (
            "Denoising {prompt!r}: {n} steps, numbered 0…{last}",
            "对 {prompt!r} 去噪：共 {n} 步，编号 0…{last}",
        ),
        "suptitle_preview": (
            "Denoising {prompt!r}: {n} steps, numbered 0…{last}, linear preview only "
            "(pass images= to decode)",
            "对 {prompt!r} 去噪：共 {n} 步，编号 0…{last}，仅线性预览（传入 images= 才经 VAE 解码）",
        ),
    },
)

# row name -> (StepImages field, key of T's label when VAE-decoded, when previewed)
STEP_ROWS = {
    "preview": ("preview", "x_t_preview", "x_t_preview"),
    "x_t": (STEP_IMAGES[0], "x_t_decoded", "x_t_preview"),
    "x0": (STEP_IMAGES[1], "x0_decoded", "x0_preview"),
}


def _timestep(run: Mapping[str, Any], i: int) -> int:
    return int(round(float(to_numpy(run["scheduler.step_timestep"])[i])))


def step_label(run: Mapping[str, Any], i: int, lang: str | None = None) -> str:
    """'step 3, t=781' for step index i (counted from 0) of a run ('第 3 步，t=781')."""
    return T("step", course_language(lang), i=i, t=_timestep(run, i))


def step_title(run: Mapping[str, Any], i: int, lang: str | None = None) -> str:
    """'step 10 (of 0…19), t=451': step index i with the run's range of step indices."""
    lang = course_language(lang)
    return T("step_of", lang, i=i, last=run_steps(run) - 1, t=_timestep(run, i))


def rows_to_show(
    images: StepImages, show: Sequence[str] | None, lang: str | None = None
) -> list[tuple[str, str]]:
    """(StepImages field, label in `lang`) per row: `show` validated; None: the preview of x_t
    (when the images are VAE-decoded and the run has one), x_t and x̂0."""
    if show is None:
        show = ["x_t", "x0"]
        if images.decoded and images.preview is not None:
            show.insert(0, "preview")
    rows = list(show)
    unknown = [r for r in rows if r not in STEP_ROWS]
    if unknown or not rows:
        raise ValueError(f"show picks rows from {list(STEP_ROWS)}; got {rows}.")
    if "preview" in rows and images.preview is None:
        raise ValueError(
            "This run has no linear preview (it fits one on the final image: was "
            "output_type='latent'?); show=['x_t', 'x0'] draws the VAE decodes."
        )
    lang = course_language(lang)
    return [(STEP_ROWS[r][0], T(STEP_ROWS[r][1 if images.decoded else 2], lang)) for r in rows]


def run_steps(run: Mapping[str, Any]) -> int:
    """How many sampling steps a run recorded."""
    return int(to_numpy(run["scheduler.step_timestep"]).shape[0])


def pick_images(
    run: Any, steps: int | Sequence[int] | None, images: StepImages | None, default: int
) -> StepImages:
    """The images to draw at `steps`: taken from `images` (a `step_images` record), else
    the run's linear preview. `steps` None: `default` evenly spaced steps (None: all),
    or all of `images` when it holds a chosen few."""
    require(run, "denoiser.latents", "denoiser.pred_original_sample", "scheduler.step_timestep")
    n_steps = run_steps(run)
    if images is not None and not isinstance(images, StepImages):
        raise TypeError(
            f"images must come from sdviz.probes.step_images(run, pipe), got "
            f"{type(images).__name__}; figures draw, they decode nothing themselves."
        )
    if images is not None and steps is None and len(images.steps) < n_steps:
        return images
    chosen = check_steps(steps, n_steps, default or n_steps)
    if images is None:
        return step_images(run, None, chosen)  # the preview: no network
    missing = [s for s in chosen if s not in images.steps]
    if missing:
        raise ValueError(
            f"Steps {missing} are not among the decoded ones {images.steps}: decode them with "
            "sdviz.probes.step_images(run, pipe, steps=...)."
        )
    idx = [images.steps.index(s) for s in chosen]
    x_t, x0 = (getattr(images, which)[idx] for which in STEP_IMAGES)
    preview = None if images.preview is None else images.preview[idx]
    return StepImages(chosen, x_t, x0, images.decoded, preview)


def denoising_filmstrip(
    run: Any,
    steps: int | Sequence[int] | None = None,
    *,
    images: StepImages | None = None,
    show: Sequence[str] | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """One row per view over the chosen steps: x_t's linear preview, x_t and x̂0.

    `images` from `sdviz.probes.step_images(run, pipe)` are VAE-decoded (cached by the
    run); without them the run's linear latent->RGB preview is drawn (instant,
    approximate). `show` picks the rows from "preview" (x_t through the linear preview,
    one pixel per latent), "x_t" and "x0" (default: all three when decoded). `steps` are
    step indices counted from 0 (default: 5 evenly spaced, first and last included);
    `lang` the language of the texts ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", steps=20)
        >>> images = sdviz.probes.step_images(run, pipe, steps=[0, 5, 10, 19])
        >>> fig = sdviz.figures.denoising_filmstrip(run, images=images)
    """
    lang = course_language(lang)
    picked = pick_images(run, steps, images, default=5)
    rows = rows_to_show(picked, show, lang)
    n_steps = run_steps(run)
    prompt = run.get("pipeline.prompt", "")
    with style(lang):
        fig = new_figure(
            fig,
            PANEL * len(picked.steps) + 0.6,
            len(rows) * PANEL + 0.9,
            suptitle=T(
                "suptitle" if picked.decoded else "suptitle_preview",
                lang,
                prompt=prompt,
                n=n_steps,
                last=n_steps - 1,
            ),
        )
        axes = np.atleast_2d(fig.subplots(len(rows), len(picked.steps), squeeze=False))
        for row, (which, label) in enumerate(rows):
            for col, i in enumerate(picked.steps):
                show_image(axes[row, col], getattr(picked, which)[col], step_label(run, i, lang))
            axes[row, 0].set_ylabel(label.replace(", ", ",\n").replace("，", "，\n"))
    return fig
