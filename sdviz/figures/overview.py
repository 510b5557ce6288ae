"""Figure 1 — the components of Stable Diffusion, annotated with the loaded model's sizes.

Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models") is a CLIP text encoder (Radford et al. 2021), a UNet that removes
noise from latents step by step under a scheduler, and a VAE decoder that turns the
final latents into pixels. The diagram reads every number from the pipeline itself:
the tokenizer's length L, the embedding width d, the latent shape (c, h, w), the image
size (3, H, W) and each network's parameter count.

The newer families keep the three parts and change what is inside them (Podell et al.
2023, SDXL; Esser et al. 2024, SD3; Black Forest Labs 2024, Flux): two or three text
encoders (CLIP-L, CLIP-G, T5) whose token vectors are joined into one sequence, a pooled
text vector (and SDXL's size/crop ids, Flux's guidance scale) added to the timestep
embedding, and a transformer instead of the UNet. The diagram draws one box per text
encoder, the sequence the denoiser reads (L × d), and what enters beside t.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from ..autoencoder import native_size
from ..builder import count_parameters
from ..pipeline import FAMILY_NAMES, denoiser, family, pipeline_default
from .style import LINE_COLORS, WIDE, figure_of, new_figure, rounded_box, style

NOTE = "#333333"  # colour of the annotations


def human(n: float) -> str:
    """1234567 -> '1.23M' (parameter counts, element counts)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")  # as diffusers names them
ENCODER_KINDS = {
    "CLIPTextModel": "CLIP",
    "CLIPTextModelWithProjection": "CLIP",
    "T5EncoderModel": "T5",
}


def _encoders(pipe: Any, run: Any) -> list[dict[str, Any]]:
    """Each text encoder the pipeline holds: its name, kind, tokens L, width d, parameters."""
    out = []
    for component in ENCODERS:
        encoder = getattr(pipe, component, None)
        if encoder is None:
            continue
        tokenizer = getattr(pipe, component.replace("text_encoder", "tokenizer"))
        kind = ENCODER_KINDS.get(type(encoder).__name__, type(encoder).__name__)
        if kind == "T5":  # padded to the pipeline's max_sequence_length, not the tokenizer's
            key = component.replace("text_encoder", "tokenizer") + ".input_ids"
            length = len(run[key]) if run is not None and key in run else None
            length = length or pipeline_default(type(pipe).__name__, "max_sequence_length")
        else:
            length = tokenizer.model_max_length
        config = encoder.config
        out.append(
            {
                "component": component,
                "kind": kind,
                "L": int(length),
                "d": int(getattr(config, "hidden_size", None) or config.d_model),
                "params": count_parameters(encoder),
            }
        )
    return out


def _beside_t(pipe: Any, net: Any) -> list[str]:
    """What the denoiser adds to its timestep embedding besides t (no attention map shows it)."""
    config = net.config
    out = []
    pooled = config.get("pooled_projection_dim") or config.get(
        "projection_class_embeddings_input_dim"
    )
    if getattr(config, "addition_embed_type", None) == "text_time":  # SDXL
        width = pipe.text_encoder_2.config.projection_dim
        n_ids = (pooled - width) // config.addition_time_embed_dim
        out += [f"pooled text vector ({width})", f"size/crop time_ids ({n_ids})"]
    elif pooled:
        out.append(f"pooled text vector ({pooled})")
    if config.get("guidance_embeds", False):
        out.append("guidance scale g (distilled: no unconditional branch)")
    return out


def model_sizes(pipe: Any, run: Any = None) -> dict[str, Any]:
    """The sizes the diagram shows, read from the pipeline configs (and a run when given).

    Returns L (tokens) and d (width) of the text sequence the denoiser reads, the latent
    (c, h, w), the image (3, H, W), the VAE scale factor, the scheduler name, parameter
    counts of each network (`text_encoder`, ..., `unet` or `transformer`, `vae_decoder`,
    `vae`), and for every family `encoders` (one dict per text encoder), `denoiser`
    ('unet' or 'transformer'), `blocks` (a transformer's blocks) and `beside_t` (what is
    added to the timestep embedding: pooled text, SDXL's time_ids, Flux's guidance).
    """
    if run is not None:
        height, width = int(run["pipeline.height"]), int(run["pipeline.width"])
    else:
        height = width = native_size(pipe)
    factor = int(pipe.vae_scale_factor)
    vae, net = pipe.vae, denoiser(pipe)
    kind = "unet" if net is getattr(pipe, "unet", None) else "transformer"
    name = family(pipe)
    encoders = _encoders(pipe, run)
    config = net.config
    if name == "stable-diffusion-3":  # CLIP-L | CLIP-G along channels, then T5 along tokens
        L, d = encoders[0]["L"] + encoders[-1]["L"], config.joint_attention_dim
    elif name == "flux":  # T5's tokens only; CLIP gives its pooled vector
        L, d = encoders[-1]["L"], config.joint_attention_dim
    else:  # SD: one encoder; SDXL: both encoders' vectors side by side per token
        L, d = encoders[0]["L"], sum(e["d"] for e in encoders)
    blocks = ""
    if kind == "transformer":
        single = config.get("num_single_layers", 0)
        joint = "double-stream" if single else "joint (MMDiT)"
        blocks = f"{config.num_layers} {joint}" + (f"\n+ {single} single-stream" if single else "")
    return {
        "family": name,
        "L": int(L),
        "d": int(d),
        "latent": (int(vae.config.latent_channels), height // factor, width // factor),
        "image": (3, height, width),
        "factor": factor,
        "scheduler": type(pipe.scheduler).__name__,
        "encoders": encoders,
        "denoiser": kind,
        "blocks": blocks,
        "beside_t": _beside_t(pipe, net),
        "params": {
            **{e["component"]: e["params"] for e in encoders},
            kind: count_parameters(net),
            "vae_decoder": sum(
                count_parameters(m)
                for m in (vae.decoder, getattr(vae, "post_quant_conv", None))
                if m
            ),
            "vae": count_parameters(vae),
        },
    }


def _box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str, size: int = 11
) -> None:
    rounded_box(ax, x, y, w, h, color)
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(ax: Axes, start, end, label: str = "", **kw) -> None:
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=18, linewidth=1.6, **kw)
    )
    if label:
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.09)
        ax.text(mid[0], mid[1], label, ha="center", va="bottom", fontsize=10, color=NOTE)


