"""Inside the noise predictor: the UNet's structure and its timestep embedding, read from
the loaded model (figure 9 and its timestep panel).

Stable Diffusion's denoiser is the UNet of DDPM (Ho et al. 2020; Ronneberger et al. 2015)
with transformer blocks added (Rombach et al. 2022, Sec. 3.3):

- **the timestep**: `time_proj` turns t into sinusoidal features (the positional encoding
  of Vaswani et al. 2017), `time_embedding` (an MLP) turns those into one vector, and
  every ResNet block adds its own linear projection of it (`time_emb_proj`) to its
  feature maps, one number per channel. That is how the network knows how noisy x_t is.
- **the path**: down blocks halve the resolution, a mid block works at the coarsest one,
  up blocks climb back, each of their ResNets concatenating one tensor saved on the way
  down (a skip connection).
- **attention**: inside the transformer blocks, a query comes from every latent pixel; a
  self-attention layer takes keys and values from the latent pixels too, a
  cross-attention layer from the text encoder's token vectors: that is where the text
  enters. Which layers attend to the text is `sdviz.attention.cross_attention_layers`
  (every `attn2`, and `attn1` in blocks built with `only_cross_attention`).

`unet_structure(pipe)` walks the module tree (no forward pass, so it also works for a
UNet on the meta device, as `sd_skeleton("1.5")` builds SD 1.5's); `timestep_embeddings(pipe)`
runs only `time_proj` and `time_embedding` of the loaded weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..attention import cross_attention_layers
from ..language import Texts, course_language

RESNET, SELF, CROSS, DOWN, UP = (
    "resnet",
    "self-attention",
    "cross-attention",
    "downsample",
    "upsample",
)
KINDS = (RESNET, SELF, CROSS, DOWN, UP)  # every kind of layer a Block lists

# the tables' headers and words, in each course language (`sdviz.language`)
T = Texts(
    __name__,
    {
        RESNET: ("resnet", "ResNet 块"),
        SELF: ("self-attention", "自注意力"),
        CROSS: ("cross-attention", "交叉注意力"),
        DOWN: ("downsample", "下采样"),
        UP: ("upsample", "上采样"),
        "block": ("block", "块"),
        "block_kind": ("kind", "类型"),
        "channels_out": ("channels out", "输出通道"),
        "layers": (
            "layers (R ResNet+t, S self-attn, C cross-attn)",
            "层（R：ResNet 块 + t，S：自注意力，C：交叉注意力）",
        ),
        "skips_in": ("skips in", "接收的跳跃连接"),
        "layer": ("layer", "层"),
        "layer_kind": ("kind", "类型"),
        "from": ("keys, values from", "键、值来自"),
        "from_text": ("text tokens", "文本标记"),
        "from_image": ("image positions", "图像位置"),
        "keys": ("keys (count × width)", "键（个数 × 宽度）"),
        "matrix": (
            "attention matrix per head (queries × keys)",
            "每个注意力头的注意力矩阵（查询 × 键）",
        ),
        "heads": ("heads", "注意力头"),
        "add_embedding": ("add_embedding: {what}", "add_embedding：{what}"),
        "class_embedding": ("class_embedding: {what}", "class_embedding：{what}"),
        # what add_embedding / class_embedding add to t's embedding, by config value
        "added.text": ("the pooled text", "池化的文本向量"),
        "added.text_time": (
            "the pooled text and the image size ids",
            "池化的文本向量和图像尺寸 ID",
        ),
        "added.image": ("an image embedding", "一个图像嵌入"),
        "added.text_image": ("text and image embeddings", "文本嵌入和图像嵌入"),
        "added.image_hint": ("an image embedding and a hint", "一个图像嵌入和一个提示图"),
        "added.class labels": ("class labels", "类别标签"),
    },
)


@dataclass(frozen=True)
class Layer:
    """One layer of a block, in the order the block calls them."""

    name: str  # module path in the UNet, e.g. "down_blocks.0.resnets.0"
    kind: str  # one of KINDS
    channels: int  # channels it puts out
    resolution: tuple[int, int]  # (h, w) of what it puts out
    key_width: int | None = None  # attention: width of the vectors its keys/values read
    heads: int | None = None  # attention: how many heads


@dataclass(frozen=True)
class Skip:
    """A tensor saved on the way down and concatenated in by an up block's ResNet."""

    source: str  # the module that made it ("conv_in", "down_blocks.1.attentions.0", ...)
    target: str  # the up-block ResNet that concatenates it
    channels: int
    resolution: tuple[int, int]


