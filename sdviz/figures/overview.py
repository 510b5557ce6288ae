"""Figure 1 — the components of Stable Diffusion, annotated with the loaded model's sizes.

Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models") is a CLIP text encoder (Radford et al. 2021), a UNet that removes
noise from latents step by step under a scheduler, and a VAE decoder that turns the
final latents into pixels. The diagram reads every number from the pipeline itself:
the tokenizer's length L, the embedding width d, the latent shape (c, h, w), the image
size (3, H, W) and each network's parameter count.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from ..autoencoder import native_size
from ..builder import count_parameters
from .style import LINE_COLORS, WIDE, figure_of, new_figure, rounded_box, style

NOTE = "#333333"  # colour of the annotations


def human(n: float) -> str:
    """1234567 -> '1.23M' (parameter counts, element counts)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def model_sizes(pipe: Any, run: Any = None) -> dict[str, Any]:
    """The sizes the diagram shows, read from the pipeline configs (and a run when given).

    Returns L (tokens), d (embedding width), latent (c, h, w), image (3, H, W), the
    VAE scale factor, the scheduler name and parameter counts of each network.
    """
    if run is not None:
        height, width = int(run["pipeline.height"]), int(run["pipeline.width"])
    else:
        height = width = native_size(pipe)
    factor = int(pipe.vae_scale_factor)
    vae = pipe.vae
    return {
        "L": int(pipe.tokenizer.model_max_length),
        "d": int(pipe.text_encoder.config.hidden_size),
        "latent": (int(pipe.unet.config.in_channels), height // factor, width // factor),
        "image": (3, height, width),
        "factor": factor,
        "scheduler": type(pipe.scheduler).__name__,
        "params": {
            "text_encoder": count_parameters(pipe.text_encoder),
            "unet": count_parameters(pipe.unet),
            "vae_decoder": count_parameters(vae.decoder) + count_parameters(vae.post_quant_conv),
            "vae": count_parameters(vae),
        },
    }


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str) -> None:
    rounded_box(ax, x, y, w, h, color)
    ax.text(x, y, text, ha="center", va="center", fontsize=11)


def _arrow(ax: Axes, start, end, label: str = "", **kw) -> None:
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=18, linewidth=1.6, **kw)
    )
    if label:
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.09)
        ax.text(mid[0], mid[1], label, ha="center", va="bottom", fontsize=10, color=NOTE)


def _draw_pipeline(ax: Axes, s: dict[str, Any]) -> None:
    """The three networks in a row with the shapes that flow between them."""
    c, h, w = s["latent"]
    _, H, W = s["image"]
    p = s["params"]
    blue, orange, green, pink = LINE_COLORS[:4]
    y = 1.9
    ax.text(0.55, y, "prompt\n(text)", ha="center", va="center", fontsize=12)
    _box(ax, 2.55, y, 1.7, 0.9, f"CLIP text encoder\n{human(p['text_encoder'])} params", blue)
    unet = f"UNet  {human(p['unet'])} params\n+ {s['scheduler']}"
    _box(ax, 5.45, y, 1.9, 0.9, unet, orange)
    _box(ax, 8.2, y, 1.5, 0.9, f"VAE decoder\n{human(p['vae_decoder'])} params", green)
    _arrow(ax, (1.1, y), (1.7, y), f"{s['L']} token ids")
    _arrow(ax, (3.4, y), (4.5, y), f"embeddings {s['L']}×{s['d']}")
    _arrow(ax, (6.4, y), (7.45, y), f"latents {c}×{h}×{w}")
    _arrow(ax, (8.95, y), (9.65, y))
    ax.text(10.1, y, f"image\n3×{H}×{W}", ha="center", va="center", fontsize=12)
    # the denoising loop and the starting noise
    _arrow(ax, (6.1, y + 0.47), (4.8, y + 0.47), connectionstyle="arc3,rad=0.6", color=orange)
    ax.text(5.45, y + 0.95, "repeat for each step t", ha="center", fontsize=10, color=NOTE)
    _arrow(ax, (5.45, 0.55), (5.45, y - 0.47), color=pink)
    kw = dict(ha="center", va="center", color=NOTE)
    ax.text(5.45, 0.35, f"random noise {c}×{h}×{w}", fontsize=11, **kw)
    ratio = 3 * H * W / (c * h * w)
    note = f"latent = image / {s['factor']} per side\n{ratio:.0f}× fewer numbers"
    ax.text(8.2, 0.35, note, fontsize=10, **kw)


def components(pipe: Any, run: Any = None, *, ax: Axes | None = None) -> Figure:
    """Draw text encoder -> UNet + scheduler over latents -> VAE decoder, with real sizes.

    Shapes come from the pipeline's configs (and `run["pipeline.height"]` and
    `run["pipeline.width"]` when a traced run is given); parameter counts from the
    networks' weights (`model_sizes`): no network runs.

    Example:
        >>> pipe = sdviz.load()
        >>> fig = sdviz.figures.components(pipe)
        >>> fig.savefig("components.png")
    """
    sizes = model_sizes(pipe, run)
    with style():
        if ax is None:
            fig = new_figure(None, 3.4 * WIDE, 4.4)
            ax = fig.add_subplot()
        fig = figure_of(ax)
        ax.set_xlim(0, 10.6)
        ax.set_ylim(0, 3)
        ax.axis("off")
        _draw_pipeline(ax, sizes)
        ax.set_title("The components of Stable Diffusion (sizes of the loaded model)")
    return fig
