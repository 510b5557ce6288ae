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

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from ..autoencoder import native_size
from ..builder import count_parameters
from ..language import Texts, course_language
from ..pipeline import FAMILY_NAMES, denoiser, family, pipeline_default
from .style import LINE_COLORS, WIDE, figure_of, new_figure, rounded_box, style

NOTE = "#333333"  # colour of the annotations

T = Texts(
    __name__,
    {
        "pooled": ("pooled text vector ({width})", "池化文本向量（{width}）"),
        "time_ids": ("size/crop time_ids ({n})", "尺寸/裁剪 time_ids（{n}）"),
        "guidance": (
            "guidance scale g (distilled: no unconditional branch)",
            "引导系数 g（已蒸馏：没有无条件分支）",
        ),
        "blocks_joint": ("{n} joint (MMDiT)", "{n} 个联合块（MMDiT）"),
        "blocks_double": (
            "{n} double-stream\n+ {single} single-stream",
            "{n} 个双流块\n+ {single} 个单流块",
        ),
        "clip": ("CLIP text encoder\n{params} params", "CLIP 文本编码器\n{params} 参数"),
        "token_ids": ("{L} token ids", "{L} 个标记 ID"),
        "embeddings": ("embeddings {L}×{d}", "嵌入 {L}×{d}"),
        "encoder": (
            "{kind} text encoder\n{params} params, {L}×{d}",
            "{kind} 文本编码器\n{params} 参数，{L}×{d}",
        ),
        "encoder_n": (
            "{kind} text encoder {number}\n{params} params, {L}×{d}",
            "{kind} 文本编码器 {number}\n{params} 参数，{L}×{d}",
        ),
        "pooled_only": ("pooled only", "仅池化向量"),
        "token_lists": ("one token list\nper encoder", "每个编码器\n一个标记列表"),
        "joined": ("joined\n{L}×{d}", "拼接后\n{L}×{d}"),
        "t5_tokens": ("T5 tokens\n{L}×{d}", "T5 标记\n{L}×{d}"),
        "prompt": ("prompt\n(text)", "提示词\n（文本）"),
        "net": ("{name}  {params} params\n+ {scheduler}", "{name}  {params} 参数\n+ {scheduler}"),
        "net_joint": (
            "{name}  {params} params\n{n} joint (MMDiT) blocks\n+ {scheduler}",
            "{name}  {params} 参数\n{n} 个联合块（MMDiT）\n+ {scheduler}",
        ),
        "net_double": (
            "{name}  {params} params\n{n} double-stream\n+ {single} single-stream blocks\n"
            "+ {scheduler}",
            "{name}  {params} 参数\n{n} 个双流块\n+ {single} 个单流块\n+ {scheduler}",
        ),
        "vae": ("VAE decoder\n{params} params", "VAE 解码器\n{params} 参数"),
        "latents": ("latents {c}×{h}×{w}", "潜在表示 {c}×{h}×{w}"),
        "image": ("image\n3×{H}×{W}", "图像\n3×{H}×{W}"),
        "repeat": ("repeat for each step t", "每一步 t 重复一次"),
        "noise": ("random noise {c}×{h}×{w}", "随机噪声 {c}×{h}×{w}"),
        "ratio": (
            "latent = image / {factor} per side\n{ratio:.0f}× fewer numbers",
            "潜在表示 = 图像每边缩小 {factor} 倍\n数值少 {ratio:.0f} 倍",
        ),
        "beside": ("added to t's embedding:\n{items}", "加到 t 的嵌入上：\n{items}"),
        "title": (
            "The components of {title} (sizes of the loaded model)",
            "{title} 的组成部分（已加载模型的尺寸）",
        ),
    },
)


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