@dataclass(frozen=True)
class Block:
    """A down, mid or up block: its layers in call order and where it works."""

    name: str  # "down_blocks.0", "mid_block", "up_blocks.2"
    kind: str  # the diffusers class, e.g. "CrossAttnDownBlock2D"
    part: str  # "down", "mid" or "up"
    level: int  # 0 = the latent's own resolution, 1 = halved once, ...
    resolution: tuple[int, int]  # (h, w) its ResNets and attention work at
    channels: int  # channels it puts out
    layers: tuple[Layer, ...]

    def count(self, kind: str) -> int:
        """How many of its layers are of `kind` (one of KINDS)."""
        return sum(layer.kind == kind for layer in self.layers)


@dataclass(frozen=True)
class UnetStructure:
    """The UNet's structure, read from its module tree and config."""

    latent_channels: int  # c of the noisy latent x_t it reads
    out_channels: int  # c of the noise ε̂ it predicts
    latent_size: tuple[int, int]  # (h, w) the resolutions below are computed for
    stem_channels: int  # conv_in's output channels
    blocks: tuple[Block, ...]  # down..., mid, up...
    skips: tuple[Skip, ...]  # in the order the up blocks take them
    time_features: int  # sinusoidal features of t (time_proj)
    time_hidden: int  # the timestep MLP's hidden width (time_embedding.linear_1)
    time_dim: int  # the timestep embedding's width (time_embedding.linear_2)
    time_added: tuple[str, str] | None  # (module, config value): what else is added to t's
    # embedding (SDXL: ("add_embedding", "text_time"), the pooled text and the size ids)
    text_dim: int  # width of the text token vectors the cross-attention reads
    text_tokens: int | None  # how many token vectors (the tokenizer's length); None: no pipeline
    only_cross_attention: tuple[str, ...]  # blocks whose attn1 reads the text too (config's
    # only_cross_attention: no self-attention there)

    def layers(self, kind: str) -> list[str]:
        """Module paths of every layer of `kind` (one of KINDS), in call order."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        return [layer.name for b in self.blocks for layer in b.layers if layer.kind == kind]

    def count(self, kind: str) -> int:
        """How many layers of `kind` the UNet has (one of KINDS)."""
        return len(self.layers(kind))

    def time_added_text(self, lang: str | None = None) -> str | None:
        """What else is added to t's embedding, in words ("add_embedding: the pooled text
        and the image size ids"), in `lang` (default: the course language); None: nothing."""
        if self.time_added is None:
            return None
        lang = course_language(lang)
        module, kind = self.time_added
        what = T.get(f"added.{kind}", lang, kind)  # a kind diffusers added later: its name
        return T(module, lang, what=what)

    def table(self, lang: str | None = None) -> dict[str, list[Any]]:
        """Columns for `sdviz.course.table`: one row per block, its layers abbreviated;
        headers in `lang` (default: the course language)."""
        lang = course_language(lang)
        short = {RESNET: "R", SELF: "S", CROSS: "C", DOWN: "↓", UP: "↑"}
        return {
            T("block", lang): [b.name for b in self.blocks],
            T("block_kind", lang): [b.kind for b in self.blocks],
            "h×w": [f"{b.resolution[0]}×{b.resolution[1]}" for b in self.blocks],
            T("channels_out", lang): [b.channels for b in self.blocks],
            T("layers", lang): [
                " ".join(short[layer.kind] for layer in b.layers) for b in self.blocks
            ],
            T("skips_in", lang): [
                sum(s.target.startswith(b.name + ".") for s in self.skips) for b in self.blocks
            ],
        }

    def attention_table(self, lang: str | None = None) -> dict[str, list[Any]]:
        """Columns for `sdviz.course.table`: one row per attention layer, with where its
        queries and its keys/values come from and the size of its attention matrix;
        headers and words in `lang` (default: the course language)."""
        lang = course_language(lang)
        rows = [x for b in self.blocks for x in b.layers if x.kind in (SELF, CROSS)]
        tokens = self.text_tokens or "L"
        keys = [tokens if x.kind == CROSS else x.resolution[0] * x.resolution[1] for x in rows]
        return {
            T("layer", lang): [x.name for x in rows],
            T("layer_kind", lang): [T(x.kind, lang) for x in rows],
            T("from", lang): [
                T("from_text" if x.kind == CROSS else "from_image", lang) for x in rows
            ],
            T("keys", lang): [f"{k} × {x.key_width}" for k, x in zip(keys, rows, strict=True)],
            T("matrix", lang): [
                f"{x.resolution[0] * x.resolution[1]} × {k}"
                for k, x in zip(keys, rows, strict=True)
            ],
            T("heads", lang): [x.heads for x in rows],
        }


