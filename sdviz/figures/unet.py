"""Figure 9 — inside the UNet: blocks, resolutions, channels, skips, cross-attention.

The denoiser of Stable Diffusion is a UNet (Ronneberger et al. 2015) as used in DDPM
(Ho et al. 2020): down blocks halve the latent resolution and widen the channels, a
mid block works at the coarsest resolution, up blocks climb back while concatenating
the skip connections saved on the way down. Transformer blocks inside the "CrossAttn"
blocks hold the cross-attention layers where the text embeddings enter (Rombach et al.
2022, Sec. 3.3): every `attn2`, and `attn1` too in blocks built with
`only_cross_attention` (sdviz-mini's first block). Which layers those are is
`sdviz.attention.cross_attention_layers`, the one definition the traces use too.
Everything drawn is read from `unet.config` and the module tree, so the diagram is the
loaded model's.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..attention import cross_attention_layers
from .style import LINE_COLORS, WIDE, figure_of, new_figure, style


def unet_structure(pipe_or_unet: Any, latent_size: int | None = None) -> list[dict[str, Any]]:
    """One dict per block (down..., mid, up...): name, kind, level, resolution, channels,
    cross_attention (how many of `cross_attention_layers(unet)` it holds), layers.

    `latent_size` is the side of the latent the UNet sees (default `unet.config.sample_size`).
    """
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    config = getattr(unet, "config", None)
    if config is None or "block_out_channels" not in config:
        raise TypeError(
            f"Expected a diffusers pipeline or UNet2DConditionModel, got {type(pipe_or_unet).__name__}."
        )
    size = int(latent_size or config.sample_size)
    channels = list(config.block_out_channels)
    n = len(channels)
    lpb = config.layers_per_block
    lpb = list(lpb) if isinstance(lpb, (list, tuple)) else [lpb] * n
    cross: dict[str, int] = {}
    for name in cross_attention_layers(unet):
        parts = name.split(".")
        block = ".".join(parts[:2]) if parts[0] != "mid_block" else "mid_block"
        cross[block] = cross.get(block, 0) + 1

    def block(name: str, kind: str, level: int, layers: int) -> dict[str, Any]:
        return dict(
            name=name,
            kind=kind,
            level=level,
            resolution=max(size // 2**level, 1),
            channels=channels[level],
            cross_attention=cross.get(name, 0),
            layers=layers,
        )

    blocks = [
        block(f"down_blocks.{i}", k, i, lpb[i]) for i, k in enumerate(config.down_block_types)
    ]
    blocks.append(block("mid_block", config.mid_block_type or "none", n - 1, 1))
    for j, kind in enumerate(config.up_block_types):
        # each layer of an up block consumes one skip tensor from its level
        blocks.append(block(f"up_blocks.{j}", kind, n - 1 - j, lpb[n - 1 - j] + 1))
    return blocks


def _label(b: dict[str, Any]) -> str:
    attn = f"{b['cross_attention']}× cross-attn" if b["cross_attention"] else "no cross-attn"
    res = f"{b['resolution']}×{b['resolution']}"
    return f"{b['name']}\n{b['kind']}\n{b['channels']} ch @ {res}, {attn}"


BOX_W, BOX_H = 3.6, 0.78  # a block's box, in axis units
ARROW = dict(arrowstyle="-|>", mutation_scale=16, linewidth=1.5)


def _draw_blocks(ax: Axes, blocks: list[dict[str, Any]], n: int) -> dict[str, tuple]:
    """One box per block along a U; returns each block's centre."""
    step_x = min(1.3, 3.4 / max(n - 1, 1))  # keeps a gap at the bottom level
    pos = {}
    for b in blocks:
        if b["name"] == "mid_block":
            x, y = 8.0, -n
        elif b["name"].startswith("down"):
            x, y = 2.2 + b["level"] * step_x, -b["level"]
        else:
            x, y = 13.8 - b["level"] * step_x, -b["level"]
        pos[b["name"]] = (x, y)
        color = LINE_COLORS[1] if b["cross_attention"] else LINE_COLORS[0]
        ax.add_patch(
            FancyBboxPatch(
                (x - BOX_W / 2, y - BOX_H / 2),
                BOX_W,
                BOX_H,
                boxstyle="round,pad=0.03",
                facecolor=color,
                alpha=0.25 if b["cross_attention"] else 0.12,
                edgecolor=color,
                linewidth=2,
            )
        )
        ax.text(x, y, _label(b), ha="center", va="center", fontsize=10.5)
    return pos


def _draw_flow(ax: Axes, blocks: list[dict[str, Any]], pos: dict[str, tuple]) -> None:
    """Arrows from block to block, and the dashed skip connections across the U."""
    order = [b["name"] for b in blocks]
    for a, b in zip(order, order[1:], strict=False):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        start = (x0, y0 - BOX_H / 2) if y1 < y0 else (x0, y0 + BOX_H / 2)
        end = (x1, y1 + BOX_H / 2) if y1 < y0 else (x1, y1 - BOX_H / 2)
        ax.add_patch(FancyArrowPatch(start, end, color="#444444", **ARROW))
    for b in blocks:
        if b["name"].startswith("up"):
            (x0, y0), (x1, y1) = pos[f"down_blocks.{b['level']}"], pos[b["name"]]
            start, end = (x0 + BOX_W / 2, y0), (x1 - BOX_W / 2, y1)
            ax.add_patch(FancyArrowPatch(start, end, linestyle="--", color=LINE_COLORS[2], **ARROW))
            label = f"skip ×{b['layers']}"
            kw = dict(ha="center", va="bottom", fontsize=10, color=LINE_COLORS[2])
            ax.text((x0 + x1) / 2, y0 + 0.08, label, **kw)


def unet_diagram(
    pipe_or_unet: Any, *, latent_size: int | None = None, ax: Axes | None = None
) -> Figure:
    """Draw the UNet as a U: down blocks, mid block, up blocks, skips, where the text enters.

    Blocks with cross-attention (`sdviz.attention.cross_attention_layers`) are filled
    orange; arrows across the U are the skip connections (with how many tensors each up
    block takes from its level).

    Example:
        >>> pipe = sdviz.load()
        >>> fig = sdviz.figures.unet_diagram(pipe)          # from pipe.unet.config
        >>> fig = sdviz.figures.unet_diagram(pipe, latent_size=64)   # SD 1.5 at 512 px
    """
    blocks = unet_structure(pipe_or_unet, latent_size)
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    n = len(unet.config.block_out_channels)
    in_ch, out_ch = unet.config.in_channels, unet.config.out_channels
    total = sum(b["cross_attention"] for b in blocks)
    with style():
        if ax is None:
            fig = new_figure(None, 3.4 * WIDE, 2.0 + 1.35 * (n + 1))
            ax = fig.add_subplot()
        fig = figure_of(ax)
        ax.set_xlim(0, 16)
        ax.set_ylim(-(n + 0.7), 1.0)
        ax.axis("off")
        pos = _draw_blocks(ax, blocks, n)
        _draw_flow(ax, blocks, pos)
        x_in, _ = pos["down_blocks.0"]
        x_out, _ = pos[f"up_blocks.{len(unet.config.up_block_types) - 1}"]
        ax.text(x_in, 0.75, f"noisy latent x_t ({in_ch} ch) + t", ha="center", fontsize=10)
        ax.text(x_out, 0.75, f"predicted noise ({out_ch} ch)", ha="center", fontsize=10)
        ax.set_title(
            f"Inside the UNet: {len(blocks)} blocks, {total} cross-attention layers "
            "(orange) where the text enters"
        )
    return fig
