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
from ..language import Texts, course_language, drawing
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
# the benchmark's measures (keys of MeasuredGuidance.accuracy / .quality) -> (English, Chinese)
ACCURACY_LABELS = {
    "one_object": ("one object", "单个物体"),
    "two_objects": ("two objects", "两个物体"),
    "placement": ("two objects, left/right right", "两个物体，左右位置正确"),
    "held_out_pairs": ("unseen colour-shape pair", "未见过的颜色-形状组合"),
}
QUALITY_TITLES = {
    "palette_error": (
        "Quality: colours off the palette (lower is closer)",
        "质量：偏离调色板的颜色（越低越接近）",
    ),
    "speckle": ("Quality: stray specks (lower is closer)", "质量：零星斑点（越低越接近）"),
    "extra_objects": (
        "Quality: extra objects (lower is closer)",
        "质量：多余的物体（越低越接近）",
    ),
    "edge_sharpness": (
        "Quality: edge sharpness (higher is sharper)",
        "质量：边缘锐度（越高越锐利）",
    ),
}
QUALITY_LABELS = {
    "palette_error": (
        "distance to nearest palette colour (RGB, 0-255)",
        "到调色板中最近颜色的距离（RGB，0-255）",
    ),
    "speckle": ("saturated pixels in no object (%)", "不属于任何物体的饱和像素（%）"),
    "extra_objects": ("objects beyond those named, per image", "每张图像中未提及的物体数"),
    "edge_sharpness": ("steepest change / contrast (1/px)", "最陡变化 / 对比度（1/px）"),
}

T = Texts(
    __name__,
    {
        **{f"task.{k}": v for k, v in ACCURACY_LABELS.items()},
        **{f"quality.{k}": v for k, v in QUALITY_TITLES.items()},
        **{f"quality_axis.{k}": v for k, v in QUALITY_LABELS.items()},
        "quality": ("Quality: {name}", "质量：{name}"),
        "uncond": ("ε_uncond (empty prompt)", "ε_uncond（空提示词）"),
        "text": ("ε_text (prompt)", "ε_text（提示词）"),
        "guided": ("guided ε (g = {g:g})", "引导后的 ε（g = {g:g}）"),
        "noise_value": ("noise value", "噪声值"),
        "difference": ("difference", "差值"),
        "terms": (
            "Classifier-free guidance at step {step}, t={t}, latent channel {channel}: "
            "ε = ε_uncond + {g:g}·(ε_text − ε_uncond)",
            "第 {step} 步（t={t}）的无分类器引导，潜在通道 {channel}："
            "ε = ε_uncond + {g:g}·(ε_text − ε_uncond)",
        ),
        "push": ("How hard the text pushes, per step", "文本在每一步推动的力度"),
        "several_prompts": ("several prompts", "多个提示词"),
        "sweep": ("Guidance-scale sweep: {label}", "引导系数扫描：{label}"),
        "sweep_seed": (
            "Guidance-scale sweep: {label}, seed {seed}",
            "引导系数扫描：{label}，随机种子 {seed}",
        ),
        "sweep_panel": ("guidance g = {g:g}", "引导系数 g = {g:g}"),
        "sweep_panel_none": ("guidance g = {g:g} (no guidance)", "引导系数 g = {g:g}（无引导）"),
        "recommended": ("recommended g = {g:g}", "推荐的 g = {g:g}"),
        "sd_usual": ("SD's usual g = {g:g}", "SD 常用的 g = {g:g}"),
        "scale_axis": ("guidance scale g (log axis)", "引导系数 g（对数轴）"),
        "task_n": ("{task} (n={n})", "{task}（n={n}）"),
        "followed": ("prompts followed (%)", "遵循提示词的比例（%）"),
        "benefit": (
            "Benefit: prompts followed (higher is better)",
            "收益：遵循提示词的比例（越高越好）",
        ),
        "generated": ("generated", "生成的图像"),
        "real": ("real ShapesWorld ({value:.2g})", "真实 ShapesWorld 图像（{value:.2g}）"),
        "real_vae": ("real, through the VAE ({value:.2g})", "真实图像经 VAE 重建（{value:.2g}）"),
        "measured": (
            "Classifier-free guidance on {model}, measured from pixels "
            "({one} + {two} prompts per scale)",
            "{model} 的无分类器引导，从像素测得（每个引导系数 {one} + {two} 个提示词）",
        ),
        "example": ("{prompt!r}, seed {seed}", "{prompt!r}，随机种子 {seed}"),
        "example_scored": (
            "{prompt!r}, seed {seed} (✓/✗: the benchmark's scorer on this prompt and seed)",
            "{prompt!r}，随机种子 {seed}（✓/✗：基准测试的评分器对这个提示词和随机种子的判定）",
        ),
    },
)


