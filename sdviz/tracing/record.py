"""Record → Run: what the hooks of one generation saw, made into a `Run` (CPU float32).

`RunState` is filled by the hooks (sdviz.tracing.hooks) while a pipeline call runs;
`build_run` then matches the text-encoder calls to the embeddings the denoiser actually
received (cond and, under classifier-free guidance, uncond), reads token strings from
the pipeline's tokenizer, stacks the per-step tensors once, moves them to the CPU, fits
the linear latent->RGB preview, and names every value by the key table
(sdviz.tracing.keys), which it checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .keys import LAYER_PREFIX, SD3, XL, check_keys
from .run import Run, fit_preview

# a pipeline's text encoders and their tokenizers, numbered as diffusers numbers them
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")


@dataclass
class Schedule:
    """What the first denoiser call of a generation established (tensors: its device)."""

    cfg: bool  # classifier-free guidance ran: the batch is [uncond, text]
    n_steps: int  # denoiser calls this generation will make
    offset: int  # index of the first visited timestep in `timesteps` (img2img starts late)
    timesteps: torch.Tensor  # (T,) the scheduler's whole schedule, CPU
    sigmas: torch.Tensor | None  # (T+1,) for sigma schedulers, CPU; else None
    abar: torch.Tensor | None  # (T,) alpha-bar of each timestep, CPU; None for flow matching
    abar_device: torch.Tensor  # alpha-bar (flow: sigma) per timestep on the pipeline's device
    guidance: float  # g, applied only under cfg
    rescale: float  # guidance rescale (Lin et al. 2024); 0 = off
    prediction_type: str  # epsilon, v_prediction, ..., flow (velocity)
    flow: bool = False  # a flow-matching schedule (SD3, Flux)
    grid: tuple[int, int] = (0, 0)  # where attention maps live: latent (UNet) or patch grid
    embedded_guidance: float | None = None  # Flux dev's guidance embedding's scale
    text_ptr: int = 0  # identity of the text tensor of the first call (Flux true CFG check)
    latent_shape: tuple[int, ...] = ()  # (c, h, w) of the latents (Flux's unpacked)
    true_cfg: bool = False  # Flux's true CFG: a separate negative-prompt call per step
    embeds: torch.Tensor | None = None  # (L, d) the text branch's encoder_hidden_states
    negative_embeds: torch.Tensor | None = None  # (L, d) the unconditional branch's
    pooled: torch.Tensor | None = None  # (d_pool,) pooled text embedding (SDXL, SD3, Flux)
    negative_pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None  # (6,) SDXL's size/crop conditioning


@dataclass
class RunState:
    """What one pipe(...) call has produced so far (tensors on the pipeline's device)."""

    # encoder name -> (input ids, output 0) per call, in call order (prompt, then negative)
    text_calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    meta: Schedule | None = None  # set by the first denoiser call
    steps: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per denoiser call
    maps: list[torch.Tensor] = field(default_factory=list)  # (L, h, w) per step
    detail: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per step
    layers: list[str] = field(default_factory=list)
    aggregate_layers: list[str] = field(default_factory=list)  # the ones the maps average
    extras: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # joint attention
    final: torch.Tensor | None = None  # (c, h, w) latents the VAE decoded
    image: torch.Tensor | None = None  # (3, H, W) in [0, 1]

    @property
    def expected(self) -> int:
        return 0 if self.meta is None else self.meta.n_steps


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


def build_run(
    pipe: Any,
    run: RunState,
    known: dict[str, Any] | None = None,
    family: str = "stable-diffusion",
) -> Run:
    """The `Run` of one recorded generation; `known` (inputs `generate` knows) wins."""
    if run.meta.true_cfg:  # an unconditional branch ran, in calls of its own
        run.meta.cfg = True
    d: dict[str, Any] = {}
    d.update(_call(pipe, run, family))
    d.update(_text(pipe, run, family))
    d.update(_embeddings(pipe, run, family))
    d.update(_schedule(pipe, run))
    d.update(_denoiser(pipe, run))
    d.update(_attention(pipe, run, family))
    d.update(_vae(pipe, run, d["denoiser.latents"]))
    d.update(known or {})
    check_keys(d)
    return Run(d)


def _call(pipe: Any, run: RunState, family: str) -> dict[str, Any]:
    meta, sched = run.meta, pipe.scheduler
    lat = run.meta.latent_shape
    factor = int(pipe.vae_scale_factor)
    size = run.image.shape[-2:] if run.image is not None else (lat[-2] * factor, lat[-1] * factor)
    d = {
        "pipeline.family": family,
        "pipeline.class_name": type(pipe).__name__,
        "pipeline.guidance_scale": meta.guidance,
        "pipeline.do_classifier_free_guidance": meta.cfg,
        "pipeline.guidance_rescale": meta.rescale,
        "pipeline.num_inference_steps": int(
            getattr(sched, "num_inference_steps", None) or len(run.steps)
        ),
        "pipeline.height": int(size[0]),
        "pipeline.width": int(size[1]),
        "pipeline.seed": None,
    }
    if meta.embedded_guidance is not None:
        d["denoiser.guidance"] = meta.embedded_guidance
    return d


def _text(pipe: Any, run: RunState, family: str) -> dict[str, Any]:
    tok = getattr(pipe, "tokenizer", None)
    if family == "stable-diffusion":
        cond_ids, uncond_ids = _pick_ids(run)
    else:  # diffusers encodes the prompt, then the negative prompt, with every encoder
        calls = run.text_calls.get("text_encoder", [])
        cond_ids = calls[0][0] if calls else None
        uncond_ids = calls[1][0] if run.meta.cfg and len(calls) > 1 else None
    d: dict[str, Any] = {"pipeline.prompt": _decode(tok, cond_ids)}
    d["pipeline.negative_prompt"] = (_decode(tok, uncond_ids) if run.meta.cfg else "") or None
    if cond_ids is not None:
        d.update(_ids(tok, cond_ids, uncond_ids, "tokenizer."))
        # A raw trace sees only the ids after truncation: when the prompt filled every
        # position it may have been cut, and which words were cut is unknown here.
        filled = d["tokenizer.n_tokens"] >= len(cond_ids)
        d["tokenizer.truncated"] = None if filled else []
    for encoder, tokenizer in zip(TEXT_ENCODERS[1:], TOKENIZERS[1:], strict=True):
        calls = run.text_calls.get(encoder, [])
        if calls:
            negative = calls[1][0] if run.meta.cfg and len(calls) > 1 else None
            d.update(_ids(getattr(pipe, tokenizer), calls[0][0], negative, tokenizer + "."))
    return d


def _ids(tok: Any, ids: torch.Tensor, negative: torch.Tensor | None, prefix: str) -> dict:
    d = {prefix + "input_ids": ids.cpu().long(), **_tokens(tok, ids, prefix)}
    if negative is not None:
        d[prefix + "negative_input_ids"] = negative.cpu().long()
        d.update(_tokens(tok, negative, prefix + "negative_"))
    return d


def _embeddings(pipe: Any, run: RunState, family: str) -> dict[str, Any]:
    """What the denoiser read: the text sequence, split back into each encoder's part."""
    meta = run.meta
    d: dict[str, Any] = {}
    for prefix, embeds in (("", meta.embeds), ("negative_", meta.negative_embeds)):
        if embeds is None:
            continue
        embeds = _cpu(embeds)  # (L_all, d_all)
        parts = _encoder_parts(pipe, family, embeds)
        if family in (XL, SD3):
            d[f"pipeline.{prefix}prompt_embeds"] = embeds
        for encoder, part in parts.items():
            d[f"{encoder}.{prefix}prompt_embeds"] = part
    if meta.pooled is not None:
        d["pipeline.pooled_prompt_embeds"] = _cpu(meta.pooled)
    if meta.negative_pooled is not None:
        d["pipeline.negative_pooled_prompt_embeds"] = _cpu(meta.negative_pooled)
    if meta.time_ids is not None:
        d["pipeline.add_time_ids"] = _cpu(meta.time_ids)
    return d


def _width(pipe: Any, encoder: str) -> int:
    config = getattr(pipe, encoder).config
    return int(getattr(config, "hidden_size", None) or config.d_model)


def _encoder_parts(pipe: Any, family: str, embeds: torch.Tensor) -> dict[str, torch.Tensor]:
    """encoder name -> its (L, d) slice of the sequence the denoiser read."""
    if family == "stable-diffusion":
        return {"text_encoder": embeds}
    if family == "flux":  # CLIP gives only the pooled vector; the sequence is T5's
        return {"text_encoder_2": embeds}
    d1, d2 = _width(pipe, "text_encoder"), _width(pipe, "text_encoder_2")
    if family == XL:  # both CLIPs' tokens, joined along channels
        return {"text_encoder": embeds[:, :d1], "text_encoder_2": embeds[:, d1 : d1 + d2]}
    n_clip = int(pipe.tokenizer.model_max_length)  # SD3: CLIP tokens first, then T5's
    parts = {"text_encoder": embeds[:n_clip, :d1], "text_encoder_2": embeds[:n_clip, d1 : d1 + d2]}
    if getattr(pipe, "text_encoder_3", None) is not None:
        parts["text_encoder_3"] = embeds[n_clip:, : _width(pipe, "text_encoder_3")]
    return parts


def text_sequence(pipe: Any, family: str, n_tokens: int) -> dict[str, tuple[int, int]]:
    """Which rows of the denoiser's text sequence (n_tokens long) come from which tokenizer."""
    if family == "stable-diffusion":
        return {"tokenizer": (0, n_tokens)}
    if family == XL:
        return {"tokenizer": (0, n_tokens), "tokenizer_2": (0, n_tokens)}
    if family == "flux":
        return {"tokenizer_2": (0, n_tokens)}
    n_clip = int(pipe.tokenizer.model_max_length)
    return {"tokenizer": (0, n_clip), "tokenizer_2": (0, n_clip), "tokenizer_3": (n_clip, n_tokens)}


def _schedule(pipe: Any, run: RunState) -> dict[str, Any]:
    meta, sched = run.meta, pipe.scheduler
    d: dict[str, Any] = {
        "scheduler.name": type(sched).__name__,
        "scheduler.config": dict(sched.config),
        "scheduler.timesteps": meta.timesteps,
    }
    if getattr(sched, "alphas_cumprod", None) is not None:
        d["scheduler.alphas_cumprod"] = _cpu(sched.alphas_cumprod)
    if meta.sigmas is not None:
        d["scheduler.sigmas"] = meta.sigmas
    steps = slice(meta.offset, meta.offset + len(run.steps))
    d["scheduler.step_timestep"] = meta.timesteps[steps].clone()
    if meta.flow:
        d["scheduler.step_sigma"] = meta.sigmas[steps].clone()
        d["scheduler.shift"] = _shift(sched, meta.grid)
    else:
        abar = meta.abar[steps].clone()  # (S,)
        d["scheduler.step_alpha_bar"] = abar
        d["scheduler.step_sigma"] = ((1 - abar) / abar).sqrt()
    return d


def _shift(sched: Any, grid: tuple[int, int]) -> float:
    """The time shift s the flow-matching schedule used (Flux: dynamic, from the token count)."""
    config = sched.config
    if not config.get("use_dynamic_shifting", False):
        return float(sched.shift)
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    mu = calculate_shift(
        grid[0] * grid[1],  # the pipeline's image_seq_len: one token per patch
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    return math.exp(mu) if config.get("time_shift_type", "exponential") == "exponential" else mu


def unpack(packed: torch.Tensor, latent_shape: Sequence[int]) -> torch.Tensor:
    """Flux's 2x2-packed tokens (n, h/2 * w/2, c*4) -> latents (n, c, h, w)."""
    c, h, w = latent_shape
    x = packed.reshape(packed.shape[0], h // 2, w // 2, c, 2, 2)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(packed.shape[0], c, h, w)


def _denoiser(pipe: Any, run: RunState) -> dict[str, Any]:
    shape = run.meta.latent_shape

    def stack(key: str) -> torch.Tensor:  # (S, c, h, w)
        x = _cpu(torch.stack([s[key] for s in run.steps]))
        return x if x.shape[1:] == shape else unpack(x, shape)

    final = [_cpu(run.final)[None]] if run.final is not None else []
    d = {
        "denoiser.name": "unet" if getattr(pipe, "unet", None) is not None else "transformer",
        "denoiser.prediction_type": run.meta.prediction_type,
        "denoiser.latents": torch.cat([stack("x"), *final]),  # (S+1, c, h, w)
        "denoiser.pred_original_sample": stack("x0"),
    }
    if run.meta.flow:
        if run.meta.cfg:
            d["denoiser.velocity_uncond"] = stack("uncond")
        d["denoiser.velocity_text"] = stack("text")
        d["denoiser.velocity"] = stack("eps")
        if run.meta.true_cfg:
            d.update(_true_cfg(run, d, stack("x")))
    else:
        if run.meta.cfg:  # without guidance no unconditional branch ran
            d["denoiser.noise_pred_uncond"] = stack("uncond")
        d["denoiser.noise_pred_text"] = stack("text")
        d["denoiser.noise_pred"] = stack("eps")
    return d


def _true_cfg(run: RunState, d: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    """Flux's true CFG: v = v_uncond + s (v_text - v_uncond) with the pipeline's
    true_cfg_scale s, which FluxPipeline does not keep: solved (least squares over the
    steps) from the scheduler's own Euler updates x_next - x = (sigma_next - sigma) v."""
    u, c = d["denoiser.velocity_uncond"], d["denoiser.velocity_text"]  # (S, c, h, w)
    steps = slice(run.meta.offset, run.meta.offset + len(x) + 1)
    sigma = run.meta.sigmas[steps]  # (S+1,)
    after = torch.cat([x[1:], _cpu(run.final)[None]]) if run.final is not None else x[1:]
    n = len(after)
    moved = (after - x[:n]) / (sigma[1 : n + 1] - sigma[:n])[:, None, None, None]
    a, b = c[:n] - u[:n], moved - u[:n]
    scale = float((a * b).sum() / (a * a).sum()) if n else float("nan")
    v = u + scale * (c - u)
    return {
        "pipeline.true_cfg_scale": scale,
        "denoiser.velocity": v,
        "denoiser.pred_original_sample": x - sigma[:-1, None, None, None] * v,
    }


def _attention(pipe: Any, run: RunState, family: str) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if run.maps:
        maps = _cpu(torch.stack(run.maps))  # (S, L, h_a, w_a)
        d["attention.maps"] = maps
        d["attention.text_sequence"] = text_sequence(pipe, family, maps.shape[1])
        d["attention.layers"] = list(run.layers)
        d["attention.n_layers"] = len(run.layers)
        d["attention.aggregate_layers"] = list(run.aggregate_layers or run.layers)
    names = {"text_share": "attention.text_share", "image_to_text": "attention.image_to_text_maps"}
    for name, maps in run.extras.items():
        d[names[name]] = _cpu(torch.stack(maps))
    for name, maps in run.detail.items():
        d[LAYER_PREFIX + name] = _cpu(torch.stack(maps))
    return d


def _vae(pipe: Any, run: RunState, latents: torch.Tensor) -> dict[str, Any]:
    config = pipe.vae.config
    d: dict[str, Any] = {
        "vae.scaling_factor": float(config.scaling_factor),
        "vae.downsampling_factor": int(pipe.vae_scale_factor),
    }
    if run.meta.flow:
        d["vae.shift_factor"] = float(getattr(config, "shift_factor", None) or 0.0)
    if run.image is not None:
        d["vae.image"] = _cpu(run.image)
        coef = fit_preview(latents[-1], d["vae.image"])
        if coef is not None:
            d["vae.preview_coefficients"] = coef
    return d


def _pick_ids(run: RunState) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which text-encoder call made the prompt and which the negative prompt."""
    calls = run.text_calls.get("text_encoder", [])
    if not calls:
        return None, None

    def find(key: str) -> int | None:
        target = getattr(run.meta, key)
        for j, (_, hidden) in enumerate(calls):
            if target is not None and hidden.shape == target.shape:
                if torch.allclose(hidden, target, atol=1e-3, rtol=1e-3):
                    return j
        return None

    cond = find("embeds")
    cond = 0 if cond is None else cond
    uncond = find("negative_embeds") if run.meta.cfg else None
    if uncond is None and run.meta.cfg and len(calls) > 1:
        uncond = 1 - cond if cond in (0, 1) else None
    return calls[cond][0], (calls[uncond][0] if uncond is not None else None)


def _decode(tok: Any, ids: torch.Tensor | None) -> str:
    if tok is None or ids is None:
        return ""
    return tok.decode(ids.tolist(), skip_special_tokens=True).strip()


def _tokens(tok: Any, ids: torch.Tensor, prefix: str) -> dict[str, Any]:
    ids_list = ids.tolist()
    tokens = tok.convert_ids_to_tokens(ids_list) if tok is not None else []
    eos = getattr(tok, "eos_token_id", None)
    n = ids_list.index(eos) + 1 if eos in ids_list else len(ids_list)
    return {prefix + "tokens": tokens, prefix + "n_tokens": n}
