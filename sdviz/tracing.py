"""Trace a Stable Diffusion generation: `with sdviz.trace(pipe) as tr: pipe(...)`.

Stable Diffusion (Rombach et al. 2022) turns a prompt into CLIP token embeddings,
denoises random latents x_T with a UNet guided by those embeddings under a scheduler
(DDPM, Ho et al. 2020; DDIM, Song et al. 2021; classifier-free guidance, Ho &
Salimans 2022), and decodes the final latents with a VAE. A trace records every
stage of each `pipe(...)` call made inside it into a `Run` (sdviz.run), using public
extension points only: forward (pre-)hooks with removable handles on the text
encoder, UNet and VAE, and attention processors on the cross-attention layers
(sdviz.attention). Everything is put back on exit, also when the generation raises.

A `Run` maps names to CPU float32 tensors and plain values (S = UNet calls, L =
tokenizer.model_max_length, (c, h, w) the latent, (H, W) the image):
    prompt, negative_prompt, guidance_scale, do_classifier_free_guidance,
    guidance_rescale, num_inference_steps, height, width, seed
    text.input_ids (L,), text.tokens, text.n_tokens, text.truncated (+ text.negative_*)
    text_encoder.prompt_embeds (L, d), text_encoder.negative_prompt_embeds (L, d)
    scheduler.name, scheduler.config, scheduler.timesteps, scheduler.alphas_cumprod,
    scheduler.sigmas (sigma schedulers); step.t, step.alpha_bar, step.sigma (S,)
    unet.latents (S+1, c, h, w): x_t in, then the final latents; unet.noise_pred_uncond,
    unet.noise_pred_text, unet.noise_pred (guided), unet.pred_original_sample (S, c, h, w),
    all as epsilon / x0-hat whatever the prediction type; unet.prediction_type
    attention.maps (S, L, h, w), attention.layers, attention.n_layers, and per selected
    layer "<module path>" (S, L, h_l, w_l) or (S, heads, L, h_l, w_l)
    vae.image (3, H, W) in [0, 1], vae.scaling_factor, vae_scale_factor,
    vae.preview_coefficients (c+1, 3)

Modules: sdviz.recorder (the hooks and the step math), sdviz.attention (cross-
attention capture), sdviz.assemble (hook records -> `Run`), sdviz.run (`Run`, `Trace`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .recorder import TraceBudgetError, Tracer
from .run import Run, Trace
from .text import check_prompt, truncated_tokens

__all__ = ["trace", "generate", "Trace", "Run", "TraceBudgetError"]


def trace(
    pipe,
    *,
    attention: str | None = "aggregate",
    attention_layers: str | Sequence[str] | None = None,
    attention_heads: bool = False,
    budget_mb: float = 1024.0,
) -> Tracer:
    """Record every stage of the `pipe(...)` calls made inside a with-block.

    `attention="aggregate"` keeps per-step per-token cross-attention maps averaged
    over heads and layers; `attention_layers` (substring, glob or list of them over
    diffusers module paths such as "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    keeps those layers' own maps too, per head with `attention_heads=True` (every
    layer's heads when no filter is given). A capture whose estimated memory exceeds
    `budget_mb` (MiB) raises `TraceBudgetError` at the first UNet call, before any
    denoising. Each `pipe(...)` call becomes one `Run` of the returned `Trace`.

    Example:
        >>> with sdviz.trace(pipe, attention_layers="up_blocks.1") as tr:
        ...     pipe("a red circle", num_inference_steps=20)
        >>> tr.last["attention.maps"].shape      # (steps, tokens, h, w)

    Recorded: the first image of a batch (`num_images_per_prompt` > 1 or a list of
    prompts: item 0). Without a VAE decode (`output_type="latent"`, or a tiled decode)
    "unet.latents" has S entries and there is no "vae.image". The UNet called outside a
    pipeline inside the block (a probe) is recorded as a run of its own.
    """
    return Tracer(pipe, attention, attention_layers, attention_heads, budget_mb)


def _check_size(name: str, value: Any, factor: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int (pixels), got {value!r}.")
    if value % factor:
        low, high = value // factor * factor, (value // factor + 1) * factor
        hint = f"{low} or {high}" if low else f"{high}"
        raise ValueError(
            f"{name}={value} is not divisible by the VAE's downsampling factor {factor} "
            f"(the latent is {name}/{factor} pixels); use {hint}."
        )


def generate(
    pipe,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int | None = 0,
    height: int | None = None,
    width: int | None = None,
    attention: str | None = "aggregate",
    attention_layers: str | Sequence[str] | None = None,
    attention_heads: bool = False,
    budget_mb: float = 1024.0,
) -> Run:
    """Generate one image with `pipe` and return its traced `Run` (inputs checked first)."""
    check_prompt(prompt)
    if negative_prompt is not None:
        check_prompt(negative_prompt, "negative_prompt")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (denoising steps), got {steps!r}.")
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, int | float)
        or not guidance_scale >= 0
    ):
        raise ValueError(
            f"guidance_scale must be a number >= 0 (1 = no guidance; SD uses 7.5), "
            f"got {guidance_scale!r}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None (random), got {seed!r}.")
    factor = int(pipe.vae_scale_factor)
    default = int(pipe.unet.config.sample_size) * factor
    height = default if height is None else height
    width = default if width is None else width
    _check_size("height", height, factor)
    _check_size("width", width, factor)
    tracer = trace(
        pipe,
        attention=attention,
        attention_layers=attention_layers,
        attention_heads=attention_heads,
        budget_mb=budget_mb,
    )
    truncated = truncated_tokens(pipe.tokenizer, prompt)
    if truncated:
        warnings.warn(
            f"the prompt is longer than the text encoder's {pipe.tokenizer.model_max_length} "
            f"tokens; these were cut off and do not affect the image: {truncated}",
            UserWarning,
            stacklevel=2,
        )
    tracer._overrides = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "text.truncated": truncated,
    }
    generator = None if seed is None else torch.Generator(pipe.device).manual_seed(seed)
    with tracer as tr:
        pipe(
            prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=steps,
            guidance_scale=float(guidance_scale),
            height=height,
            width=width,
            generator=generator,
            output_type="pt",
        )
    return tr.last
