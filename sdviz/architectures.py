"""The real architectures of SD 1.5, SDXL, SD3-medium and FLUX.1-dev, without their memory.

The article's three parts — text encoder(s), a denoiser working in a VAE's latent space
under a scheduler, the VAE decoder — hold from Stable Diffusion 1.5 (Rombach et al. 2022)
to SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion Models for High-Resolution
Image Synthesis"), SD3 (Esser et al. 2024, "Scaling Rectified Flow Transformers for
High-Resolution Image Synthesis") and Flux (Black Forest Labs 2024); the parts got bigger.
This module writes down each model's published configs (the `config.json` of each
component, transcribed; `ARCHITECTURES`) and instantiates them on torch's `meta` device,
where a module has shapes but no storage, so the facts come from the real diffusers and
transformers classes at no memory cost:

    facts = architecture_facts("sdxl")      # parameters per component, tokens, latents...
    maps = attention_map_shapes("flux-dev")  # (steps, tokens, h, w) of per-word maps
    pipe = architecture_pipeline("sd3-medium", device="cuda")  # random weights, fp16

Defaults that are not in a config (steps, guidance, T5's sequence length) are read from
the pipeline class's own `__call__` signature.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .builder import (
    FLUX_SCHEDULE,
    SD3_SCHEDULE,
    SD_SCHEDULE,
    TINY_WORDS,
    count_parameters,
    t5_tokenizer,
)
from .language import Texts, course_language
from .pipeline import pipeline_default
from .seeding import drawing_from
from .tokenizer import build_tokenizer

# --- the published configs (model repositories' config.json, transcribed) ----------------

# CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14): SD 1.x's, SDXL's first, SD3's and
# Flux's CLIP-L
CLIP_L = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
)
# OpenCLIP ViT-bigG/14's text tower: SDXL's text_encoder_2 and SD3's CLIP-G
CLIP_G = dict(
    vocab_size=49408,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    max_position_embeddings=77,
    projection_dim=1280,
    hidden_act="gelu",
)
# T5 v1.1 XXL's encoder (google/t5-v1_1-xxl): SD3's and Flux's third / second text encoder
T5_XXL = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
)
TEXT_ENCODERS = {"CLIP-L": CLIP_L, "CLIP-G": CLIP_G, "T5-XXL": T5_XXL}  # name -> config

# the KL autoencoder's levels, shared by all four (SD3's and Flux's with 16 latent channels)
_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
)

# SD's training noise schedule, as the PNDM and Euler schedulers of SD 1.5 and SDXL take it
_SD_SCHEDULE = {
    k: v for k, v in SD_SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")
}

Component = tuple[str, str, dict[str, Any]]  # (library, class name, config)


@dataclass(frozen=True)
class Architecture:
    """One published model: its pipeline class and each network's (library, class, config)."""

    name: str  # what a student knows it as
    repository: str  # where the configs are published
    pipeline: str  # the diffusers pipeline class
    components: dict[str, Component] = field(repr=False)
    # the scheduler the model ships with: (class name, its config)
    scheduler: tuple[str, dict[str, Any]] = field(repr=False)


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture(
        "Stable Diffusion 1.5",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "StableDiffusionPipeline",
        {
            "text_encoder": ("transformers", "CLIPTextModel", CLIP_L),
            "unet": (
                "diffusers",
                "UNet2DConditionModel",
                dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
            ),
            "vae": ("diffusers", "AutoencoderKL", dict(_VAE, latent_channels=4, sample_size=512)),
        },
        ("PNDMScheduler", dict(_SD_SCHEDULE, skip_prk_steps=True)),
    ),
    "sdxl": Architecture(
        "SDXL base 1.0",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "StableDiffusionXLPipeline",
        {
            "text_encoder": ("transformers", "CLIPTextModel", CLIP_L),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", CLIP_G),
            "unet": (
                "diffusers",
                "UNet2DConditionModel",
                dict(
                    sample_size=128,
                    block_out_channels=(320, 640, 1280),
                    down_block_types=(
                        "DownBlock2D",
                        "CrossAttnDownBlock2D",
                        "CrossAttnDownBlock2D",
                    ),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10),
                    attention_head_dim=(5, 10, 20),
                    use_linear_projection=True,
                    cross_attention_dim=2048,  # CLIP-L's 768 + CLIP-G's 1280
                    addition_embed_type="text_time",
                    addition_time_embed_dim=256,
                    projection_class_embeddings_input_dim=2816,  # 6 x 256 + 1280 pooled
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKL",
                dict(_VAE, latent_channels=4, sample_size=1024, scaling_factor=0.13025),
            ),
        },
        (
            "EulerDiscreteScheduler",
            dict(_SD_SCHEDULE, timestep_spacing="leading", interpolation_type="linear"),
        ),
    ),
    "sd3-medium": Architecture(
        "Stable Diffusion 3 medium",
        "stabilityai/stable-diffusion-3-medium-diffusers",
        "StableDiffusion3Pipeline",
        {
            "text_encoder": ("transformers", "CLIPTextModelWithProjection", CLIP_L),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", CLIP_G),
            "text_encoder_3": ("transformers", "T5EncoderModel", T5_XXL),
            "transformer": (
                "diffusers",
                "SD3Transformer2DModel",
                dict(
                    sample_size=128,
                    patch_size=2,
                    in_channels=16,
                    out_channels=16,
                    num_layers=24,
                    attention_head_dim=64,
                    num_attention_heads=24,
                    joint_attention_dim=4096,  # T5's width; CLIP's 2048 are zero-padded to it
                    caption_projection_dim=1536,
                    pooled_projection_dim=2048,  # CLIP-L's 768 + CLIP-G's 1280 pooled
                    pos_embed_max_size=192,
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKL",
                dict(
                    _VAE,
                    latent_channels=16,
                    sample_size=1024,
                    scaling_factor=1.5305,
                    shift_factor=0.0609,
                    use_quant_conv=False,
                    use_post_quant_conv=False,
                ),
            ),
        },
        ("FlowMatchEulerDiscreteScheduler", SD3_SCHEDULE),
    ),
    "flux-dev": Architecture(
        "FLUX.1 [dev]",
        "black-forest-labs/FLUX.1-dev",
        "FluxPipeline",
        {
            "text_encoder": ("transformers", "CLIPTextModel", CLIP_L),
            "text_encoder_2": ("transformers", "T5EncoderModel", T5_XXL),
            "transformer": (
                "diffusers",
                "FluxTransformer2DModel",
                dict(
                    patch_size=1,
                    in_channels=64,  # 16 latent channels packed 2x2
                    num_layers=19,
                    num_single_layers=38,
                    attention_head_dim=128,
                    num_attention_heads=24,
                    joint_attention_dim=4096,
                    pooled_projection_dim=768,
                    guidance_embeds=True,
                    axes_dims_rope=(16, 56, 56),
                ),
            ),
            "vae": (
                "diffusers",
                "AutoencoderKL",
                dict(
                    _VAE,
                    latent_channels=16,
                    sample_size=1024,
                    scaling_factor=0.3611,
                    shift_factor=0.1159,
                    use_quant_conv=False,
                    use_post_quant_conv=False,
                ),
            ),
        },
        ("FlowMatchEulerDiscreteScheduler", FLUX_SCHEDULE),
    ),
}


