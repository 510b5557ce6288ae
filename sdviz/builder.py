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
  sdviz-mini's recipe (`sdviz.training`) are built from;
- `tiny_sdxl_pipeline()`, `tiny_sd3_pipeline()`, `tiny_flux_pipeline()` — tiny random
  pipelines of today's families, the same classes as the real ones: SDXL (Podell et al.
  2023, two CLIP text encoders, size/crop conditioning), SD3 (Esser et al. 2024, "Scaling
  Rectified Flow Transformers": CLIP-L, CLIP-G and T5 into an MMDiT with joint attention,
  flow matching) and Flux (Black Forest Labs 2024: CLIP pooled + T5 into double- and
  single-stream blocks, guidance-distilled). Their T5 tokenizer is a Unigram model
  (Kudo 2018) built in code (`t5_tokenizer`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

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


def plain_vae(
    block_out_channels: tuple[int, ...], latent_channels: int = 4, **config: Any
) -> AutoencoderKL:
    """An `AutoencoderKL` for RGB images and `latent_channels` latent channels (SD 1.x/2.x
    and SDXL: 4; SD3 and Flux: 16) whose levels are SD's plain encoder and decoder blocks,
    one level per entry of `block_out_channels`."""
    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=latent_channels,
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


# --- today's families, tiny -------------------------------------------------------------

# SD3's and Flux's flow-matching schedulers as their published scheduler configs set them
SD3_SCHEDULE = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULE = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,  # the shift grows with the image's token count
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
TINY_RESOLUTION = 64  # pixels: what the tiny families generate at (8x8 latents)


def _ready(pipe):
    """In eval mode, as `from_pretrained` leaves a pipeline (T5 has dropout), quietly."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def t5_tokenizer(texts: tuple[str, ...] = (TINY_WORDS,)) -> T5TokenizerFast:
    """A T5 tokenizer built in code: a SentencePiece-style Unigram model (Kudo 2018) whose
    pieces are the words of `texts` (each one piece, "▁word") and single letters and digits
    (unknown words are spelled), with T5's `<pad>`=0, `</s>`=1, `<unk>`=2 and no sentinels."""
    words = sorted({w for text in texts for w in text.lower().split()})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789") | {c for w in words for c in w})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0) for w in words]  # a known word beats its spelling
    vocab += [(c, -6.0) for c in chars]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _t5_encoder(tokenizer: T5TokenizerFast, **config: Any) -> T5EncoderModel:
    """A T5 v1.1 encoder (gated GELU, as T5-XXL in SD3 and Flux) sized by `config`."""
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            **config,
        )
    )


def _clip(tokenizer: CLIPTokenizer, width: int, projection: bool):
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    config = CLIPTextConfig(
        **text_config(
            tokenizer,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=width,
            hidden_act="gelu",
        )
    )
    return cls(config)


