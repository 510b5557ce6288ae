"""Figure 10 — cross-attention: where each word of the prompt lands on the image.

In every cross-attention layer (Rombach et al. 2022, Sec. 3.3) each latent pixel
(query) takes a softmax over the L text tokens (keys): the weight a pixel gives a token
is a map over the image per token. Averaged over heads, layers and steps these maps show
which region each word shapes (Hertz et al. 2022, "Prompt-to-Prompt"). The drill-down
shows the same word per layer (different resolutions) and per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..autoencoder import image_hwc, to_numpy
from ..language import Texts, course_language, drawing
from ..tracing.keys import LAYER_PREFIX, is_layer_key
from .style import (
    HEAT_CMAP,
    LINE_COLORS,
    MATRIX_CMAP,
    PANEL,
    WIDE,
    Canvas,
    check_steps,
    new_figure,
    require,
    show_image,
    show_map,
    step_timesteps,
    style,
)
from .text import readable

OVERLAY_ALPHA = 0.6  # heat map opacity over the image
MAX_WORDS = 6  # words shown by default (the first real tokens)
MAX_LAYER_ROWS = 8  # layers shown by default in the drill-down (evenly spread over the UNet)
PROBE_AGGREGATES = ("default", "all layers, bilinear (old)")  # localisation's own names

T = Texts(
    __name__,
    {
        "cross": ("Cross-attention", "交叉注意力"),
        "joint": ("Joint attention (image → text part)", "联合注意力（图像 → 文本部分）"),
        "per_word_mean": (
            "{kind} per word, averaged over {n} steps (heads and the default layers averaged)",
            "每个词的{kind}，{n} 步平均（平均了注意力头和默认的层）",
        ),
        "per_word_step": (
            "{kind} per word, at step {step} (heads and the default layers averaged)",
            "每个词的{kind}，第 {step} 步（平均了注意力头和默认的层）",
        ),
        "generated_image": ("generated image", "生成的图像"),
        "word": ("{token!r} (#{i})", "“{token}”（标记位置 {i}）"),
        "attention_weight": ("attention weight", "注意力权重"),
        "drilldown": (
            "Attention on {token!r} per layer (rows) and step (columns)",
            "“{token}”得到的注意力：每层一行，每步一列",
        ),
        "default_aggregate": ("default\naggregate", "默认\n聚合"),
        "step_t": ("step {step}, t={t}", "第 {step} 步，t={t}"),
        "weight": ("weight", "权重"),
        "localisation": (
            "Which layers and steps know where the words are ({n_images} held-out "
            "images, {n_obj} objects, exact masks)",
            "哪些层、哪些步知道词在哪里（{n_images} 张留出图像，{n_obj} 个物体，精确掩码）",
        ),
        "pointing.noun": ("nouns: peak inside the object (%)", "名词：峰值落在物体内（%）"),
        "pointing.colour": (
            "colour words: peak inside the object (%)",
            "颜色词：峰值落在物体内（%）",
        ),
        "iou.noun": ("nouns: mIoU (%)", "名词：平均交并比（mIoU，%）"),
        "iou.colour": ("colour words: mIoU (%)", "颜色词：平均交并比（mIoU，%）"),
        "pure_noise_t": ("timestep t (999: pure noise)", "时间步 t（999：纯噪声）"),
        "objects_percent": ("% of objects", "物体占比（%）"),
        "localisation_note": (
            "* averaged into the default maps (attention.maps); rows: each layer's "
            "map size and name",
            "*：计入默认注意力图（attention.maps）的层；行：每层的注意力图尺寸和名称",
        ),
        "aggregate.default": ("default", "默认"),
        "aggregate.all layers, bilinear (old)": (
            "all layers, bilinear (old)",
            "所有层，双线性（旧）",
        ),
        "group.start": ("start", "起始标记"),
        "group.words": ("words", "词"),
        "group.end+padding": ("end+padding", "结束+填充"),
        "shares": (
            "Share of the attention each token group receives (sums to 100%)",
            "每组标记得到的注意力份额（合计 100%）",
        ),
        "shares_axis": (
            "% of all attention (mean over positions, steps and images)",
            "占全部注意力的百分比（对位置、步和图像取平均）",
        ),
    },
)


def token_indices(run: Mapping[str, Any], words: Sequence[str | int] | str | None) -> list[int]:
    """Token positions for words (strings: first token(s) spelling the word; ints: positions).

    Default: the prompt's first real tokens, without the start / end tokens.
    """
    tokens = [readable(t) for t in run["tokenizer.tokens"]]
    n = int(run["tokenizer.n_tokens"])
    real = list(range(1, max(n - 1, 1)))
    if words is None:
        return real[:MAX_WORDS] or [0]
    if isinstance(words, (str, int)):
        words = [words]
    out = []
    for w in words:
        if isinstance(w, (int, np.integer)):
            if not 0 <= w < len(tokens):
                raise IndexError(f"Token position {w} is out of range 0..{len(tokens) - 1}.")
            out.append(int(w))
            continue
        try:
            if hasattr(run, "token_index"):
                out.append(int(run.token_index(str(w))))
                continue
            out.append(next(i for i in range(n) if tokens[i].lower() == str(w).strip().lower()))
        except (ValueError, StopIteration):
            raise ValueError(
                f"{w!r} is not a word of the prompt {run.get('pipeline.prompt', '')!r}; its tokens are "
                f"{', '.join(repr(tokens[i]) for i in real)}. Pass one of them or a token position."
            ) from None
    return out


def upsample(maps: Any, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) maps resized bilinearly to (..., H, W)."""
    x = torch.as_tensor(to_numpy(maps))
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:])
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *size).numpy()


