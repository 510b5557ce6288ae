"""Figure 9 — inside the noise predictor: the UNet's blocks, where t and the text enter.

The denoiser of Stable Diffusion is a UNet (Ronneberger et al. 2015) as used in DDPM
(Ho et al. 2020), with transformer blocks (Rombach et al. 2022, Sec. 3.3). The figure
draws the record `sdviz.probes.unet_structure` reads from the loaded model's module tree
and config:

- the U: down blocks (resolution halves, channels widen), the mid block, up blocks, and
  the skip connections across (the tensors saved at each resolution on the way down);
- inside each block, its layers in call order as chips: R a ResNet, S self-attention,
  C cross-attention (every `attn2`, and `attn1` in `only_cross_attention` blocks such as
  sdviz-mini's first one), ↓/↑ a down- or upsampler;
- the timestep: t → sinusoids (`time_proj`) → MLP (`time_embedding`) → into every
  ResNet (purple);
- the text: the text encoder's token vectors into every cross-attention layer (orange).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from ..language import Texts, course_language, drawing
from ..probes.unet import CROSS, DOWN, RESNET, SELF, UP, Block, UnetStructure, unet_structure
from .style import (
    LINE_COLORS,
    figure_of,
    heading_weight,
    new_figure,
    rounded_box,
    style,
    text_width,
)

TIME_COLOR, TEXT_COLOR, SKIP_COLOR, SELF_COLOR = (
    LINE_COLORS[3],
    LINE_COLORS[1],
    LINE_COLORS[2],
    LINE_COLORS[0],
)
FLOW_COLOR, SAMPLER_COLOR = "#444444", "#BBBBBB"
CHIPS = {  # layer kind -> (letter, colour)
    RESNET: ("R", TIME_COLOR),
    SELF: ("S", SELF_COLOR),
    CROSS: ("C", TEXT_COLOR),
    DOWN: ("↓", SAMPLER_COLOR),
    UP: ("↑", SAMPLER_COLOR),
}
BOX_W, BOX_H, ROW = 6.2, 1.15, 1.75  # a block's box and the distance between levels
STAGGER = 0.75  # how far each deeper level moves towards the middle
LEFT, RIGHT = 4.2, 21.8  # centres of the level-0 down and up blocks
MIDDLE = (LEFT + RIGHT) / 2  # the text's bus and the mid block
WIDTH = 26.0  # axis units across
ARROW = dict(arrowstyle="-|>", mutation_scale=13, linewidth=1.4, shrinkA=0, shrinkB=1)

T = Texts(
    __name__,
    {
        "channels_at": ("{channels} ch @ {res}", "{channels} 通道 @ {res}"),
        "skips": ("{n} skips, {ch} ch", "{n} 个跳跃连接，{ch} 通道"),
        "timestep": ("timestep t", "时间步 t"),
        "time_proj": ("time_proj: {n} sinusoids", "time_proj：{n} 个正弦特征"),
        "time_mlp": ("time_embedding MLP\n{a} → {b} → {c}", "time_embedding MLP\n{a} → {b} → {c}"),
        "time_bus": (
            "t's embedding ({dim}) → every ResNet R ({n}): its own time_emb_proj "
            "adds one number per channel",
            "t 的嵌入（{dim}）→ 每个 ResNet R（共 {n} 个）：各自的 time_emb_proj "
            "给每个通道加上一个数",
        ),
        "text": (
            "prompt → text encoder\n{tokens} token vectors",
            "提示词 → 文本编码器\n{tokens} 个标记向量",
        ),
        "conv_in": ("conv_in: {a} → {b} ch", "conv_in：{a} → {b} 通道"),
        "noisy": ("noisy latent $x_t$ ({c}×{h}×{w})", "含噪潜在表示 xₜ（{c}×{h}×{w}）"),
        "conv_out": ("norm, SiLU, conv_out: {a} → {b} ch", "norm、SiLU、conv_out：{a} → {b} 通道"),
        "predicted": (
            "predicted noise $\\hat{{\\epsilon}}$ ({c}×{h}×{w})",
            "预测噪声 ε̂（{c}×{h}×{w}）",
        ),
        "legend.resnet": ("ResNet: convolutions, + t's embedding", "ResNet：卷积，加上 t 的嵌入"),
        "legend.self": (
            "self-attention: keys, values from the image",
            "自注意力：键、值来自图像",
        ),
        "legend.cross": (
            "cross-attention: keys, values from the text",
            "交叉注意力：键、值来自文本",
        ),
        "legend.sample": ("down/upsample ×2", "下采样 / 上采样 ×2"),
        "legend.skip": ("skip: concatenated", "跳跃连接：拼接"),
        "and": (" and ", "、"),
        "note": (
            "C C: in {blocks} both attention layers read the text "
            "(only_cross_attention in the config: attn1 is cross-attention), no self-attention",
            "C C：{blocks} 中两个注意力层都读取文本"
            "（配置中的 only_cross_attention：attn1 是交叉注意力），没有自注意力",
        ),
        "title": (
            "Inside the UNet: {n_blocks} blocks on a {h}×{w} latent, {n_res} ResNets read t, "
            "{n_cross} cross-attention layers read the text, {n_self} self-attention layers",
            "UNet 内部：{h}×{w} 潜在表示上的 {n_blocks} 个块，{n_res} 个 ResNet 读取 t，"
            "{n_cross} 个交叉注意力层读取文本，{n_self} 个自注意力层",
        ),
    },
)


def _res(r: tuple[int, int]) -> str:
    return f"{r[0]}×{r[1]}"


def _centre(b: Block, n_levels: int) -> tuple[float, float]:
    if b.part == "mid":
        return MIDDLE, -n_levels * ROW
    if b.part == "down":
        return LEFT + b.level * STAGGER, -b.level * ROW
    return RIGHT - b.level * STAGGER, -b.level * ROW


def _box(ax: Axes, x: float, y: float, w: float, h: float, color: str, alpha: float) -> None:
    rounded_box(ax, x, y, w, h, color, alpha=alpha, pad=0.04, linewidth=1.5)


def _draw_block(ax: Axes, b: Block, x: float, y: float, lang: str) -> None:
    """A block's box: name and class, channels @ resolution, and its layers as chips."""
    _box(ax, x, y, BOX_W, BOX_H, "#888888", 0.10)
    ax.text(x, y + 0.36, f"{b.name} · {b.kind}", ha="center", va="center", fontsize=9)
    label = T("channels_at", lang, channels=b.channels, res=_res(b.resolution))
    ax.text(x, y + 0.08, label, ha="center", va="center", fontsize=9)
    n = len(b.layers)
    gap = 0.07
    chip = min(0.5, (BOX_W - 0.3) / n - gap)
    x0 = x - (n * (chip + gap) - gap) / 2
    for i, layer in enumerate(b.layers):
        letter, color = CHIPS[layer.kind]
        cx = x0 + i * (chip + gap)
        ax.add_patch(
            Rectangle((cx, y - 0.45), chip, 0.36, facecolor=color, edgecolor="white", alpha=0.9)
        )
        ax.text(cx + chip / 2, y - 0.27, letter, ha="center", va="center", fontsize=8.5)


