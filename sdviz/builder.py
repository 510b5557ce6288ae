"""Build Stable Diffusion pipelines in code, with nothing downloaded.

Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with
Latent Diffusion Models") is three networks around a scheduler: a CLIP text
encoder, a UNet that predicts noise in a VAE's latent space, and the VAE decoder.
This module assembles a real `diffusers.StableDiffusionPipeline` from those
classes with random weights:

- `tiny_pipeline()` — a few-million-parameter pipeline for tests (and the default
  model until a trained one is shipped);
- `sd_architecture("1.5")` / `sd_architecture("2.1")` — the published SD 1.5 and
  SD 2.1 configurations (860M-parameter UNet), random weights, for shape checks;
- `plain_vae`, `text_config` — the VAE and the text tower's settings that these and
  sdviz-mini's recipe (`sdviz.training`) are built from.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .seeding import drawing_from
from .tokenizer import build_tokenizer

# Stable Diffusion's training noise schedule; every SD 1.x/2.x scheduler config uses it.
SD_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
)

TINY_WORDS = (
    "a an the red green blue yellow purple orange white black circle square "
    "triangle star small big large left right top bottom of to and on with photo "
    "painting of cat dog astronaut horse riding"
)


def count_parameters(module: Any) -> int:
    """Number of parameters of a torch module (0 for None): the one parameter count."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def text_config(tokenizer: CLIPTokenizer, **config: Any) -> dict[str, Any]:
    """A CLIP text tower's settings that come from `tokenizer` (vocabulary size unless given,
    positions, special token ids), with the rest of its `CLIPTextConfig` from `config`."""
    return dict(
        vocab_size=config.pop("vocab_size", len(tokenizer)),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )


def _text_encoder(tokenizer: CLIPTokenizer, **config: Any) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**text_config(tokenizer, **config)))


def plain_vae(block_out_channels: tuple[int, ...], **config: Any) -> AutoencoderKL:
    """An `AutoencoderKL` for RGB images and 4 latent channels whose levels are SD's plain
    encoder and decoder blocks, one level per entry of `block_out_channels`."""
    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        **config,
    )


def assemble(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler=None,
) -> StableDiffusionPipeline:
    """Put the three networks and a scheduler together as a `StableDiffusionPipeline`."""
    if scheduler is None:
        scheduler = DDIMScheduler(
            prediction_type=unet.config.get("_sdviz_prediction_type", "epsilon"), **SD_SCHEDULE
        )
    pipe = StableDiffusionPipeline(
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(
    seed: int = 0, prediction_type: str = "epsilon", model_max_length: int = 77
) -> StableDiffusionPipeline:
    """A randomly initialised ~3M-parameter Stable Diffusion pipeline (VAE factor 8).

    The same classes as SD with small configs: a 2-layer 64-wide CLIP text encoder,
    a two-level UNet with cross-attention, a 4-level `AutoencoderKL`. Deterministic
    for a given `seed`. Its images are noise-like: it has never been trained.
    """
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}."
        )
    with drawing_from(torch.Generator().manual_seed(seed)):  # the global RNG is untouched
        return _tiny(prediction_type, model_max_length)


def _tiny(prediction_type: str, model_max_length: int) -> StableDiffusionPipeline:
    tokenizer = build_tokenizer([TINY_WORDS], model_max_length=model_max_length)
    text_encoder = _text_encoder(
        tokenizer,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=64,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = plain_vae((16, 32, 32, 32), layers_per_block=1, norm_num_groups=16, sample_size=64)
    scheduler = DDIMScheduler(prediction_type=prediction_type, **SD_SCHEDULE)
    return assemble(tokenizer, text_encoder, unet, vae, scheduler)


def sd_architecture(
    version: str = "1.5", dtype: torch.dtype = torch.float32
) -> StableDiffusionPipeline:
    """The published Stable Diffusion 1.5 or 2.1 architecture with random weights.

    Shapes and layer names are those of the real checkpoints (77x768 or 77x1024
    text embeddings, an 860M-parameter UNet, (4,64,64) or (4,96,96) latents); the
    tokenizer is a small locally built one, since CLIP's vocabulary cannot be
    downloaded here. Needs ~4.4 GiB of RAM in fp32.
    """
    if version not in ("1.5", "2.1"):
        raise ValueError(f"version must be '1.5' or '2.1', got {version!r}.")
    with drawing_from(torch.Generator().manual_seed(0)):  # the global RNG is untouched
        pipe = _sd(version == "2.1")
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def _sd(sd2: bool) -> StableDiffusionPipeline:
    tokenizer = build_tokenizer([TINY_WORDS], model_max_length=77)
    text_encoder = _text_encoder(
        tokenizer,
        vocab_size=49408,
        hidden_size=1024 if sd2 else 768,
        intermediate_size=4096 if sd2 else 3072,
        num_hidden_layers=23 if sd2 else 12,
        num_attention_heads=16 if sd2 else 12,
        projection_dim=512 if sd2 else 768,
        hidden_act="gelu" if sd2 else "quick_gelu",
    )
    unet = UNet2DConditionModel(
        sample_size=96 if sd2 else 64,
        cross_attention_dim=1024 if sd2 else 768,
        attention_head_dim=(5, 10, 20, 20) if sd2 else 8,
        use_linear_projection=sd2,
    )
    vae = plain_vae(
        (128, 256, 512, 512),
        layers_per_block=2,
        sample_size=768 if sd2 else 512,
        scaling_factor=0.18215,
    )
    scheduler_cls = DDIMScheduler if sd2 else PNDMScheduler
    kwargs = dict(SD_SCHEDULE)
    if sd2:
        kwargs["prediction_type"] = "v_prediction"
    else:
        kwargs.pop("clip_sample")
        kwargs["skip_prk_steps"] = True
    return assemble(tokenizer, text_encoder, unet, vae, scheduler_cls(**kwargs))
