"""Path straightness: how far x̂0 moves while each model samples (rectified flow vs DDPM).

Draws `sdviz.probes.straightness.measure_straightness`'s record: (left) each model's
distance from its final x̂0 at every step of an S-step run, relative to the final x̂0's
norm (mean over the prompts and seeds, the band spans the middle half of the runs);
(right) the total path length Σ‖x̂0_s − x̂0_{s−1}‖ / ‖x̂0_final‖ against the number of
steps (0 would be a perfectly straight path: one Euler step lands on the final image,
Liu et al. 2022); (third) how far an S-step result lands from the same prompt and seed
sampled with the most steps (what fewer steps cost); (below) one prompt's x̂0 decoded at every step, a row per model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..autoencoder import to_numpy
from ..language import Texts, course_language
from .style import LINE_COLORS, MARKERS, WIDE, Canvas, expect, new_figure, show_image, style

STRIP_PANEL = 1.15  # inches: one decoded x̂0 in the strips
BAND = (25, 75)  # percentiles of the runs drawn as a band around the mean

T = Texts(
    __name__,
    {
        "title": (
            "How far x̂0 moves while each model samples ({n} prompt-seed pairs, each model "
            "at its own guidance)",
            "每个模型采样时 x̂0 移动了多远（{n} 组提示词与随机种子，各模型用自己的引导系数）",
        ),
        "distance_title": (
            "Distance to the final x̂0, {steps}-step runs",
            "与最终 x̂0 的距离（{steps} 步的生成）",
        ),
        "distance_axis": ("‖x̂0_s − x̂0_final‖ / ‖x̂0_final‖", "‖x̂0_s − x̂0_final‖ / ‖x̂0_final‖"),
        "step_axis": ("sampling step s (1 = first)", "采样步 s（1 = 第一步）"),
        "length_title": (
            "Path length of x̂0 (0 = a straight path)",
            "x̂0 的路径长度（0 = 笔直的路径）",
        ),
        "length_axis": ("Σ‖x̂0_s − x̂0_s−1‖ / ‖x̂0_final‖", "Σ‖x̂0_s − x̂0_s−1‖ / ‖x̂0_final‖"),
        "steps_axis": ("number of sampling steps", "采样步数"),
        "gap_title": (
            "How far S steps land from {most} steps",
            "S 步的结果离 {most} 步的结果有多远",
        ),
        "gap_axis": (
            "‖x̂0(S steps) − x̂0({most})‖ / ‖x̂0({most})‖",
            "‖x̂0（S 步）− x̂0（{most}）‖ / ‖x̂0（{most}）‖",
        ),
        "model": ("{label} (g={g:g})", "{label}（g={g:g}）"),
        "strip_title": (
            "x̂0 decoded at each of {steps} steps: {prompt!r}, seed {seed}",
            "{steps} 步中每一步解码出的 x̂0：“{prompt}”，随机种子 {seed}",
        ),
        "step": ("step {s}", "第 {s} 步"),
    },
)


def path_straightness(
    record: Any, *, steps: int | None = None, fig: Canvas | None = None, lang: str | None = None
) -> Figure:
    """Distance to the final x̂0 per step (`steps`: which step count's runs; default the
    largest measured), path length against the number of steps, and the decoded x̂0
    strips of the record's first prompt (when it has them), one row per model.
    `lang`: the language of its labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> rec = sdviz.probes.measure_straightness({"UNet": mini, "flow": flow})
        >>> fig = sdviz.figures.path_straightness(rec)
    """
    from ..probes.straightness import Straightness

    expect(record, Straightness, "sdviz.probes.measure_straightness(pipes)")
    lang = course_language(lang)
    steps = max(record.steps) if steps is None else int(steps)
    if steps not in record.steps:
        raise ValueError(f"No runs of {steps} steps in this record; it has {record.steps}.")
    strips = {k: v for k, v in record.strips.items() if k in record.labels}
    n_cols = max((len(v) for v in strips.values()), default=0)
    panels = 3 if record.finals else 2
    width = max(panels * WIDE + 1.6, n_cols * STRIP_PANEL + 1.2)
    height = 3.3 + (STRIP_PANEL * len(strips) + 0.7 if strips else 0)
    with style(lang):
        fig = new_figure(fig, width, height, suptitle=T("title", lang, n=len(record.prompts)))
        top, bottom = (
            fig.subfigures(2, 1, height_ratios=[3.3, height - 3.3]) if strips else (fig, None)
        )
        axes = top.subplots(1, panels)
        left, right, gap = axes[0], axes[1], axes[2] if panels == 3 else None
        for i, label in enumerate(record.labels):
            name = T("model", lang, label=label, g=record.guidance.get(label, float("nan")))
            color, marker = LINE_COLORS[i % len(LINE_COLORS)], MARKERS[i % len(MARKERS)]
            d = to_numpy(record.distance[label][steps])  # (runs, S)
            x = np.arange(1, d.shape[1] + 1)
            left.plot(x, d.mean(0), marker=marker, color=color, label=name, markersize=4)
            low, high = np.percentile(d, BAND, axis=0)
            left.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            lengths = [to_numpy(record.path_length(label, s)) for s in record.steps]
            right.plot(
                record.steps, [v.mean() for v in lengths], marker=marker, color=color, label=name
            )
            right.fill_between(
                record.steps,
                [np.percentile(v, BAND[0]) for v in lengths],
                [np.percentile(v, BAND[1]) for v in lengths],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
            if gap is not None:
                gaps = [to_numpy(record.endpoint_gap(label, s)) for s in record.steps]
                gap.plot(
                    record.steps, [v.mean() for v in gaps], marker=marker, color=color, label=name
                )
        left.set(
            title=T("distance_title", lang, steps=steps),
            xlabel=T("step_axis", lang),
            ylabel=T("distance_axis", lang),
        )
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set(
            title=T("length_title", lang),
            xlabel=T("steps_axis", lang),
            ylabel=T("length_axis", lang),
            xticks=record.steps,
        )
        if gap is not None:
            most = max(record.steps)
            gap.set(
                title=T("gap_title", lang, most=most),
                xlabel=T("steps_axis", lang),
                ylabel=T("gap_axis", lang, most=most),
                xticks=record.steps,
            )
        for ax in axes:
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if strips:
            prompt, seed = record.prompts[0]
            bottom.suptitle(
                T("strip_title", lang, steps=n_cols, prompt=prompt, seed=seed), fontsize=9
            )
            axes = bottom.subplots(len(strips), n_cols, squeeze=False)
            for row, (label, images) in zip(axes, strips.items(), strict=True):
                for s, ax in enumerate(row):
                    if s >= len(images):
                        ax.set_visible(False)
                        continue
                    show_image(ax, images[s], T("step", lang, s=s + 1))
                    ax.title.set_fontsize(7)
                row[0].set_ylabel(label.replace(" (", "\n("), fontsize=7)  # fits a row
    return fig
