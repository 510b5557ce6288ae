"""Figure 5 — the denoising filmstrip: x_t and the predicted clean image x̂0 along a run.

At each step the UNet predicts the noise ε̂ in the current latent x_t; from it the
scheduler forms the predicted clean latent x̂0 = (x_t - sqrt(1-ᾱ_t)·ε̂) / sqrt(ᾱ_t)
(DDIM, Song et al. 2021, Eq. 12) and moves x_t to a less noisy x_{t-1}. Decoding
both with the VAE shows the picture emerging: x_t stays noisy until the end while x̂0
settles on the layout early and on the details late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .style import PANEL, Canvas, check_steps, new_figure, require, show_image, style, to_numpy

ROWS = (
    ("latents", "x_t (decoded)"),
    ("pred_original_sample", "predicted x̂0 (decoded)"),
)


def step_label(run: Mapping[str, Any], i: int) -> str:
    """'step 3, t=781' for step index i of a run."""
    return f"step {i}, t={int(round(float(to_numpy(run['scheduler.step_timestep'])[i])))}"


def frames(run: Any, which: str, steps: Sequence[int], pipe: Any = None) -> np.ndarray:
    """(n, 3, H, W) images in [0, 1]: VAE-decoded with `pipe`, else the run's cheap preview."""
    if pipe is not None:
        return to_numpy(run.decode(pipe, which=which, steps=list(steps)))
    return to_numpy(run.preview(which, steps=list(steps)))


def denoising_filmstrip(
    run: Any,
    pipe: Any = None,
    steps: int | Sequence[int] | None = None,
    *,
    fig: Canvas | None = None,
) -> Figure:
    """Two rows over the chosen steps: x_t decoded (top) and x̂0 decoded (bottom).

    With `pipe` the latents go through the VAE decoder (cached by the run); without
    it the run's linear latent->RGB preview is used (instant, approximate). `steps`
    are step indices (default: 5 evenly spaced, first and last included).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", steps=20)
        >>> fig = sdviz.figures.denoising_filmstrip(run, pipe, steps=[0, 5, 10, 19])
    """
    require(run, "denoiser.latents", "denoiser.pred_original_sample", "scheduler.step_timestep")
    n_steps = int(to_numpy(run["scheduler.step_timestep"]).shape[0])
    chosen = check_steps(steps, n_steps)
    how = "VAE-decoded" if pipe is not None else "linear preview (pass pipe to decode)"
    with style():
        fig = new_figure(
            fig,
            PANEL * len(chosen) + 0.4,
            2 * PANEL + 0.9,
            suptitle=f"Denoising {run.get('pipeline.prompt', '')!r}: {n_steps} steps, {how}",
        )
        axes = np.atleast_2d(fig.subplots(2, len(chosen), squeeze=False))
        for row, (which, label) in enumerate(ROWS):
            images = frames(run, which, chosen, pipe)
            for col, i in enumerate(chosen):
                show_image(axes[row, col], images[col], step_label(run, i))
            axes[row, 0].set_ylabel(label)
    return fig