def _draw_encoders(ax: Axes, s: dict[str, Any], y: float, color: str) -> None:
    """One box per text encoder, stacked, each with an arrow into the joined sequence."""
    encoders = s["encoders"]
    if len(encoders) == 1:  # SD 1.x/2.x: the article's one CLIP box
        e = encoders[0]
        _box(ax, 2.55, y, 1.7, 0.9, f"CLIP text encoder\n{human(e['params'])} params", color)
        _arrow(ax, (1.1, y), (1.7, y), f"{s['L']} token ids")
        _arrow(ax, (3.4, y), (4.5, y), f"embeddings {s['L']}×{s['d']}")
        return
    gap = 0.72
    top = y + gap * (len(encoders) - 1) / 2
    pooled_only = s["family"] == "flux"  # Flux reads CLIP's pooled vector, T5's tokens
    for i, e in enumerate(encoders):
        yi = top - gap * i
        number = e["component"].removeprefix("text_encoder").lstrip("_")
        text = f"{e['kind']} text encoder {number}".rstrip()
        _box(
            ax,
            2.55,
            yi,
            1.7,
            0.62,
            f"{text}\n{human(e['params'])} params, {e['L']}×{e['d']}",
            color,
        )
        _arrow(ax, (1.1, y), (1.7, yi))
        dashed = pooled_only and e["kind"] == "CLIP"
        _arrow(ax, (3.4, yi), (4.5, y), linestyle="--" if dashed else "-")
        if dashed:
            ax.text(3.95, yi + 0.05, "pooled only", ha="center", fontsize=9, color=NOTE)
    ax.text(0.55, y - 0.3, "one token list\nper encoder", ha="center", va="top", fontsize=9)
    joined = "T5 tokens" if pooled_only else "joined"
    box = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none")
    ax.text(
        4.15, y - 0.7, f"{joined}\n{s['L']}×{s['d']}", ha="center", va="top", fontsize=9, bbox=box
    )


def _draw_pipeline(ax: Axes, s: dict[str, Any]) -> None:
    """The three networks in a row with the shapes that flow between them."""
    c, h, w = s["latent"]
    _, H, W = s["image"]
    p = s["params"]
    blue, orange, green, pink = LINE_COLORS[:4]
    y = 1.9
    ax.text(0.55, y, "prompt\n(text)", ha="center", va="center", fontsize=12)
    _draw_encoders(ax, s, y, blue)
    kind = s["denoiser"]
    name = "UNet" if kind == "unet" else "Transformer"
    blocks = f"\n{s['blocks']} blocks" if s["blocks"] else ""
    net = f"{name}  {human(p[kind])} params{blocks}\n+ {s['scheduler']}"
    _box(ax, 5.45, y, 1.9, 0.9 + 0.25 * bool(blocks), net, orange, 9 if blocks else 11)
    _box(ax, 8.2, y, 1.5, 0.9, f"VAE decoder\n{human(p['vae_decoder'])} params", green)
    _arrow(ax, (6.4, y), (7.45, y), f"latents {c}×{h}×{w}")
    _arrow(ax, (8.95, y), (9.65, y))
    ax.text(10.1, y, f"image\n3×{H}×{W}", ha="center", va="center", fontsize=12)
    # the denoising loop and the starting noise
    _arrow(ax, (6.1, y + 0.5), (4.8, y + 0.5), connectionstyle="arc3,rad=0.6", color=orange)
    ax.text(5.45, y + 0.98, "repeat for each step t", ha="center", fontsize=10, color=NOTE)
    _arrow(ax, (5.45, 0.55), (5.45, y - 0.5), color=pink)
    kw = dict(ha="center", va="center", color=NOTE)
    ax.text(5.45, 0.35, f"random noise {c}×{h}×{w}", fontsize=11, **kw)
    ratio = 3 * H * W / (c * h * w)
    note = f"latent = image / {s['factor']} per side\n{ratio:.0f}× fewer numbers"
    ax.text(8.2, 0.35, note, fontsize=10, **kw)
    if s["beside_t"]:  # beside t: reaches every block, no attention map shows it
        beside = "added to t's embedding:\n" + "\n".join(s["beside_t"])
        ax.text(6.55, 1.05, beside, fontsize=9, ha="left", va="center", color=NOTE)
        _arrow(ax, (6.5, 1.05), (6.2, y - 0.5), color=NOTE)


def components(pipe: Any, run: Any = None, *, ax: Axes | None = None) -> Figure:
    """Draw text encoder(s) -> UNet or transformer + scheduler over latents -> VAE decoder,
    with real sizes, for every family sdviz loads (SD 1.x/2.x, SDXL, SD3, Flux).

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
        name = sizes["family"]
        title = "Stable Diffusion" if name == "stable-diffusion" else FAMILY_NAMES[name]
        ax.set_title(f"The components of {title} (sizes of the loaded model)")
    return fig