def _arrow(ax: Axes, start, end, color: str = FLOW_COLOR, **kw: Any) -> None:
    ax.add_patch(FancyArrowPatch(start, end, color=color, **{**ARROW, **kw}))


def _draw_flow(ax: Axes, s: UnetStructure, pos: dict[str, tuple[float, float]]) -> None:
    """The main path block to block (conv_in on top of it, conv_out at its end)."""
    order = [b.name for b in s.blocks]
    for a, b in zip(order, order[1:], strict=False):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        down = y1 < y0
        start = (x0, y0 - BOX_H / 2) if down else (x0, y0 + BOX_H / 2)
        end = (x1, y1 + BOX_H / 2) if down else (x1, y1 - BOX_H / 2)
        if a == "mid_block":  # out of its right side, up into the first up block
            start = (x0 + BOX_W / 2, y0)
        if b == "mid_block":  # into its left side (the text enters at its top)
            end = (x1 - BOX_W / 2, y1 + 0.2)
        if abs(y1 - y0) < 1e-6:  # same row (no mid block): across
            start, end = (x0 + BOX_W / 2, y0), (x1 - BOX_W / 2, y1)
        _arrow(ax, start, end)


def _draw_skips(ax: Axes, s: UnetStructure, pos: dict[str, tuple[float, float]], lang: str) -> None:
    """One dashed arrow per up block from the down block at its level, with the tensors."""
    downs = {b.level: b.name for b in s.blocks if b.part == "down"}
    for b in s.blocks:
        taken = [k for k in s.skips if k.target.startswith(b.name + ".")]
        if b.part != "up" or not taken or b.level not in downs:
            continue
        (x0, y0), (x1, y1) = pos[downs[b.level]], pos[b.name]
        start, end = (x0 + BOX_W / 2, y0 + 0.2), (x1 - BOX_W / 2, y1 + 0.2)
        _arrow(ax, start, end, SKIP_COLOR, linestyle="--")
        chans = sorted({k.channels for k in taken})
        ch = f"{chans[0]}" if len(chans) == 1 else "/".join(str(c) for c in chans)
        label = T("skips", lang, n=len(taken), ch=ch)
        ax.text(
            start[0] + 0.15, y0 + 0.3, label, ha="left", va="bottom", fontsize=8.5, color=SKIP_COLOR
        )