def _unet(pipe_or_unet: Any) -> torch.nn.Module:
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    config = getattr(unet, "config", None)
    if config is None or "block_out_channels" not in config or not hasattr(unet, "down_blocks"):
        raise TypeError(
            "Expected a diffusers pipeline with a UNet or a UNet2DConditionModel, got "
            f"{type(pipe_or_unet).__name__}. (Transformer denoisers such as SD3's have no UNet.)"
        )
    return unet


def _size(unet: Any, latent_size: int | Sequence[int] | None) -> tuple[int, int]:
    size = unet.config.sample_size if latent_size is None else latent_size
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"latent_size must be positive, got {latent_size!r}.")
    return int(h), int(w)


def _half(res: tuple[int, int]) -> tuple[int, int]:
    return (res[0] + 1) // 2, (res[1] + 1) // 2  # a 3×3 conv, stride 2, padding 1


def _attention_layers(prefix: str, transformer: Any, cross: set[str], ch: int, res) -> list[Layer]:
    """attn1 / attn2 of every transformer block in a Transformer2DModel, in call order."""
    out = []
    for i, tb in enumerate(getattr(transformer, "transformer_blocks", [])):
        for attn in ("attn1", "attn2"):
            if getattr(tb, attn, None) is not None:
                name = f"{prefix}.transformer_blocks.{i}.{attn}"
                module = getattr(tb, attn)
                kind = CROSS if name in cross else SELF
                out.append(Layer(name, kind, ch, res, module.to_k.in_features, module.heads))
    return out


def _block_layers(
    name: str, block: Any, cross: set[str], res: tuple[int, int], up_to: tuple[int, int] | None
) -> list[Layer]:
    """The block's layers in the order its forward calls them: ResNet and transformer
    pairs (the mid block starts with a lone ResNet), then a down- or upsampler (an
    upsampler resizes to `up_to`, the resolution of the skips the next block takes)."""
    resnets = list(getattr(block, "resnets", []))
    attentions = list(getattr(block, "attentions", None) or [])
    lead = bool(attentions) and len(resnets) == len(attentions) + 1  # a mid block's lone ResNet
    layers: list[Layer] = []
    for i, resnet in enumerate(resnets):
        ch = int(resnet.conv2.out_channels)
        if lead and i:  # mid block: attention i-1 comes before ResNet i
            layers += _attention_layers(
                f"{name}.attentions.{i - 1}", attentions[i - 1], cross, ch, res
            )
        layers.append(Layer(f"{name}.resnets.{i}", RESNET, ch, res))
        if not lead and attentions:
            layers += _attention_layers(f"{name}.attentions.{i}", attentions[i], cross, ch, res)
    ch = layers[-1].channels
    for i, _ in enumerate(getattr(block, "downsamplers", None) or []):
        layers.append(Layer(f"{name}.downsamplers.{i}", DOWN, ch, _half(res)))
    for i, _ in enumerate(getattr(block, "upsamplers", None) or []):
        layers.append(Layer(f"{name}.upsamplers.{i}", UP, ch, up_to or (res[0] * 2, res[1] * 2)))
    return layers