def _named(kind: str, table: dict[str, tuple[str, str]], key: str, lang: str) -> str:
    """A measure's label in `lang` (a measure this module does not know: its key)."""
    return T(f"{kind}.{key}", lang) if key in table else key


def uses_guidance(run: Mapping[str, Any]) -> bool:
    """Whether a run was sampled with classifier-free guidance (two UNet halves per step)."""
    return bool(
        run.get(
            "pipeline.do_classifier_free_guidance", float(run.get("pipeline.guidance_scale", 0)) > 1
        )
    )


def _draw_maps(
    fig: Canvas, axes: Any, uncond: Any, text: Any, guided: Any, g: float, lang: str
) -> None:
    """ε_uncond, ε_text, their difference (own scale) and the guided ε of one channel."""
    lim = symmetric_limit(uncond, text, guided)
    kw = dict(cmap=SIGNED_CMAP, vmin=-lim, vmax=lim)
    show_map(axes[0], uncond, title=T("uncond", lang), **kw)
    show_map(axes[1], text, title=T("text", lang), **kw)
    dlim = symmetric_limit(text - uncond)
    kw_d = dict(cmap=SIGNED_CMAP, vmin=-dlim, vmax=dlim)
    im_d = show_map(axes[2], text - uncond, title="ε_text − ε_uncond", **kw_d)
    im = show_map(axes[3], guided, title=T("guided", lang, g=g), **kw)
    label = T("noise_value", lang)
    fig.colorbar(im, ax=[axes[0], axes[1], axes[3]], label=label, shrink=0.8)
    fig.colorbar(im_d, ax=axes[2], label=T("difference", lang), shrink=0.8)


def guidance_terms(
    run: Mapping[str, Any],
    step: int | None = None,
    *,
    channel: int = 0,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """ε_uncond, ε_text, ε_text - ε_uncond and the guided ε at one step, plus ‖difference‖ over steps.

    Maps show latent `channel` (default 0) at step index `step` (default: the middle
    step); the line plot shows, for every step, how large the text's push is relative
    to the unconditional prediction. `lang`: the language of its labels ("en", "zh";
    default `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", guidance_scale=7.5)
        >>> fig = sdviz.figures.guidance_terms(run, step=5)
    """
    lang = course_language(lang)
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
    title = T("terms", lang, step=s, t=int(round(float(t[s]))), channel=channel, g=g)
    with drawing(lang), style():
        fig, axes = maps_and_plot(fig, 4, title)
        maps = uncond[s, channel], text[s, channel], guided[s, channel]
        _draw_maps(fig, axes[:4], *maps, g, lang)
        plot_over_t(
            axes[4],
            t,
            rel,
            s,
            ylabel="‖ε_text − ε_uncond‖ / ‖ε_uncond‖",
            title=T("push", lang),
            lang=lang,
        )
        axes[4].invert_xaxis()  # sampling runs from high t to low t
    return fig


def guidance_sweep(
    runs: Sequence[Mapping[str, Any]], *, fig: Canvas | None = None, lang: str | None = None
) -> Figure:
    """Runs of the same prompt and seed at several guidance scales, side by side.

    `runs` are traced runs (their `guidance_scale` labels the panels), e.g. from
    `sdviz.probes.guidance_runs(pipe, prompt, scales, seed=...)`. `lang`: the language of
    its labels (default `sdviz.language.course_language`).

    Example:
        >>> runs = sdviz.probes.guidance_runs(pipe, "a red circle", scales=[1, 2, 4, 8])
        >>> fig = sdviz.figures.guidance_sweep(runs)
        >>> fig = sdviz.figures.guidance_sweep([run_a, run_b])   # runs you already have
    """
    lang = course_language(lang)
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
    one = len(prompts) == 1
    label = repr(runs[0].get("pipeline.prompt")) if one else T("several_prompts", lang)
    seeds = {r.get("pipeline.seed") for r in runs}
    if len(seeds) == 1:
        title = T("sweep_seed", lang, label=label, seed=runs[0].get("pipeline.seed"))
    else:
        title = T("sweep", lang, label=label)
    with drawing(lang), style():
        fig = new_figure(fig, PANEL * len(runs) + 0.4, PANEL + 0.9, suptitle=title)
        axes = np.atleast_1d(fig.subplots(1, len(runs)))
        for ax, r in zip(axes, runs, strict=True):
            g = float(r["pipeline.guidance_scale"])
            show_image(
                ax, r["vae.image"], T("sweep_panel_none" if g <= 1 else "sweep_panel", lang, g=g)
            )
    return fig


def _mark_scales(ax: Any, recommended: float, lang: str) -> None:
    """Dashed line at the recommended scale, dotted at Stable Diffusion's usual 7.5."""
    label = T("recommended", lang, g=recommended)
    ax.axvline(recommended, color="black", ls="--", lw=1, label=label)
    ax.axvline(SD_GUIDANCE, color="grey", ls=":", lw=1.2, label=T("sd_usual", lang, g=SD_GUIDANCE))


def _scale_axis(ax: Any, scales: Sequence[float], lang: str) -> None:
    ax.set_xscale("log")
    ax.set_xticks(list(scales), [f"{g:g}" for g in scales], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel(T("scale_axis", lang))
    ax.grid(alpha=0.3)


def _draw_accuracy(ax: Any, measured: Any, lang: str) -> None:
    for i, (key, values) in enumerate(measured.accuracy.items()):
        n = measured.n.get("two_objects" if key == "placement" else key, "?")
        label = T("task_n", lang, task=_named("task", ACCURACY_LABELS, key, lang), n=n)
        ax.plot(measured.scales, values, marker=MARKERS[i % len(MARKERS)], label=label)
    _mark_scales(ax, measured.recommended, lang)
    _scale_axis(ax, measured.scales, lang)
    ax.set_ylabel(T("followed", lang))
    ax.set_title(T("benefit", lang))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)


def _draw_quality(ax: Any, measured: Any, key: str, color: str, lang: str) -> None:
    label = T("generated", lang)
    ax.plot(measured.scales, measured.quality[key], marker="o", color=color, label=label)
    real = measured.reference.get(key)
    if real is not None:
        ax.axhline(real, color="#009E73", lw=1.5, label=T("real", lang, value=real))
    vae = measured.reference_vae.get(key)
    if vae is not None:
        label = T("real_vae", lang, value=vae)
        ax.axhline(vae, color="#56B4E9", lw=1.5, ls="-.", label=label)
    _mark_scales(ax, measured.recommended, lang)
    _scale_axis(ax, measured.scales, lang)
    ax.set_ylabel(_named("quality_axis", QUALITY_LABELS, key, lang))
    known = key in QUALITY_TITLES
    ax.set_title(T(f"quality.{key}", lang) if known else T("quality", lang, name=key))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[:-2], labels[:-2], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))