def _draw_time(
    ax: Axes, s: UnetStructure, pos: dict[str, tuple[float, float]], top: float, lang: str
) -> None:
    """t → sinusoids → MLP, then a bus down both sides into every block with ResNets."""
    y = top
    mlp = T("time_mlp", lang, a=s.time_features, b=s.time_hidden, c=s.time_dim)
    steps = [
        (T("timestep", lang), 2.0),
        (T("time_proj", lang, n=s.time_features), 4.6),
        (mlp, 4.6),
    ]
    x = 0.9
    for i, (label, w) in enumerate(steps):
        _box(ax, x + w / 2, y, w, 0.8, TIME_COLOR, 0.22)
        ax.text(x + w / 2, y, label, ha="center", va="center", fontsize=9)
        if i:
            _arrow(ax, (x - 0.5, y), (x, y), TIME_COLOR)
        x += w + 0.5
    if s.time_added:  # SDXL and others: more is added to t's embedding before the ResNets
        _box(ax, x + 3.6, y, 7.2, 0.6, TIME_COLOR, 0.22)
        ax.text(x + 3.6, y, f"+ {s.time_added_text(lang)}", ha="center", va="center", fontsize=9)
        _arrow(ax, (x, y), (x - 0.5, y), TIME_COLOR)
    bus_y, left, right = y - 0.75, 0.35, WIDTH - 0.35
    n_res = s.count(RESNET)
    kw = dict(color=TIME_COLOR, linewidth=1.4)
    ax.plot([x - 0.5 - steps[-1][1] / 2] * 2, [y - 0.4, bus_y], **kw)
    ax.plot([left, right], [bus_y, bus_y], **kw)
    label = T("time_bus", lang, dim=s.time_dim, n=n_res)
    ax.text(x, bus_y + 0.08, label, ha="left", va="bottom", fontsize=9, color=TIME_COLOR)
    lowest = {left: bus_y, right: bus_y}  # how far down each side's bus runs
    for b in s.blocks:
        if not b.count(RESNET):
            continue
        bx, by = pos[b.name]
        side, edge = (right, bx + BOX_W / 2) if b.part == "up" else (left, bx - BOX_W / 2)
        lowest[side] = min(lowest[side], by)
        inward = 0.35 if side == left else -0.35
        ax.plot([side, edge - inward], [by, by], **kw)
        _arrow(ax, (edge - inward, by), (edge, by), TIME_COLOR)
    for side, low in lowest.items():
        ax.plot([side, side], [bus_y, low], **kw)


def _draw_text(
    ax: Axes, s: UnetStructure, pos: dict[str, tuple[float, float]], y: float, lang: str
) -> None:
    """The token vectors, and a bus down the middle into every block with cross-attention."""
    tokens = f"{s.text_tokens} × {s.text_dim}" if s.text_tokens else f"L × {s.text_dim}"
    _box(ax, MIDDLE, y, 5.0, 0.8, TEXT_COLOR, 0.22)
    label = T("text", lang, tokens=tokens)
    ax.text(MIDDLE, y, label, ha="center", va="center", fontsize=9)
    fed = [b for b in s.blocks if b.count(CROSS)]
    if not fed:
        return
    kw = dict(color=TEXT_COLOR, linewidth=1.6)
    lowest = min(pos[b.name][1] for b in fed)
    mid = next((b for b in fed if b.part == "mid"), None)
    bottom = lowest + BOX_H / 2 if mid is not None else lowest - 0.25
    ax.plot([MIDDLE, MIDDLE], [y - 0.4, bottom + (0.02 if mid is None else 0.3)], **kw)
    for b in fed:
        bx, by = pos[b.name]
        if b.part == "mid":
            _arrow(ax, (MIDDLE, by + BOX_H / 2 + 0.35), (MIDDLE, by + BOX_H / 2), TEXT_COLOR)
            continue
        edge = bx + BOX_W / 2 if b.part == "down" else bx - BOX_W / 2
        _arrow(ax, (MIDDLE, by - 0.25), (edge, by - 0.25), TEXT_COLOR)
        ax.plot([MIDDLE], [by - 0.25], "o", color=TEXT_COLOR, markersize=5)  # a branch


