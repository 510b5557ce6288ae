"""Figure 11 — classifier-free guidance: ε_uncond, ε_text, their difference, a scale sweep.

Classifier-free guidance (Ho & Salimans 2022) runs the UNet twice per step, with the
prompt (ε_text) and with an empty or negative prompt (ε_uncond), and extrapolates:
ε = ε_uncond + g·(ε_text - ε_uncond). The difference is the direction the text adds;
the guidance scale g (7.5 in Stable Diffusion) sets how far to push along it. The
sweep draws one prompt and seed at several scales (`sdviz.probes.guidance_runs`);
`guidance_benefit` draws what guidance measurably buys (prompts followed, scored from
pixels) and costs (drawings further from the training images) against g, from
`sdviz.probes.measured_guidance`, with one prompt's images across g beneath.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from .denoising import step_label
from .style import (
    LINE_COLORS,
    MARKERS,
    PANEL,
    SIGNED_CMAP,
    WIDE,
    Canvas,
    check_channel,
    check_steps,
    expect,
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

SD_GUIDANCE = 7.5  # Stable Diffusion's usual scale, marked on the measured curves
DEFAULT_QUALITY = ("palette_error", "edge_sharpness")  # the quality panels drawn by default
ACCURACY_LABELS = {
    "one_object": "one object",
    "two_objects": "two objects",
    "placement": "two objects, left/right right",
    "held_out_pairs": "unseen colour-shape pair",
}
QUALITY_TITLES = {
    "palette_error": "colours off the palette (lower is closer)",
    "speckle": "stray specks (lower is closer)",
    "extra_objects": "extra objects (lower is closer)",
    "edge_sharpness": "edge sharpness (higher is sharper)",
}
QUALITY_LABELS = {
    "palette_error": "distance to nearest palette colour (RGB, 0-255)",
    "speckle": "saturated pixels in no object (%)",
    "extra_objects": "objects beyond those named, per image",
    "edge_sharpness": "steepest change / contrast (1/px)",
}


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
    g = float(run.get("pipeline.guidance_scale", float("nan")))
    if not uses_guidance(run):
        raise ValueError(
            f"This run was generated without classifier-free guidance (guidance_scale={g:g}), "
            "so the UNet never predicted ε_uncond. Generate with guidance_scale > 1, e.g. 7.5."
        )
    require(
        run,
        "denoiser.noise_pred_uncond",
        "denoiser.noise_pred_text",
        "denoiser.noise_pred",
        hint="Generate with guidance_scale > 1 (classifier-free guidance) to record both halves.",
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


def _mark_scales(ax: Any, recommended: float) -> None:
    """Dashed line at the recommended scale, dotted at Stable Diffusion's usual 7.5."""
    ax.axvline(recommended, color="black", ls="--", lw=1, label=f"recommended g = {recommended:g}")
    ax.axvline(SD_GUIDANCE, color="grey", ls=":", lw=1.2, label=f"SD's usual g = {SD_GUIDANCE:g}")


