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
from ..probes import STEP_IMAGES, StepImages, step_images
from .style import PANEL, Canvas, check_steps, new_figure, require, show_image, style

# row name -> (StepImages field, label when VAE-decoded, label when previewed)
STEP_ROWS = {
    "preview": ("preview", "x_t, linear preview", "x_t, linear preview"),
    "x_t": (STEP_IMAGES[0], "x_t, VAE-decoded", "x_t, linear preview"),
    "x0": (STEP_IMAGES[1], "predicted x̂0, VAE-decoded", "predicted x̂0, linear preview"),
}


def step_label(run: Mapping[str, Any], i: int) -> str:
    """'step 3, t=781' for step index i (counted from 0) of a run."""
    return f"step {i}, t={int(round(float(to_numpy(run['scheduler.step_timestep'])[i])))}"


def step_title(run: Mapping[str, Any], i: int) -> str:
    """'step 10 (of 0…19), t=451': step index i with the run's range of step indices."""
    label = step_label(run, i)
    return label.replace(",", f" (of 0…{run_steps(run) - 1}),", 1)


def rows_to_show(images: StepImages, show: Sequence[str] | None) -> list[tuple[str, str]]:
    """(StepImages field, label) per row: `show` validated; None: the preview of x_t (when
    the images are VAE-decoded and the run has one), x_t and x̂0."""
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
    return [(STEP_ROWS[r][0], STEP_ROWS[r][1 if images.decoded else 2]) for r in rows]


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
) -> Figure:
    """One row per view over the chosen steps: x_t's linear preview, x_t and x̂0.

    `images` from `sdviz.probes.step_images(run, pipe)` are VAE-decoded (cached by the
    run); without them the run's linear latent->RGB preview is drawn (instant,
    approximate). `show` picks the rows from "preview" (x_t through the linear preview,
    one pixel per latent), "x_t" and "x0" (default: all three when decoded). `steps` are
    step indices counted from 0 (default: 5 evenly spaced, first and last included).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", steps=20)
        >>> images = sdviz.probes.step_images(run, pipe, steps=[0, 5, 10, 19])
        >>> fig = sdviz.figures.denoising_filmstrip(run, images=images)
    """
    picked = pick_images(run, steps, images, default=5)
    rows = rows_to_show(picked, show)
    n_steps = run_steps(run)
    how = "" if picked.decoded else ", linear preview only (pass images= to decode)"
    with style():
        fig = new_figure(
            fig,
            PANEL * len(picked.steps) + 0.6,
            len(rows) * PANEL + 0.9,
            suptitle=f"Denoising {run.get('pipeline.prompt', '')!r}: {n_steps} steps, "
            f"numbered 0…{n_steps - 1}{how}",
        )
        axes = np.atleast_2d(fig.subplots(len(rows), len(picked.steps), squeeze=False))
        for row, (which, label) in enumerate(rows):
            for col, i in enumerate(picked.steps):
                show_image(axes[row, col], getattr(picked, which)[col], step_label(run, i))
            axes[row, 0].set_ylabel(label.replace(", ", ",\n"))
    return fig