def _draw_ends(
    ax: Axes, s: UnetStructure, pos: dict[str, tuple[float, float]], y: float, lang: str
) -> None:
    """conv_in above the first down block, conv_out above the last up block."""
    first = next(b for b in s.blocks if b.part == "down")
    last = [b for b in s.blocks if b.part == "up"][-1]
    h, w = s.latent_size
    for b, label, io in (
        (first, T("conv_in", lang, a=s.latent_channels, b=s.stem_channels),
         T("noisy", lang, c=s.latent_channels, h=h, w=w)),
        (last, T("conv_out", lang, a=last.channels, b=s.out_channels),
         T("predicted", lang, c=s.out_channels, h=h, w=w)),
    ):  # fmt: skip
        x = pos[b.name][0]
        _box(ax, x, y, 4.6, 0.55, "#888888", 0.10)
        ax.text(x, y, label, ha="center", va="center", fontsize=9)
        # bold in English only: Noto Sans SC has no bold face, half-bold labels look wrong
        weight = heading_weight(lang)
        ax.text(x, y + 1.0, io, ha="center", va="center", fontsize=10, fontweight=weight)
        if b is first:
            _arrow(ax, (x, y + 0.8), (x, y + 0.3))
            _arrow(ax, (x, y - 0.3), (x, pos[b.name][1] + BOX_H / 2))
        else:
            _arrow(ax, (x, pos[b.name][1] + BOX_H / 2), (x, y - 0.3))
            _arrow(ax, (x, y + 0.3), (x, y + 0.8))


def _legend(ax: Axes, y: float, lang: str) -> None:
    items = [
        (RESNET, T("legend.resnet", lang)),
        (SELF, T("legend.self", lang)),
        (CROSS, T("legend.cross", lang)),
        (DOWN, T("legend.sample", lang)),
    ]
    x = 0.9
    for kind, label in items:
        letter, color = CHIPS[kind]
        ax.add_patch(Rectangle((x, y - 0.18), 0.42, 0.36, facecolor=color, alpha=0.9))
        ax.text(
            x + 0.21, y, letter if kind != DOWN else "↓↑", ha="center", va="center", fontsize=8.5
        )
        ax.text(x + 0.55, y, label, ha="left", va="center", fontsize=9)
        x += 0.9 + 0.13 * text_width(label)  # a Chinese character is two Latin ones wide
    ax.plot([x, x + 0.8], [y, y], "--", color=SKIP_COLOR, linewidth=1.4)
    ax.text(x + 0.95, y, T("legend.skip", lang), ha="left", va="center", fontsize=9)


def _note(ax: Axes, s: UnetStructure, y: float, lang: str) -> None:
    """Say which blocks have no self-attention because their attn1 reads the text."""
    if s.only_cross_attention:
        blocks = T("and", lang).join(s.only_cross_attention)
        label = T("note", lang, blocks=blocks)
        ax.text(0.9, y, label, ha="left", va="center", fontsize=9, color=TEXT_COLOR)


def unet_diagram(
    structure: UnetStructure | Any,
    *,
    latent_size: int | Sequence[int] | None = None,
    ax: Axes | None = None,
    lang: str | None = None,
) -> Figure:
    """Draw the UNet as a U, with where the timestep and the text enter every block.

    `structure` is a `sdviz.probes.unet_structure(...)` record, or a pipeline / UNet
    (its structure is read then, at `latent_size`: default `unet.config.sample_size`).
    Nothing is run: the record comes from the module tree and config. `lang`: the language
    of its labels ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> pipe = sdviz.load()
        >>> fig = sdviz.figures.unet_diagram(pipe)
        >>> fig = sdviz.figures.unet_diagram(sdviz.probes.unet_structure(sd, latent_size=64))
    """
    lang = course_language(lang)
    if isinstance(structure, UnetStructure):
        if latent_size is not None:
            raise ValueError(
                "latent_size applies when a pipeline is passed; a structure record already "
                "has one: sdviz.probes.unet_structure(pipe, latent_size=...)."
            )
        s = structure
    else:
        s = unet_structure(structure, latent_size)
    n = sum(b.part == "down" for b in s.blocks)
    pos = {b.name: _centre(b, n) for b in s.blocks}
    bottom = -n * ROW - (2.0 if s.only_cross_attention else 1.5)
    ends_y, top = 1.3, 3.3
    with drawing(lang), style():
        if ax is None:
            fig = new_figure(None, 17.0, 0.62 * (top + 0.6 - bottom))
            ax = fig.add_subplot()
        fig = figure_of(ax)
        ax.set_xlim(0, WIDTH)
        ax.set_ylim(bottom, top + 0.6)
        ax.axis("off")
        for b in s.blocks:
            _draw_block(ax, b, *pos[b.name], lang)
        _draw_flow(ax, s, pos)
        _draw_skips(ax, s, pos, lang)
        _draw_ends(ax, s, pos, ends_y, lang)
        _draw_time(ax, s, pos, top, lang)
        _draw_text(ax, s, pos, ends_y + 0.3, lang)
        _legend(ax, bottom + (0.95 if s.only_cross_attention else 0.45), lang)
        _note(ax, s, bottom + 0.4, lang)
        h, w = s.latent_size
        counts = dict(n_res=s.count(RESNET), n_cross=s.count(CROSS), n_self=s.count(SELF))
        ax.set_title(T("title", lang, n_blocks=len(s.blocks), h=h, w=w, **counts))
    return fig