def _scale_axis(ax: Any, scales: Sequence[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(scales), [f"{g:g}" for g in scales], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("guidance scale g (log axis)")
    ax.grid(alpha=0.3)


def _draw_accuracy(ax: Any, measured: Any) -> None:
    for i, (key, values) in enumerate(measured.accuracy.items()):
        n = measured.n.get("two_objects" if key == "placement" else key, "?")
        label = f"{ACCURACY_LABELS.get(key, key)} (n={n})"
        ax.plot(measured.scales, values, marker=MARKERS[i % len(MARKERS)], label=label)
    _mark_scales(ax, measured.recommended)
    _scale_axis(ax, measured.scales)
    ax.set_ylabel("prompts followed (%)")
    ax.set_title("Benefit: prompts followed (higher is better)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)


def _draw_quality(ax: Any, measured: Any, key: str, color: str) -> None:
    ax.plot(measured.scales, measured.quality[key], marker="o", color=color, label="generated")
    real = measured.reference.get(key)
    if real is not None:
        ax.axhline(real, color="#009E73", lw=1.5, label=f"real ShapesWorld ({real:.2g})")
    vae = measured.reference_vae.get(key)
    if vae is not None:
        ax.axhline(
            vae, color="#56B4E9", lw=1.5, ls="-.", label=f"real, through the VAE ({vae:.2g})"
        )
    _mark_scales(ax, measured.recommended)
    _scale_axis(ax, measured.scales)
    ax.set_ylabel(QUALITY_LABELS.get(key, key))
    ax.set_title(f"Quality: {QUALITY_TITLES.get(key, key)}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[:-2], labels[:-2], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))


def guidance_benefit(
    measured: Any,
    runs: Sequence[Mapping[str, Any]] = (),
    *,
    quality: Sequence[str] | None = None,
    fig: Canvas | None = None,
) -> Figure:
    """What guidance buys and costs, measured: prompt-following accuracy per task against g,
    image-quality statistics against g (lines: real ShapesWorld images, and the same
    through the VAE), and beneath, one prompt's images at each scale (`runs`, optional).

    `measured` is `sdviz.probes.measured_guidance(...)` (the model folder's benchmark);
    `runs` come from `sdviz.probes.guidance_runs(pipe, prompt, scales, seed=...)`. When
    they are the benchmark's own example (same prompt and seed), each image is labelled
    with the benchmark's verdict: ✓ followed, ✗ not. Images are drawn pixel for pixel
    (nearest neighbour), enlarged. `quality` names the quality panels (keys of
    `measured.quality`); default: the colour error and the edge sharpness.

    Example:
        >>> measured = sdviz.probes.measured_guidance()
        >>> ex = measured.example
        >>> runs = sdviz.probes.guidance_runs(pipe, ex["prompt"], measured.scales, seed=ex["seed"])
        >>> fig = sdviz.figures.guidance_benefit(measured, runs)
    """
    from ..probes.guidance import MeasuredGuidance

    expect(measured, MeasuredGuidance, "sdviz.probes.measured_guidance")
    if quality is None:  # the colour error and the edges, those the record has
        quality = [k for k in DEFAULT_QUALITY if k in measured.quality]
    unknown = [k for k in quality if k not in measured.quality]
    if unknown:
        raise ValueError(f"No quality measure {unknown}; the record has {list(measured.quality)}.")
    runs = list(runs)
    for r in runs:
        require(r, "vae.image", "pipeline.guidance_scale")
    n_top = 1 + len(quality)
    width = max(n_top * (WIDE + 0.4), 1.45 * len(runs))
    with style():
        fig = new_figure(
            fig,
            width,
            4.9 + (2.3 if runs else 0),
            suptitle=f"Classifier-free guidance on {Path(measured.source).parent.name}, "
            "measured from pixels "
            f"({measured.n.get('one_object', '?')} + {measured.n.get('two_objects', '?')} "
            "prompts per scale)",
        )
        top, bottom = fig.subfigures(2, 1, height_ratios=[4.9, 2.3]) if runs else (fig, None)
        axes = np.atleast_1d(top.subplots(1, n_top))
        _draw_accuracy(axes[0], measured)
        for ax, key, color in zip(axes[1:], quality, LINE_COLORS[3:], strict=False):
            _draw_quality(ax, measured, key, color)
        if bottom is not None:
            _draw_example(bottom, measured, runs)
    return fig


def _draw_example(fig: Canvas, measured: Any, runs: list[Mapping[str, Any]]) -> None:
    """One prompt's images across g, with the benchmark's verdict when it scored them."""
    ex = measured.example
    prompt, seed = runs[0].get("pipeline.prompt"), runs[0].get("pipeline.seed")
    same = (prompt, seed, getattr(runs[0], "n_steps", None)) == (
        ex.get("prompt"),
        ex.get("seed"),
        measured.steps,
    )
    scored = same and all(r.get("pipeline.prompt") == prompt for r in runs)
    verdict = dict(zip(measured.scales, ex.get("followed", []), strict=False)) if scored else {}
    axes = np.atleast_1d(fig.subplots(1, len(runs)))
    for ax, r in zip(axes, runs, strict=True):
        g = float(r["pipeline.guidance_scale"])
        mark = {True: " ✓", False: " ✗"}.get(verdict.get(g), "")
        show_image(ax, r["vae.image"], f"g = {g:g}{mark}")
    note = " (✓/✗: the benchmark's scorer on this prompt and seed)" if verdict else ""
    fig.suptitle(f"{prompt!r}, seed {seed}{note}", fontsize=11)