def _beside_t(pipe: Any, net: Any, lang: str) -> list[str]:
    """What the denoiser adds to its timestep embedding besides t (no attention map shows it)."""
    config = net.config
    out = []
    pooled = config.get("pooled_projection_dim") or config.get(
        "projection_class_embeddings_input_dim"
    )
    if getattr(config, "addition_embed_type", None) == "text_time":  # SDXL
        width = pipe.text_encoder_2.config.projection_dim
        n_ids = (pooled - width) // config.addition_time_embed_dim
        out += [T("pooled", lang, width=width), T("time_ids", lang, n=n_ids)]
    elif pooled:
        out.append(T("pooled", lang, width=pooled))
    if config.get("guidance_embeds", False):
        out.append(T("guidance", lang))
    return out


def model_sizes(pipe: Any, run: Any = None, lang: str | None = None) -> dict[str, Any]:
    """The sizes the diagram shows, read from the pipeline configs (and a run when given).

    Returns L (tokens) and d (width) of the text sequence the denoiser reads, the latent
    (c, h, w), the image (3, H, W), the VAE scale factor, the scheduler name, parameter
    counts of each network (`text_encoder`, ..., `unet` or `transformer`, `vae_decoder`,
    `vae`), and for every family `encoders` (one dict per text encoder), `denoiser`
    ('unet' or 'transformer'), `blocks` (a transformer's blocks) and `beside_t` (what is
    added to the timestep embedding: pooled text, SDXL's time_ids, Flux's guidance), the
    last two in `lang` ("en", "zh"; default `sdviz.language.course_language`), and
    `block_counts` (a transformer's joint or double-stream and single-stream blocks).
    """
    lang = course_language(lang)
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
    blocks, counts = "", {}
    if kind == "transformer":
        counts = {"n": config.num_layers, "single": config.get("num_single_layers", 0)}
        blocks = T("blocks_double" if counts["single"] else "blocks_joint", lang, **counts)
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
        "block_counts": counts,
        "beside_t": _beside_t(pipe, net, lang),
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


def _draw_encoders(ax: Axes, s: dict[str, Any], y: float, color: str, lang: str) -> None:
    """One box per text encoder, stacked, each with an arrow into the joined sequence."""
    encoders = s["encoders"]
    if len(encoders) == 1:  # SD 1.x/2.x: the article's one CLIP box
        e = encoders[0]
        _box(ax, 2.55, y, 1.7, 0.9, T("clip", lang, params=human(e["params"])), color)
        _arrow(ax, (1.1, y), (1.7, y), T("token_ids", lang, L=s["L"]))
        _arrow(ax, (3.4, y), (4.5, y), T("embeddings", lang, L=s["L"], d=s["d"]))
        return
    gap = 0.72
    top = y + gap * (len(encoders) - 1) / 2
    pooled_only = s["family"] == "flux"  # Flux reads CLIP's pooled vector, T5's tokens
    for i, e in enumerate(encoders):
        yi = top - gap * i
        number = e["component"].removeprefix("text_encoder").lstrip("_")
        fields = dict(kind=e["kind"], params=human(e["params"]), L=e["L"], d=e["d"])
        text = (
            T("encoder_n", lang, number=number, **fields)
            if number
            else T("encoder", lang, **fields)
        )
        _box(ax, 2.55, yi, 1.7, 0.62, text, color)
        _arrow(ax, (1.1, y), (1.7, yi))
        dashed = pooled_only and e["kind"] == "CLIP"
        _arrow(ax, (3.4, yi), (4.5, y), linestyle="--" if dashed else "-")
        if dashed:
            ax.text(3.95, yi + 0.05, T("pooled_only", lang), ha="center", fontsize=9, color=NOTE)
    ax.text(0.55, y - 0.3, T("token_lists", lang), ha="center", va="top", fontsize=9)
    joined = T("t5_tokens" if pooled_only else "joined", lang, L=s["L"], d=s["d"])
    box = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none")
    ax.text(4.15, y - 0.7, joined, ha="center", va="top", fontsize=9, bbox=box)