def _architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {name!r}: sdviz knows {', '.join(ARCHITECTURES)} "
            f"({', '.join(a.name for a in ARCHITECTURES.values())})."
        )
    return ARCHITECTURES[name]


def meta_component(name: str, component: str) -> torch.nn.Module:
    """The network `component` of architecture `name`, built on the meta device: real
    classes, real shapes, no weights allocated (and no forward pass possible)."""
    with torch.device("meta"):
        return _instance(_architecture(name), component)


def _instance(arch: Architecture, component: str) -> torch.nn.Module:
    library, class_name, config = arch.components[component]
    cls = getattr(importlib.import_module(library), class_name)
    if library == "transformers":
        return cls(cls.config_class(**config))
    return cls(**config)


# what each pipeline class is built without (SD's safety checker, SDXL's watermark)
_WITHOUT = {
    "StableDiffusionPipeline": dict(
        safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ),
    "StableDiffusionXLPipeline": dict(add_watermarker=False),
}


def architecture_pipeline(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
) -> Any:
    """Architecture `name` as a runnable pipeline with random weights, built on `device`.

    Every network as published; the tokenizers are small ones built in code (the real
    vocabularies cannot be downloaded here), whose ids all fit the real embedding tables.
    For checks that need the real shapes and cost, not the real images (a GPU run of
    SDXL or SD3-medium). Each network is drawn in fp32 on `device` (seeded, the global
    RNG untouched), then cast to `dtype`: the peak is the largest network in fp32 plus
    the rest in `dtype` (SDXL ~12 GB, SD3-medium ~22 GB, Flux-dev ~80 GB at fp16).
    ``device="meta"`` builds it without memory (it cannot run).
    """
    import diffusers

    arch = _architecture(name)
    device = torch.device(device)
    parts: dict[str, Any] = {}
    for component in arch.components:
        with torch.device(device):
            if device.type == "meta":
                module = meta_component(name, component)
            else:
                generator = torch.Generator(device).manual_seed(seed)
                with drawing_from(generator):  # the global RNG is untouched
                    module = _instance(arch, component)
        parts[component] = module.to(dtype=dtype).eval()
    for component, (_, class_name, _) in arch.components.items():
        if component.startswith("text_encoder"):
            tokenizer = "tokenizer" + component.removeprefix("text_encoder")
            parts[tokenizer] = (
                t5_tokenizer()
                if class_name == "T5EncoderModel"
                else build_tokenizer([TINY_WORDS], model_max_length=77)
            )
    scheduler_name, scheduler_config = arch.scheduler
    parts["scheduler"] = getattr(diffusers, scheduler_name)(**scheduler_config)
    pipe = getattr(diffusers, arch.pipeline)(**parts, **_WITHOUT.get(arch.pipeline, {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass(frozen=True)
class TextEncoderFacts:
    component: str  # text_encoder, text_encoder_2, ...
    label: str  # which published encoder: CLIP-L, CLIP-G, T5-XXL
    kind: str  # the class
    parameters: int
    width: int  # the hidden size of its token vectors
    tokens: int  # how many token positions it encodes per prompt (padded)
    role: str  # what the denoiser takes from it


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the trace of the real model would see, from its configs."""

    name: str
    pipeline: str
    parameters: dict[str, int]  # component -> parameter count (tied weights once)
    text_encoders: tuple[TextEncoderFacts, ...]
    text_tokens: int  # the token positions the denoiser attends over
    resolution: int  # native image side in pixels
    latent_shape: tuple[int, int, int]  # (c, h, w) at the native resolution
    denoiser: str  # 'unet' or 'transformer'
    denoiser_grid: tuple[int, int]  # image positions the denoiser's attention sees, (h, w)
    attention_layers: int  # the layers where image positions attend to the text
    attention_heads: int  # summed over those layers
    attention_head_cells: int  # sum over those layers of heads x their grid's h x w
    steps: int  # the pipeline's default number of denoising steps
    guidance_scale: float  # the pipeline's default
    guidance: str  # 'classifier-free' (an unconditional branch) or 'distilled' (embedded)
    scheduler: str  # the scheduler class the model ships with

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())


def _text_facts(arch: Architecture, modules: dict[str, Any]) -> list[TextEncoderFacts]:
    t5_tokens = pipeline_default(arch.pipeline, "max_sequence_length")
    out = []
    for component, (_, class_name, config) in arch.components.items():
        if not component.startswith("text_encoder"):
            continue
        if class_name == "T5EncoderModel":
            tokens, width, role = t5_tokens, config["d_model"], "token vectors"
        else:
            tokens, width = config["max_position_embeddings"], config["hidden_size"]
            role = {
                "StableDiffusionPipeline": "token vectors",
                "StableDiffusionXLPipeline": "token vectors (concatenated)"
                + (" + pooled" if class_name.endswith("Projection") else ""),
                "StableDiffusion3Pipeline": "token vectors (concatenated) + pooled",
                "FluxPipeline": "pooled only",
            }[arch.pipeline]
        out.append(
            TextEncoderFacts(
                component,
                next(k for k, v in TEXT_ENCODERS.items() if v == config),
                class_name,
                count_parameters(modules[component]),
                width,
                tokens,
                role,
            )
        )
    return out


def _text_attention(denoiser: torch.nn.Module, kind: str) -> list[tuple[torch.nn.Module, int]]:
    """(attention module, its grid's downsampling from the denoiser's grid) for each layer
    where image positions attend to the text: a UNet's cross-attention (`attn2`, and
    `attn1` in `only_cross_attention` blocks), at its level's resolution; every
    joint-attention block of SD3 and Flux and Flux's single-stream blocks (text and image
    tokens in one sequence), all at the patch grid."""
    if kind == "transformer":
        blocks = [*denoiser.transformer_blocks, *getattr(denoiser, "single_transformer_blocks", ())]
        return [(block.attn, 1) for block in blocks]
    deepest = len(denoiser.config["block_out_channels"]) - 1
    out = []
    for name, module in denoiser.named_modules():
        cross = name.endswith(".attn2") or (
            name.endswith(".attn1") and getattr(module, "only_cross_attention", False)
        )
        if not cross:
            continue
        where, _, rest = name.partition(".")
        index = int(rest.split(".")[0]) if where != "mid_block" else deepest
        level = deepest - index if where == "up_blocks" else index  # the mid block: deepest
        out.append((module, 2**level))
    return out


@functools.cache
def architecture_facts(name: str) -> ArchitectureFacts:
    """The facts of architecture `name` ('sd15', 'sdxl', 'sd3-medium', 'flux-dev'),
    measured on its networks built on the meta device (a few seconds, no weights)."""
    arch = _architecture(name)
    modules = {c: meta_component(name, c) for c in arch.components}
    kind = "unet" if "unet" in modules else "transformer"
    vae = arch.components["vae"][2]
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    resolution = vae["sample_size"]
    side = resolution // factor
    latent = (vae["latent_channels"], side, side)
    config = modules[kind].config
    # a transformer sees patches: SD3 cuts p x p patches; Flux packs 2x2 latents into channels
    packed = int(math.isqrt(config["in_channels"] // vae["latent_channels"]))
    patch = config.get("patch_size", 1) if kind == "transformer" else 1
    grid = side // (patch * packed)
    text = _text_facts(arch, modules)
    if arch.pipeline == "StableDiffusion3Pipeline":  # CLIP's tokens, then T5's, one sequence
        text_tokens = text[0].tokens + text[-1].tokens
    elif arch.pipeline == "FluxPipeline":  # T5's tokens only (CLIP gives its pooled vector)
        text_tokens = text[-1].tokens
    else:  # SD, SDXL: one 77-token sequence (SDXL: two encoders' features side by side)
        text_tokens = text[0].tokens
    layers = _text_attention(modules[kind], kind)
    distilled = bool(config.get("guidance_embeds", False))
    return ArchitectureFacts(
        name=arch.name,
        pipeline=arch.pipeline,
        parameters={c: count_parameters(m) for c, m in modules.items()},
        text_encoders=tuple(text),
        text_tokens=text_tokens,
        resolution=resolution,
        latent_shape=latent,
        denoiser=kind,
        denoiser_grid=(grid, grid),
        attention_layers=len(layers),
        attention_heads=sum(m.heads for m, _ in layers),
        attention_head_cells=sum(m.heads * (grid // down) ** 2 for m, down in layers),
        steps=pipeline_default(arch.pipeline, "num_inference_steps"),
        guidance_scale=pipeline_default(arch.pipeline, "guidance_scale"),
        guidance="distilled" if distilled else "classifier-free",
        scheduler=arch.scheduler[0],
    )


@dataclass(frozen=True)
class MapShapes:
    """The size of per-step per-word attention maps at native resolution, default steps."""

    name: str
    steps: int  # S
    tokens: int  # L: text token positions the maps are over
    h: int  # the map grid: latent cells (UNet) or patches / packed tokens (transformer)
    w: int
    layers: int  # attention layers averaged into the maps
    heads: int  # attention heads over those layers
    head_cells: int  # sum over those layers of heads x h_l x w_l (each layer's own grid)

    def maps_bytes(self, bytes_per_value: int = 4) -> int:
        """(S, L, h, w): one map per step and word, averaged over heads and layers."""
        return self.steps * self.tokens * self.h * self.w * bytes_per_value

    def every_head_bytes(self, bytes_per_value: int = 4) -> int:
        """Keeping every head of every layer instead, each at its own grid: for each layer
        l, (S, heads_l, L, h_l, w_l), summed over layers."""
        return self.steps * self.tokens * self.head_cells * bytes_per_value


def attention_map_shapes(name: str) -> MapShapes:
    """(steps, text tokens, grid h x w), layers and heads of architecture `name`'s per-word
    attention maps at its native resolution and the pipeline's default steps."""
    f = architecture_facts(name)
    return MapShapes(
        f.name,
        f.steps,
        f.text_tokens,
        *f.denoiser_grid,
        f.attention_layers,
        f.attention_heads,
        f.attention_head_cells,
    )


# comparison's headers and words in each course language (`sdviz.language`)
T = Texts(
    __name__,
    {
        "model": ("model", "模型"),
        "text_encoders": ("text encoders", "文本编码器"),
        "text_params": ("text encoders (B params)", "文本编码器（参数，十亿）"),
        "text_tokens": ("text tokens L (the denoiser reads)", "文本标记数 L（去噪网络读取）"),
        "denoiser": ("denoiser", "去噪网络"),
        "denoiser_params": ("denoiser (B params)", "去噪网络（参数，十亿）"),
        "vae_params": ("VAE (B params)", "VAE（参数，十亿）"),
        "image": ("image (px)", "图像（像素）"),
        "latent": ("latent (c, h, w)", "潜在表示（c, h, w）"),
        "grid": ("attention grid (h, w)", "注意力网格（h, w）"),
        "layers": ("text-attention layers", "文本注意力层数"),
        "scheduler": ("scheduler", "调度器"),
        "steps": ("default steps", "默认步数"),
        "guidance": ("guidance", "引导方式"),
        "classifier-free": ("classifier-free {g}", "无分类器引导 {g}"),
        "distilled": ("distilled {g}", "引导蒸馏 {g}"),
    },
)


def comparison(
    names: tuple[str, ...] = tuple(ARCHITECTURES), lang: str | None = None
) -> dict[str, list[Any]]:
    """The architectures side by side, a column per fact (header: what it is, its unit),
    ready for `sdviz.course.table`: what grew from SD 1.5 to SDXL, SD3 and Flux. Headers
    in `lang` (default: the course language)."""
    lang = course_language(lang)
    rows = [architecture_facts(n) for n in names]
    billions = 1e9
    return {
        T("model", lang): [f.name for f in rows],
        T("text_encoders", lang): [" + ".join(t.label for t in f.text_encoders) for f in rows],
        T("text_params", lang): [
            sum(t.parameters for t in f.text_encoders) / billions for f in rows
        ],
        T("text_tokens", lang): [f.text_tokens for f in rows],
        T("denoiser", lang): [f.denoiser for f in rows],
        T("denoiser_params", lang): [f.parameters[f.denoiser] / billions for f in rows],
        T("vae_params", lang): [f.parameters["vae"] / billions for f in rows],
        T("image", lang): [f.resolution for f in rows],
        T("latent", lang): [f.latent_shape for f in rows],
        T("grid", lang): [f.denoiser_grid for f in rows],
        T("layers", lang): [f.attention_layers for f in rows],
        T("scheduler", lang): [f.scheduler for f in rows],
        T("steps", lang): [f.steps for f in rows],
        T("guidance", lang): [T(f.guidance, lang, g=f"{f.guidance_scale:g}") for f in rows],
    }