def _latent_vae(latent_channels: int, scaling_factor: float, shift_factor: float | None):
    """SD3's and Flux's VAE kind: 16 latent channels, no quant convs, a shift and a scale."""
    return plain_vae(
        (16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=TINY_RESOLUTION,
        latent_channels=latent_channels,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A randomly initialised tiny SDXL pipeline (`StableDiffusionXLPipeline`), 64 px.

    As SDXL base: two CLIP text encoders (a `CLIPTextModel` 32 wide and a
    `CLIPTextModelWithProjection` 48 wide, whose penultimate hidden states are concatenated
    to 77x80 and whose projected pooled embedding, with the six size/crop `time_ids`,
    enters the UNet through `added_cond_kwargs`); a UNet whose first level has no
    attention and whose second has two transformer layers per block; SDXL's Euler
    scheduler. Deterministic for a given `seed`; its images are noise-like.
    """
    with drawing_from(torch.Generator().manual_seed(seed)):  # the global RNG is untouched
        tokenizer = build_tokenizer([TINY_WORDS], model_max_length=77)
        tokenizer_2 = build_tokenizer([TINY_WORDS], model_max_length=77)
        text_encoder = _clip(tokenizer, 32, projection=False)
        text_encoder_2 = _clip(tokenizer_2, 48, projection=True)
        time_embed = 8  # each of the 6 time_ids is embedded this wide
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(4, 8),
            use_linear_projection=True,
            cross_attention_dim=32 + 48,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed,
            projection_class_embeddings_input_dim=6 * time_embed + 48,
            norm_num_groups=16,
        )
        vae = plain_vae(
            (16, 32, 32, 32),
            layers_per_block=1,
            norm_num_groups=16,
            sample_size=TINY_RESOLUTION,
            scaling_factor=0.13025,  # SDXL's VAE
        )
    schedule = {
        k: v for k, v in SD_SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")
    }
    scheduler = EulerDiscreteScheduler(
        timestep_spacing="leading", interpolation_type="linear", **schedule
    )
    pipe = StableDiffusionXLPipeline(
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _ready(pipe)


def tiny_sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A randomly initialised tiny SD3 pipeline (`StableDiffusion3Pipeline`), 64 px, with CFG.

    As SD3-medium: CLIP-L- and CLIP-G-like encoders (32 and 48 wide, both with projection;
    penultimate hidden states concatenated to 80 and zero-padded to T5's width, pooled
    embeddings concatenated to 80) and a T5 encoder (96 wide) whose tokens follow CLIP's;
    an `SD3Transformer2DModel` (MMDiT, two joint-attention blocks, 2x2 patches over 16
    latent channels); a 16-channel VAE with SD3's shift and scale;
    `FlowMatchEulerDiscreteScheduler` with SD3's shift 3. Guidance as SD3: classifier-free,
    `guidance_scale` > 1 runs an unconditional branch. Deterministic for a given `seed`.
    """
    with drawing_from(torch.Generator().manual_seed(seed)):  # the global RNG is untouched
        tokenizer = build_tokenizer([TINY_WORDS], model_max_length=77)
        tokenizer_2 = build_tokenizer([TINY_WORDS], model_max_length=77)
        tokenizer_3 = t5_tokenizer()
        text_encoder = _clip(tokenizer, 32, projection=True)
        text_encoder_2 = _clip(tokenizer_2, 48, projection=True)
        text_encoder_3 = _t5_encoder(
            tokenizer_3, d_model=96, d_kv=16, d_ff=192, num_layers=2, num_heads=6
        )
        transformer = SD3Transformer2DModel(
            sample_size=TINY_RESOLUTION // 8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=4,
            joint_attention_dim=96,  # T5's width; CLIP's 80 are zero-padded to it
            caption_projection_dim=64,  # = heads x head dim
            pooled_projection_dim=32 + 48,
            pos_embed_max_size=32,  # position embeddings for up to 32x32 patches (512 px)
        )
        vae = _latent_vae(16, scaling_factor=1.5305, shift_factor=0.0609)  # SD3's VAE
    pipe = StableDiffusion3Pipeline(
        transformer,
        FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULE),
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        text_encoder_3,
        tokenizer_3,
    )
    return _ready(pipe)


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True) -> FluxPipeline:
    """A randomly initialised tiny Flux pipeline (`FluxPipeline`); generate at 64 px.

    As FLUX.1-dev: a CLIP text encoder (32 wide) whose pooled embedding is the only CLIP
    input, a T5 encoder (64 wide) whose tokens are the text sequence; a
    `FluxTransformer2DModel` with two double-stream blocks (joint attention) and two
    single-stream blocks (text and image tokens in one sequence), rotary positions,
    16-channel latents packed 2x2 into 64-channel tokens; Flux's VAE shift and scale;
    `FlowMatchEulerDiscreteScheduler` with dynamic shift. `guidance_embeds=True` (dev):
    guidance-distilled, no unconditional branch, the guidance scale enters as an
    embedding; False (schnell-like): no guidance at all.

    FluxPipeline generates at 1024 px unless told: pass
    ``height=TINY_RESOLUTION, width=TINY_RESOLUTION``. Deterministic for a given `seed`.
    """
    with drawing_from(torch.Generator().manual_seed(seed)):  # the global RNG is untouched
        tokenizer = build_tokenizer([TINY_WORDS], model_max_length=77)
        tokenizer_2 = t5_tokenizer()
        text_encoder = _clip(tokenizer, 32, projection=False)
        text_encoder_2 = _t5_encoder(
            tokenizer_2, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4
        )
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16 * 4,  # 2x2 packed latents
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=4,
            joint_attention_dim=64,  # T5's width
            pooled_projection_dim=32,  # CLIP's width
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),  # sums to the head dim
        )
        vae = _latent_vae(16, scaling_factor=0.3611, shift_factor=0.1159)  # Flux's VAE
    pipe = FluxPipeline(
        FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE),
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        transformer,
    )
    return _ready(pipe)
