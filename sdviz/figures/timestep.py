"""Figure 9b — how the UNet knows t: sinusoidal features, then its MLP's embedding.

The noise predictor is told the timestep t as a vector, not a number: `time_proj` writes
t as sines and cosines at geometrically spaced frequencies (the positional encoding of
Vaswani et al. 2017, as in DDPM, Ho et al. 2020), and the trained MLP `time_embedding`
maps those features to the vector every ResNet block adds to its feature maps. The
figure draws what `sdviz.probes.timestep_embeddings` computed from the loaded UNet: the
features of every probed t as an image, and how alike the vectors of two timesteps are
(cosine similarity) before and after the MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..language import Texts, course_language, drawing
from ..probes.unet import TimestepEmbeddings
from .style import LINE_COLORS, PANEL, SIGNED_CMAP, WIDE, Canvas, expect, new_figure, style

FEATURE_ROWS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 999)  # t drawn in panel 1 (if probed)

T = Texts(
    __name__,
    {
        "title": (
            "How the UNet knows t: {n_feat} sinusoidal features → MLP → a {n_emb}-wide "
            "vector added in every ResNet",
            "UNet 如何得知 t：{n_feat} 个正弦特征 → MLP → 一个 {n_emb} 维向量，加到每个 ResNet 中",
        ),
        "features": (
            "feature: {halves}, fast → slow ({half} each)",
            "特征：{halves}，由快到慢（各 {half} 个）",
        ),
        "timestep": ("timestep t", "时间步 t"),
        "panel1": ("1. time_proj: t as sinusoids", "1. time_proj：把 t 写成正弦波"),
        "panel2": ("2. cosine sim. of the features", "2. 特征的余弦相似度"),
        "panel3": ("3. cosine sim. after the MLP", "3. 经过 MLP 后的余弦相似度"),
        "sinusoidal": ("sinusoidal features", "正弦特征"),
        "after_mlp": ("after the MLP", "经过 MLP 后"),
        "similarity_to": ("cosine similarity to t={t}", "与 t={t} 的余弦相似度"),
        "panel4": ("4. how alike t and t={t} look", "4. t 与 t={t} 有多相似"),
    },
)


def timestep_embedding(
    record: TimestepEmbeddings,
    *,
    rows: Sequence[int] | None = None,
    reference: int | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Canvas:
    """Sinusoidal features of several t (an image: one row per t in `rows`, default those
    of FEATURE_ROWS that were probed), the cosine similarity of the features and of the
    MLP's embeddings between every pair of probed t, and both similarities to one
    `reference` t (default: the probed t nearest the middle). `lang`: the language of its
    labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> emb = sdviz.probes.timestep_embeddings(pipe)
        >>> fig = sdviz.figures.timestep_embedding(emb)
    """
    lang = course_language(lang)
    expect(record, TimestepEmbeddings, "sdviz.probes.timestep_embeddings(pipe)")
    t = record.timesteps
    if rows is None:
        rows = [r for r in FEATURE_ROWS if r in set(t.tolist())] or t[:: max(len(t) // 10, 1)]
    row_idx = [record.index(r) for r in rows]
    middle = int(t[np.argmin(np.abs(t - (t[0] + t[-1] + 1) / 2))])
    ref = record.index(middle if reference is None else reference)
    n_feat, n_emb = record.features.shape[1], record.embeddings.shape[1]
    extent_t = (t[0] - 0.5, t[-1] + 0.5, t[-1] + 0.5, t[0] - 0.5)
    with drawing(lang), style():
        fig = new_figure(
            fig,
            3 * PANEL + WIDE + 2.4,
            PANEL + 1.8,
            suptitle=T("title", lang, n_feat=n_feat, n_emb=n_emb),
        )
        axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, WIDE / PANEL])
        im = axes[0].imshow(
            record.features[row_idx],
            aspect="auto",
            cmap=SIGNED_CMAP,
            vmin=-1,
            vmax=1,
            interpolation="nearest",
        )
        axes[0].set_yticks(range(len(row_idx)), [str(t[i]) for i in row_idx])
        halves = "cos | sin" if record.cos_first else "sin | cos"
        axes[0].set_xlabel(T("features", lang, halves=halves, half=n_feat // 2))
        axes[0].set_ylabel(T("timestep", lang))
        axes[0].set_title(T("panel1", lang))
        fig.colorbar(im, ax=axes[0], shrink=0.8)
        for ax, which, title in (
            (axes[1], "features", "panel2"),
            (axes[2], "embeddings", "panel3"),
        ):
            sim = ax.imshow(
                record.similarity(which), cmap=SIGNED_CMAP, vmin=-1, vmax=1, extent=extent_t
            )
            ax.set_xlabel(T("timestep", lang))
            ax.set_ylabel(T("timestep", lang))
            ax.set_title(T(title, lang))
        fig.colorbar(sim, ax=axes[1:3], shrink=0.8)
        ax = axes[3]
        for which, label, color, ls in (
            ("features", "sinusoidal", LINE_COLORS[0], "--"),
            ("embeddings", "after_mlp", LINE_COLORS[1], "-"),
        ):
            ax.plot(t, record.similarity(which)[ref], ls, color=color, label=T(label, lang))
        ax.axvline(t[ref], color="black", linewidth=0.8)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel(T("timestep", lang))
        ax.set_ylabel(T("similarity_to", lang, t=t[ref]))
        ax.set_title(T("panel4", lang, t=t[ref]))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    return fig