def _saved(name: str, block: Any, layers: list[Layer]) -> list[tuple[str, int, tuple[int, int]]]:
    """What a down block keeps for the skips: each ResNet's output (after its transformer
    block, when it has one), then its downsampler's."""
    pair = "attentions" if getattr(block, "attentions", None) else "resnets"
    resnets = [layer for layer in layers if layer.kind == RESNET]
    saved = [(f"{name}.{pair}.{i}", r.channels, r.resolution) for i, r in enumerate(resnets)]
    return saved + [(lay.name, lay.channels, lay.resolution) for lay in layers if lay.kind == DOWN]


def _block(name: str, block: Any, part: str, level: int, res, layers: list[Layer]) -> Block:
    return Block(name, type(block).__name__, part, level, res, layers[-1].channels, tuple(layers))


def _time_added(unet: Any) -> tuple[str, str] | None:
    """(module, what it adds) that the UNet adds to t's embedding besides t, from its
    config: ("add_embedding", addition_embed_type) or ("class_embedding", class_embed_type);
    None: nothing."""
    kind = unet.config.get("addition_embed_type")
    if kind and getattr(unet, "add_embedding", None) is not None:
        return "add_embedding", kind
    kind = unet.config.get("class_embed_type") or (
        "class labels" if unet.config.get("num_class_embeds") else None
    )
    if getattr(unet, "class_embedding", None) is not None:
        return "class_embedding", str(kind)
    return None


def unet_structure(
    pipe_or_unet: Any, latent_size: int | Sequence[int] | None = None
) -> UnetStructure:
    """The UNet's blocks, layers, skip connections, timestep MLP and text width.

    Read from the module tree and `unet.config` (no forward pass: works on the meta
    device). `latent_size` is the (h, w) or side of the latent the UNet sees (default
    `unet.config.sample_size`); every resolution is computed for it.
    """
    unet = _unet(pipe_or_unet)
    size = _size(unet, latent_size)
    cross = set(cross_attention_layers(unet))
    stem = int(unet.conv_in.out_channels)
    stack = [("conv_in", stem, size)]  # what the down path saves for the skips
    blocks, res = [], size
    for i, block in enumerate(unet.down_blocks):
        layers = _block_layers(f"down_blocks.{i}", block, cross, res, None)
        blocks.append(_block(f"down_blocks.{i}", block, "down", i, res, layers))
        stack += _saved(f"down_blocks.{i}", block, layers)
        res = layers[-1].resolution
    deepest = len(unet.down_blocks) - 1
    if unet.mid_block is not None:
        layers = _block_layers("mid_block", unet.mid_block, cross, res, None)
        blocks.append(_block("mid_block", unet.mid_block, "mid", deepest, res, layers))
    skips = []
    for j, block in enumerate(unet.up_blocks):
        name = f"up_blocks.{j}"
        taken = [stack.pop() for _ in block.resnets]  # (source, channels, resolution)
        res = taken[0][2]
        layers = _block_layers(name, block, cross, res, stack[-1][2] if stack else None)
        skips += [Skip(src, f"{name}.resnets.{k}", ch, r) for k, (src, ch, r) in enumerate(taken)]
        blocks.append(_block(name, block, "up", deepest - j, res, layers))
    te = unet.time_embedding
    return UnetStructure(
        latent_channels=int(unet.config.in_channels),
        out_channels=int(unet.config.out_channels),
        latent_size=size,
        stem_channels=stem,
        blocks=tuple(blocks),
        skips=tuple(skips),
        time_features=int(unet.time_proj.num_channels),
        time_hidden=int(te.linear_1.out_features),
        time_dim=int(te.linear_2.out_features),
        time_added=_time_added(unet),
        text_dim=int(unet.config.cross_attention_dim),
        text_tokens=getattr(getattr(pipe_or_unet, "tokenizer", None), "model_max_length", None),
        only_cross_attention=tuple(
            b.name
            for b in blocks
            if any(x.name.endswith("attn1") and x.kind == CROSS for x in b.layers)
        ),
    )