def _draw_pipeline(ax: Axes, s: dict[str, Any], lang: str) -> None:
    """The three networks in a row with the shapes that flow between them."""
    c, h, w = s["latent"]
    _, H, W = s["image"]
    p = s["params"]
    blue, orange, green, pink = LINE_COLORS[:4]
    y = 1.9
    ax.text(0.55, y, T("prompt", lang), ha="center", va="center", fontsize=12)
    _draw_encoders(ax, s, y, blue, lang)
    kind, counts = s["denoiser"], s["block_counts"]
    name = "UNet" if kind == "unet" else "Transformer"
    which = ("net_double" if counts["single"] else "net_joint") if counts else "net"
    net = T(which, lang, name=name, params=human(p[kind]), scheduler=s["scheduler"], **counts)
    _box(ax, 5.45, y, 1.9, 0.9 + 0.25 * bool(counts), net, orange, 9 if counts else 11)
    _box(ax, 8.2, y, 1.5, 0.9, T("vae", lang, params=human(p["vae_decoder"])), green)
    _arrow(ax, (6.4, y), (7.45, y), T("latents", lang, c=c, h=h, w=w))
    _arrow(ax, (8.95, y), (9.65, y))
    ax.text(10.1, y, T("image", lang, H=H, W=W), ha="center", va="center", fontsize=12)
    # the denoising loop and the starting noise
    _arrow(ax, (6.1, y + 0.5), (4.8, y + 0.5), connectionstyle="arc3,rad=0.6", color=orange)
    ax.text(5.45, y + 0.98, T("repeat", lang), ha="center", fontsize=10, color=NOTE)
    _arrow(ax, (5.45, 0.55), (5.45, y - 0.5), color=pink)
    kw = dict(ha="center", va="center", color=NOTE)
    ax.text(5.45, 0.35, T("noise", lang, c=c, h=h, w=w), fontsize=11, **kw)
    ratio = 3 * H * W / (c * h * w)
    ax.text(8.2, 0.35, T("ratio", lang, factor=s["factor"], ratio=ratio), fontsize=10, **kw)
    if s["beside_t"]:  # beside t: reaches every block, no attention map shows it
        beside = T("beside", lang, items="\n".join(s["beside_t"]))
        ax.text(6.55, 1.05, beside, fontsize=9, ha="left", va="center", color=NOTE)
        _arrow(ax, (6.5, 1.05), (6.2, y - 0.5), color=NOTE)


def components(
    pipe: Any, run: Any = None, *, ax: Axes | None = None, lang: str | None = None
) -> Figure:
    """Draw text encoder(s) -> UNet or transformer + scheduler over latents -> VAE decoder,
    with real sizes, for every family sdviz loads (SD 1.x/2.x, SDXL, SD3, Flux).

    Shapes come from the pipeline's configs (and `run["pipeline.height"]` and
    `run["pipeline.width"]` when a traced run is given); parameter counts from the
    networks' weights (`model_sizes`): no network runs. `lang`: the language of the texts
    ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> pipe = sdviz.load()
        >>> fig = sdviz.figures.components(pipe)
        >>> fig.savefig("components.png")
    """
    lang = course_language(lang)
    sizes = model_sizes(pipe, run, lang)
    with style(lang):
        if ax is None:
            fig = new_figure(None, 3.4 * WIDE, 4.4)
            ax = fig.add_subplot()
        elif lang != "en":  # an Axes passed in: its title was made before the language's fonts
            ax.title.set_fontfamily(matplotlib.rcParams["font.family"])
        fig = figure_of(ax)
        ax.set_xlim(0, 10.6)
        ax.set_ylim(0, 3)
        ax.axis("off")
        _draw_pipeline(ax, sizes, lang)
        name = sizes["family"]
        title = "Stable Diffusion" if name == "stable-diffusion" else FAMILY_NAMES[name]
        ax.set_title(T("title", lang, title=title))
    return fig