def guidance_benefit(
    measured: Any,
    runs: Sequence[Mapping[str, Any]] = (),
    *,
    quality: Sequence[str] | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """What guidance buys and costs, measured: prompt-following accuracy per task against g,
    image-quality statistics against g (lines: real ShapesWorld images, and the same
    through the VAE), and beneath, one prompt's images at each scale (`runs`, optional).

    `measured` is `sdviz.probes.measured_guidance(...)` (the model folder's benchmark);
    `runs` come from `sdviz.probes.guidance_runs(pipe, prompt, scales, seed=...)`. When
    they are the benchmark's own example (same prompt and seed), each image is labelled
    with the benchmark's verdict: ✓ followed, ✗ not. Images are drawn pixel for pixel
    (nearest neighbour), enlarged. `quality` names the quality panels (keys of
    `measured.quality`); default: the colour error and the edge sharpness. `lang`: the
    language of its labels (default `sdviz.language.course_language`).

    Example:
        >>> measured = sdviz.probes.measured_guidance()
        >>> ex = measured.example
        >>> runs = sdviz.probes.guidance_runs(pipe, ex["prompt"], measured.scales, seed=ex["seed"])
        >>> fig = sdviz.figures.guidance_benefit(measured, runs)
    """
    from ..probes.guidance import MeasuredGuidance

    lang = course_language(lang)
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
    title = T(
        "measured",
        lang,
        model=Path(measured.source).parent.name,
        one=measured.n.get("one_object", "?"),
        two=measured.n.get("two_objects", "?"),
    )
    with drawing(lang), style():
        fig = new_figure(fig, width, 4.9 + (2.3 if runs else 0), suptitle=title)
        top, bottom = fig.subfigures(2, 1, height_ratios=[4.9, 2.3]) if runs else (fig, None)
        axes = np.atleast_1d(top.subplots(1, n_top))
        _draw_accuracy(axes[0], measured, lang)
        for ax, key, color in zip(axes[1:], quality, LINE_COLORS[3:], strict=False):
            _draw_quality(ax, measured, key, color, lang)
        if bottom is not None:
            _draw_example(bottom, measured, runs, lang)
    return fig


def _draw_example(fig: Canvas, measured: Any, runs: list[Mapping[str, Any]], lang: str) -> None:
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
    title = T("example_scored" if verdict else "example", lang, prompt=prompt, seed=seed)
    fig.suptitle(title, fontsize=11)
