"""Two denoisers' word maps side by side: the UNet's cross-attention and MMDiT's joint attention.

sdviz-mini's UNet (Rombach et al. 2022) reads the prompt through cross-attention: each
latent pixel takes a softmax over the text tokens. sdviz-mini-flow's SD3 transformer
(Esser et al. 2024) runs one joint attention over text and image tokens; its text→image
part (image queries over the text keys, softmax over the text) is what sdviz records as
the same per-word maps (`attention.maps`, see `sdviz.joint_attention`). Given runs of the
same prompt and seed, this draws `sdviz.figures.cross_attention` once per run, a row per
model, so each word's map in one design sits above the same word's map in the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from ..language import Texts, course_language
from .attention import MAX_WORDS, cross_attention, token_indices
from .style import PANEL, Canvas, heading_weight, new_figure, style

T = Texts(
    __name__,
    {
        "title": (
            "Each word's map in both designs: {prompt!r}, seed {seed}",
            "两种设计中每个词的注意力图：“{prompt}”，随机种子 {seed}",
        ),
        "different_prompts": (
            "These runs drew different prompts or seeds ({found}); pass runs of the same "
            "prompt and seed, so the maps differ only by the denoiser.",
            "这些生成用了不同的提示词或随机种子（{found}）；请传入同一提示词、同一随机种子的"
            "生成，这样注意力图只因去噪网络而不同。",
        ),
    },
)


def attention_side_by_side(
    runs: Mapping[str, Any],
    words: Sequence[str | int] | str | None = None,
    *,
    step: int | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """One row per run (label -> traced Run of the same prompt and seed): its image and each
    word's map (`sdviz.figures.cross_attention`: averaged over heads, the default layers and
    the steps, or at `step`). Each row keeps its own colour scale: a UNet spreads a
    pixel's attention over its tokenizer's padded length (77 for sdviz-mini), the flow
    model over 24 positions, so compare where a map is bright, not how bright.
    `lang`: the language of its labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> runs = {"UNet": sdviz.generate(mini, p), "MMDiT": sdviz.generate(flow, p)}
        >>> fig = sdviz.figures.attention_side_by_side(runs, ["red", "circle"])
    """
    lang = course_language(lang)
    if not runs:
        raise ValueError("attention_side_by_side needs at least one traced run.")
    seen = {(r.get("pipeline.prompt"), r.get("pipeline.seed")) for r in runs.values()}
    if len(seen) > 1:
        found = "; ".join(f"{p!r}, seed {s}" for p, s in sorted(seen, key=str))
        raise ValueError(T("different_prompts", lang, found=found))
    prompt, seed = next(iter(seen))
    first = next(iter(runs.values()))
    n_words = len(token_indices(first, words)) if words is not None else MAX_WORDS
    with style(lang):
        fig = new_figure(
            fig,
            PANEL * (n_words + 1) + 1.4,
            (PANEL + 1.1) * len(runs) + 0.4,
            suptitle=T("title", lang, prompt=prompt, seed=seed),
        )
        subs = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
        for sub, (label, run) in zip(subs, runs.items(), strict=True):
            cross_attention(run, words, step=step, fig=sub, lang=lang)
            sub.supylabel(label, fontsize=10, fontweight=heading_weight(lang))
    return fig