def cross_attention(
    run: Any,
    words: Sequence[str | int] | str | None = None,
    *,
    step: int | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """The final image, then one heat map per word over it (`attention.maps`: averaged over
    heads and the layers of `sdviz.attention.default_aggregate_layers`).

    `words` are words of the prompt or token positions (default: its first real
    tokens); `step` picks one sampling step (default: the average over all steps).
    All maps share one colour scale: the fraction of a pixel's attention on the token.
    `lang`: the language of its labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle and a blue square")
        >>> fig = sdviz.figures.cross_attention(run, ["red", "circle", "blue", "square"])
    """
    lang = course_language(lang)
    require(
        run,
        "attention.maps",
        "vae.image",
        hint="Trace with attention='aggregate' (the default of sdviz.generate).",
    )
    maps = to_numpy(run["attention.maps"])  # (S, L, h, w)
    idx = token_indices(run, words)
    # SD3 / Flux: image queries over the text keys of joint attention, not cross-attention
    kind = T("joint" if run.get("denoiser.name") == "transformer" else "cross", lang)
    if step is None:
        chosen = maps.mean(axis=0)
        title = T("per_word_mean", lang, kind=kind, n=maps.shape[0])
    else:
        s = check_steps(step, maps.shape[0])[0]
        chosen, title = maps[s], T("per_word_step", lang, kind=kind, step=s)
    image = image_hwc(run["vae.image"])
    heat = upsample(chosen[idx], image.shape[:2])  # (words, H, W)
    tokens = [readable(t) for t in run["tokenizer.tokens"]]
    norm = Normalize(float(heat.min()), float(heat.max()))
    with drawing(lang), style():
        fig = new_figure(fig, PANEL * (len(idx) + 1) + 0.8, PANEL + 0.9, suptitle=title)
        axes = fig.subplots(1, len(idx) + 1)
        show_image(axes[0], image, T("generated_image", lang))
        grey = image.mean(axis=-1)
        for ax, i, m in zip(axes[1:], idx, heat, strict=True):
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            im = show_map(ax, m, cmap=HEAT_CMAP, title=T("word", lang, token=tokens[i], i=i))
            im.set_norm(norm)
            im.set_alpha(OVERLAY_ALPHA)
        mappable = ScalarMappable(norm=norm, cmap=HEAT_CMAP)
        label = T("attention_weight", lang)
        fig.colorbar(mappable, ax=list(axes[1:]), label=label, shrink=0.85)
    return fig


def layer_keys(run: Mapping[str, Any]) -> list[str]:
    """The per-layer attention keys of a run: "attention.<module path>"."""
    return [k for k in run if is_layer_key(k)]


def short_layer(name: str) -> str:
    """'attention.down_blocks.0.attentions.1.transformer_blocks.0.attn2' -> 'down 0.1'
    (an `attn1` that is cross-attention, in `only_cross_attention` blocks: 'down 0.1 attn1')."""
    parts = name.removeprefix(LAYER_PREFIX).split(".")
    kind = "" if parts[-1] == "attn2" else f" {parts[-1]}"
    if parts[0] == "mid_block":
        return f"mid {parts[2]}{kind}"
    return f"{parts[0].split('_')[0]} {parts[1]}.{parts[3]}{kind}"


def _pick_layers(recorded: list[str], layers: Sequence[str] | None) -> list[str]:
    """The layer keys to draw: `layers` checked against the recorded ones, else at most
    MAX_LAYER_ROWS of them spread over the UNet."""
    if not recorded:
        raise KeyError(
            "This run has no per-layer attention maps. Trace with attention_layers='attn2' "
            "(all cross-attention layers) or a filter such as attention_layers='up_blocks'."
        )
    if layers is None:
        picks = np.linspace(0, len(recorded) - 1, min(len(recorded), MAX_LAYER_ROWS))
        return [recorded[i] for i in sorted({int(round(p)) for p in picks})]
    layers = [n if n.startswith(LAYER_PREFIX) else LAYER_PREFIX + n for n in layers]
    unknown = [name for name in layers if name not in recorded]
    if unknown:
        raise KeyError(f"No maps for layers {unknown}; recorded: {recorded}.")
    return layers


def attention_drilldown(
    run: Any,
    word: str | int,
    *,
    layers: Sequence[str] | None = None,
    steps: int | Sequence[int] | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """One word's attention per layer (rows, at each layer's own resolution) and per step.

    Needs per-layer maps: trace with `attention_layers="attn2"` (all layers) or a
    filter. `layers` selects some of them (default: all recorded, at most 8 spread
    over the UNet, e.g. 8 of SD 1.5's 16); `steps` are step
    indices (default: 4 evenly spaced). The last row is the aggregate map of the run.
    `lang`: the language of its labels (default `sdviz.language.course_language`).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle", attention_layers="attn2")
        >>> fig = sdviz.figures.attention_drilldown(run, "circle", steps=[0, 10, 19])
    """
    lang = course_language(lang)
    recorded = layer_keys(run)
    layers = _pick_layers(recorded, layers)
    require(run, "attention.maps")
    i = token_indices(run, [word])[0]
    token = readable(run["tokenizer.tokens"][i])
    n_steps = to_numpy(run["attention.maps"]).shape[0]
    chosen = check_steps(steps, n_steps, default=4)
    rows = []
    for name in layers:
        m = to_numpy(run[name])
        if m.ndim == 5:  # (S, heads, L, h, w)
            m = m.mean(axis=1)
        rows.append((f"{short_layer(name)}\n{m.shape[-2]}×{m.shape[-1]}", m[chosen, i]))
    rows.append((T("default_aggregate", lang), to_numpy(run["attention.maps"])[chosen, i]))
    t = step_timesteps(run, n_steps)
    with drawing(lang), style():
        fig = new_figure(
            fig,
            0.8 * PANEL * len(chosen) + 1.4,
            0.8 * PANEL * len(rows) + 0.6,
            suptitle=T("drilldown", lang, token=token),
        )
        axes = fig.subplots(len(rows), len(chosen), squeeze=False)
        for r, (label, maps) in enumerate(rows):
            low, high = float(maps.min()), float(maps.max())  # one scale per layer (row)
            for c, s in enumerate(chosen):
                title = T("step_t", lang, step=s, t=int(round(float(t[s])))) if r == 0 else None
                im = show_map(axes[r, c], maps[c], cmap=HEAT_CMAP, vmin=low, vmax=high, title=title)
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
            label = T("weight", lang) if r == 0 else None
            fig.colorbar(im, ax=list(axes[r]), shrink=0.8, label=label)
    return fig


def _short(name: str) -> str:
    return short_layer(LAYER_PREFIX + name)


def attention_localisation(
    record: Any, *, fig: Canvas | None = None, lang: str | None = None
) -> Figure:
    """Which layers and steps know where the words are: pointing accuracy and mIoU per
    layer (rows) and timestep (columns), nouns beside colour words.

    Draws a `sdviz.probes.attention.Localisation` (held-out ShapesWorld images with exact
    masks). The last two rows are layer averages: sdviz's earlier one (every
    text-attention layer, bilinear) and the default of `attention.maps`, which averages the
    layers marked *. Each cell is a percentage over the objects. `lang`: the language of its
    labels (default `sdviz.language.course_language`).

    Example:
        >>> rec = sdviz.probes.localisation(pipe, count=8)
        >>> fig = sdviz.figures.attention_localisation(rec)
    """
    lang = course_language(lang)
    marks = {n: " *" for n in record.default_layers}  # the layers the default averages
    sizes = {n: "{}×{} ".format(*hw) for n, hw in record.sizes.items()}
    rows = [sizes.get(n, "") + _short(n) + marks.get(n, "") for n in record.layers]
    rows += [f"[{_aggregate(k, lang)}]" for k in record.aggregates]
    measures = ("pointing", "iou")
    kinds = ("noun", "colour")
    n_obj = record.per_layer["pointing"].shape[-1]
    with drawing(lang), style():
        fig = new_figure(
            fig,
            2 * (max(0.55 * len(record.timesteps), 3.2) + 2.4) + 1.0,
            2 * (0.28 * len(rows) + 1.0) + 0.6,
            suptitle=T("localisation", lang, n_images=record.n_images, n_obj=n_obj),
        )
        axes = fig.subplots(2, 2, squeeze=False)
        for r, m in enumerate(measures):
            layer = record.per_layer[m].nanmean(-1)  # (layers, T, kinds)
            agg = torch.stack([a[m].nanmean(-1) for a in record.aggregates.values()])
            values = 100 * torch.cat([layer, agg]).numpy()  # (rows, T, kinds)
            for c, kind in enumerate(kinds):
                ax = axes[r, c]
                v = values[..., c]
                im = ax.imshow(v, cmap=MATRIX_CMAP, vmin=0, vmax=100, aspect="auto")
                for (i, j), x in np.ndenumerate(v):
                    ax.text(
                        j,
                        i,
                        f"{x:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if x > 55 else "white",
                    )
                ax.axhline(len(record.layers) - 0.5, color="white", linewidth=2)
                ax.set_xticks(range(len(record.timesteps)), [str(t) for t in record.timesteps])
                ax.set_yticks(range(len(rows)), rows if c == 0 else [""] * len(rows))
                ax.set_xlabel(T("pure_noise_t", lang))
                ax.set_title(T(f"{m}.{kind}", lang), fontsize=11)
        label = T("objects_percent", lang)
        fig.colorbar(im, ax=list(axes.ravel()), shrink=0.6, label=label)
        fig.supxlabel(T("localisation_note", lang), fontsize=10)
    return fig


def _aggregate(name: str, lang: str) -> str:
    """An aggregate's name from `sdviz.probes.attention.localisation` in `lang` (a name
    of your own, from `compare`, as it is)."""
    return T(f"aggregate.{name}", lang) if name in PROBE_AGGREGATES else name


def attention_shares(
    shares: Mapping[str, Mapping[str, float]],
    *,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """Where the attention goes: the start token, the prompt's words, the end + padding.

    `shares` maps a label (a model, an aggregate) to `sdviz.probes.attention.token_shares`
    output or `Run.token_shares` grouped alike; one horizontal stacked bar per label.
    `lang`: the language of its labels (default `sdviz.language.course_language`).

    Example:
        >>> s = sdviz.probes.attention.token_shares(run["attention.maps"], run["tokenizer.n_tokens"])
        >>> fig = sdviz.figures.attention_shares({"this run": s})
    """
    lang = course_language(lang)
    groups = ("start", "words", "end+padding")
    colours = dict(zip(groups, LINE_COLORS, strict=False))
    labels = list(shares)
    with drawing(lang), style():
        fig = new_figure(fig, 2 * WIDE, 0.55 * len(labels) + 1.6, suptitle=T("shares", lang))
        ax = fig.subplots()
        for i, label in enumerate(labels):
            left = 0.0
            for g in groups:
                w = 100 * float(shares[label][g])
                name = T(f"group.{g}", lang)
                ax.barh(i, w, left=left, color=colours[g], label=name if i == 0 else None)
                ax.text(
                    left + w / 2,
                    i,
                    f"{name}\n{w:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white",
                )
                left += w
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlim(0, 100)
        ax.set_xlabel(T("shares_axis", lang))
        ax.invert_yaxis()
    return fig
