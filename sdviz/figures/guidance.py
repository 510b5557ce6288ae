"""Figure 11 — classifier-free guidance: ε_uncond, ε_text, their difference, a scale sweep.

Classifier-free guidance (Ho & Salimans 2022) runs the UNet twice per step, with the
prompt (ε_text) and with an empty or negative prompt (ε_uncond), and extrapolates:
ε = ε_uncond + g·(ε_text - ε_uncond). The difference is the direction the text adds;
the guidance scale g (7.5 in Stable Diffusion) sets how far to push along it. The
sweep draws one prompt and seed at several scales (`sdviz.probes.guidance_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from .denoising import step_label
from .style import (
    PANEL,
    SIGNED_CMAP,
    Canvas,
    check_channel,
    check_steps,
    maps_and_plot,
    new_figure,
    plot_over_t,
    require,
    show_image,
    show_map,
    step_timesteps,
    style,
    symmetric_limit,
)


def uses_guidance(run: Mapping[str, Any]) -> bool:
    """Whether a run was sampled with classifier-free guidance (two UNet halves per step)."""
    return bool(
        run.get(
            "pipeline.do_classifier_free_guidance", float(run.get("pipeline.guidance_scale", 0)) > 1
        )
    )


def _draw_maps(fig: Canvas, axes: Any, uncond: Any, text: Any, guided: Any, g: float) -> None:
    """ε_uncond, ε_text, their difference (own scale) and the guided ε of one channel."""
    lim = symmetric_limit(uncond, text, guided)
    kw = dict(cmap=SIGNED_CMAP, vmin=-lim, vmax=lim)
    show_map(axes[0], uncond, title="ε_uncond (empty prompt)", **kw)
    show_map(axes[1], text, title="ε_text (prompt)", **kw)
    dlim = symmetric_limit(text - uncond)
    kw_d = dict(cmap=SIGNED_CMAP, vmin=-dlim, vmax=dlim)
    im_d = show_map(axes[2], text - uncond, title="ε_text − ε_uncond", **kw_d)
    im = show_map(axes[3], guided, title=f"guided ε (g = {g:g})", **kw)
    fig.colorbar(im, ax=[axes[0], axes[1], axes[3]], label="noise value", shrink=0.8)
    fig.colorbar(im_d, ax=axes[2], label="difference", shrink=0.8)


def guidance_terms(
    run: Mapping[str, Any],
    step: int | None = None,
    *,
    channel: int = 0,
    fig: Canvas | None = None,
) -> Figure:
    """ε_uncond, ε_text, ε_text - ε_uncond and the guided ε at one step, plus ‖difference‖ over steps.

    Maps show latent `channel` (default 0) at step index `step` (default: the middle
    step); the line plot shows, for every step, how large the text's push is relative
    to the unconditional prediction.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", guidance_scale=7.5)
        >>> fig = sdviz.figures.guidance_terms(run, step=5)
    """
    require(
        run,
        "denoiser.noise_pred_uncond",
        "denoiser.noise_pred_text",
        "denoiser.noise_pred",
        hint="Generate with guidance_scale > 1 (classifier-free guidance) to record both halves.",
    )
    g = float(run.get("pipeline.guidance_scale", float("nan")))
    if not uses_guidance(run):
        raise ValueError(
            f"This run was generated without classifier-free guidance (guidance_scale={g:g}), "
            "so the UNet never predicted ε_uncond. Generate with guidance_scale > 1, e.g. 7.5."
        )
    uncond = to_numpy(run["denoiser.noise_pred_uncond"])  # (S, c, h, w)
    text = to_numpy(run["denoiser.noise_pred_text"])
    guided = to_numpy(run["denoiser.noise_pred"])
    n_steps, c = uncond.shape[:2]
    s = check_steps(n_steps // 2 if step is None else step, n_steps)[0]
    check_channel(channel, c)
    diff = text - uncond
    rel = np.linalg.norm(diff.reshape(n_steps, -1), axis=1) / np.linalg.norm(
        uncond.reshape(n_steps, -1), axis=1
    )
    t = step_timesteps(run, n_steps)
    with style():
        fig, axes = maps_and_plot(
            fig,
            4,
            f"Classifier-free guidance at {step_label(run, s)}, latent channel {channel}: "
            f"ε = ε_uncond + {g:g}·(ε_text − ε_uncond)",
        )
        _draw_maps(fig, axes[:4], uncond[s, channel], text[s, channel], guided[s, channel], g)
        plot_over_t(
            axes[4],
            t,
            rel,
            s,
            ylabel="‖ε_text − ε_uncond‖ / ‖ε_uncond‖",
            title="How hard the text pushes, per step",
        )
        axes[4].invert_xaxis()  # sampling runs from high t to low t
    return fig


def guidance_sweep(runs: Sequence[Mapping[str, Any]], *, fig: Canvas | None = None) -> Figure:
    """Runs of the same prompt and seed at several guidance scales, side by side.

    `runs` are traced runs (their `guidance_scale` labels the panels), e.g. from
    `sdviz.probes.guidance_runs(pipe, prompt, scales, seed=...)`.

    Example:
        >>> runs = sdviz.probes.guidance_runs(pipe, "a red circle", scales=[1, 2, 4, 8])
        >>> fig = sdviz.figures.guidance_sweep(runs)
        >>> fig = sdviz.figures.guidance_sweep([run_a, run_b])   # runs you already have
    """
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence) or isinstance(runs, str):
        raise TypeError(
            "Pass a list of runs, e.g. sdviz.probes.guidance_runs(pipe, prompt, scales); "
            f"got {type(runs).__name__}."
        )
    if not runs:
        raise ValueError("Pass at least one run.")
    for r in runs:
        require(r, "vae.image", "pipeline.guidance_scale")
    prompts = {r.get("pipeline.prompt") for r in runs}
    label = repr(runs[0].get("pipeline.prompt")) if len(prompts) == 1 else "several prompts"
    seeds = {r.get("pipeline.seed") for r in runs}
    seed_text = f", seed {runs[0].get('pipeline.seed')}" if len(seeds) == 1 else ""
    with style():
        fig = new_figure(
            fig,
            PANEL * len(runs) + 0.4,
            PANEL + 0.9,
            suptitle=f"Guidance-scale sweep: {label}{seed_text}",
        )
        axes = np.atleast_1d(fig.subplots(1, len(runs)))
        for ax, r in zip(axes, runs, strict=True):
            g = float(r["pipeline.guidance_scale"])
            note = " (no guidance)" if g <= 1 else ""
            show_image(ax, r["vae.image"], f"guidance g = {g:g}{note}")
    return fig