def sd_skeleton(version: str = "1.5") -> Any:
    """Stable Diffusion 1.5's or 2.1's pipeline (`sdviz.builder.sd_architecture`) built on
    the meta device: every module and config, no weights, no memory (~1 s). Enough for
    `unet_structure`; it cannot be run."""
    from ..builder import sd_architecture

    with torch.device("meta"):
        return sd_architecture(version)


@dataclass(frozen=True)
class TimestepEmbeddings:
    """What the UNet makes of the timestep t: sinusoids, then its MLP's vector."""

    timesteps: np.ndarray  # (T,) the t fed in
    features: np.ndarray  # (T, F) time_proj: sines and cosines of t at F/2 frequencies
    embeddings: np.ndarray  # (T, D) time_embedding: the MLP's output every ResNet reads
    cos_first: bool  # features are [cos | sin] (time_proj.flip_sin_to_cos), else [sin | cos]

    def similarity(self, which: str = "embeddings") -> np.ndarray:
        """(T, T) cosine similarity between the rows of `features` or `embeddings`."""
        if which not in ("features", "embeddings"):
            raise ValueError(f"which must be 'features' or 'embeddings', got {which!r}.")
        x = getattr(self, which)
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        return x @ x.T

    def index(self, t: int) -> int:
        """The row of timestep t in `features` and `embeddings`."""
        hits = np.flatnonzero(self.timesteps == t)
        if not len(hits):
            raise ValueError(
                f"t={t} was not probed; probed timesteps run {self.timesteps[0]}..."
                f"{self.timesteps[-1]} ({len(self.timesteps)} of them): pass it in timesteps= "
                "or pick one of them."
            )
        return int(hits[0])

    def cosine(self, t1: int, t2: int, which: str = "embeddings") -> float:
        """Cosine similarity between the vectors of timesteps t1 and t2 (both probed)."""
        return float(self.similarity(which)[self.index(t1), self.index(t2)])

    def cosines(self, reference: int, ts: Sequence[int], which: str = "embeddings") -> np.ndarray:
        """(len(ts),) cosine similarity of each t in `ts` to the `reference` timestep."""
        rows = self.similarity(which)[self.index(reference)]
        return rows[[self.index(t) for t in ts]]


@torch.no_grad()
def timestep_embeddings(
    pipe_or_unet: Any, timesteps: Sequence[int] | int | None = None
) -> TimestepEmbeddings:
    """Run the UNet's `time_proj` and `time_embedding` (its loaded weights) on timesteps.

    `timesteps`: the t to embed, or how many evenly spaced ones over the training range
    (default: every t of the training range, the pipeline's
    `scheduler.config.num_train_timesteps`, else 1000).
    """
    unet = _unet(pipe_or_unet)
    if next(unet.parameters()).device.type == "meta":
        raise ValueError(
            "This UNet is on the meta device (no weights): its timestep MLP cannot run. "
            "Use a loaded pipeline, e.g. sdviz.load()."
        )
    scheduler = getattr(pipe_or_unet, "scheduler", None)
    n_train = int(scheduler.config.num_train_timesteps) if scheduler is not None else 1000
    if timesteps is None:
        t = np.arange(n_train)
    elif isinstance(timesteps, (int, np.integer)):
        count = int(timesteps)
        if count < 2:
            raise ValueError(f"ask for at least 2 timesteps, got {count}.")
        t = np.linspace(0, n_train - 1, count).round().astype(np.int64)
    else:
        t = np.asarray(timesteps, dtype=np.int64).reshape(-1)
        if not len(t) or t.min() < 0 or t.max() >= n_train:
            raise ValueError(f"timesteps must lie in 0..{n_train - 1}, got {timesteps!r}.")
    param = next(unet.time_embedding.parameters())
    features = unet.time_proj(torch.from_numpy(t).to(param.device))  # (T, F), float32
    embeddings = unet.time_embedding(features.to(param.dtype))  # (T, D)
    return TimestepEmbeddings(
        t,
        features.float().cpu().numpy(),
        embeddings.float().cpu().numpy(),
        bool(unet.time_proj.flip_sin_to_cos),
    )
