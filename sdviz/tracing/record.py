"""Record → Run: what the hooks of one generation saw, made into a `Run` (CPU float32).

`RunState` is filled by the hooks (sdviz.tracing.hooks) while a pipeline call runs;
`build_run` then matches the text-encoder calls to the embeddings the denoiser actually
received (cond and, under classifier-free guidance, uncond), reads token strings from
the pipeline's tokenizer, stacks the per-step tensors once, moves them to the CPU, fits
the linear latent->RGB preview, and names every value by the key table
(sdviz.tracing.keys), which it checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .keys import LAYER_PREFIX, check_keys
from .run import Run, fit_preview


@dataclass
class Schedule:
    """What the first denoiser call of a generation established (tensors: its device)."""

    cfg: bool  # classifier-free guidance ran: the batch is [uncond, text]
    n_steps: int  # denoiser calls this generation will make
    offset: int  # index of the first visited timestep in `timesteps` (img2img starts late)
    timesteps: torch.Tensor  # (T,) the scheduler's whole schedule, CPU
    sigmas: torch.Tensor | None  # (T+1,) for sigma schedulers, CPU; else None
    abar: torch.Tensor  # (T,) alpha-bar of each timestep, CPU
    abar_device: torch.Tensor  # the same on the pipeline's device (no host sync per step)
    guidance: float  # g, applied only under cfg
    rescale: float  # guidance rescale (Lin et al. 2024); 0 = off
    prediction_type: str  # epsilon, v_prediction, ...
    embeds: torch.Tensor | None = None  # (L, d) the text branch's encoder_hidden_states
    negative_embeds: torch.Tensor | None = None  # (L, d) the unconditional branch's


@dataclass
class RunState:
    """What one pipe(...) call has produced so far (tensors on the pipeline's device)."""

    text_calls: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    meta: Schedule | None = None  # set by the first denoiser call
    steps: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per denoiser call
    maps: list[torch.Tensor] = field(default_factory=list)  # (L, h, w) per step
    detail: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per step
    layers: list[str] = field(default_factory=list)
    final: torch.Tensor | None = None  # (c, h, w) latents the VAE decoded
    image: torch.Tensor | None = None  # (3, H, W) in [0, 1]

    @property
    def expected(self) -> int:
        return 0 if self.meta is None else self.meta.n_steps


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


def build_run(pipe: Any, run: RunState, known: dict[str, Any] | None = None) -> Run:
    """The `Run` of one recorded generation; `known` (inputs `generate` knows) wins."""
    d: dict[str, Any] = {}
    d.update(_call(pipe, run))
    d.update(_text(pipe, run))
    d.update(_schedule(pipe, run))
    d.update(_denoiser(run))
    d.update(_attention(run))
    d.update(_vae(pipe, run, d["denoiser.latents"]))
    d.update(known or {})
    check_keys(d)
    return Run(d)


def _call(pipe: Any, run: RunState) -> dict[str, Any]:
    meta, sched = run.meta, pipe.scheduler
    lat = run.steps[0]["x"].shape
    factor = int(pipe.vae_scale_factor)
    size = run.image.shape[-2:] if run.image is not None else (lat[-2] * factor, lat[-1] * factor)
    return {
        "pipeline.family": "stable-diffusion",
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


def _text(pipe: Any, run: RunState) -> dict[str, Any]:
    tok = getattr(pipe, "tokenizer", None)
    cond_ids, uncond_ids = _pick_ids(run)
    d: dict[str, Any] = {"pipeline.prompt": _decode(tok, cond_ids)}
    d["pipeline.negative_prompt"] = (_decode(tok, uncond_ids) if run.meta.cfg else "") or None
    if cond_ids is not None:
        d["tokenizer.input_ids"] = cond_ids.cpu().long()
        d.update(_tokens(tok, cond_ids, "tokenizer."))
        # A raw trace sees only the ids after truncation: when the prompt filled every
        # position it may have been cut, and which words were cut is unknown here.
        filled = d["tokenizer.n_tokens"] >= len(cond_ids)
        d["tokenizer.truncated"] = None if filled else []
        if uncond_ids is not None:
            d["tokenizer.negative_input_ids"] = uncond_ids.cpu().long()
            d.update(_tokens(tok, uncond_ids, "tokenizer.negative_"))
    if run.meta.embeds is not None:
        d["text_encoder.prompt_embeds"] = _cpu(run.meta.embeds)
    if run.meta.negative_embeds is not None:
        d["text_encoder.negative_prompt_embeds"] = _cpu(run.meta.negative_embeds)
    return d


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
    abar = meta.abar[steps].clone()  # (S,)
    d["scheduler.step_timestep"] = meta.timesteps[steps].clone()
    d["scheduler.step_alpha_bar"] = abar
    d["scheduler.step_sigma"] = ((1 - abar) / abar).sqrt()
    return d


def _denoiser(run: RunState) -> dict[str, Any]:
    def stack(key: str) -> torch.Tensor:  # (S, c, h, w)
        return _cpu(torch.stack([s[key] for s in run.steps]))

    xs = [s["x"] for s in run.steps] + ([run.final] if run.final is not None else [])
    return {
        "denoiser.name": "unet",
        "denoiser.prediction_type": run.meta.prediction_type,
        "denoiser.latents": _cpu(torch.stack(xs)),  # (S+1, c, h, w)
        "denoiser.noise_pred_uncond": stack("uncond"),
        "denoiser.noise_pred_text": stack("text"),
        "denoiser.noise_pred": stack("eps"),
        "denoiser.pred_original_sample": stack("x0"),
    }


def _attention(run: RunState) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if run.maps:
        d["attention.maps"] = _cpu(torch.stack(run.maps))  # (S, L, h, w)
        d["attention.layers"] = list(run.layers)
        d["attention.n_layers"] = len(run.layers)
    for name, maps in run.detail.items():
        d[LAYER_PREFIX + name] = _cpu(torch.stack(maps))
    return d


def _vae(pipe: Any, run: RunState, latents: torch.Tensor) -> dict[str, Any]:
    d: dict[str, Any] = {
        "vae.scaling_factor": float(pipe.vae.config.scaling_factor),
        "vae.downsampling_factor": int(pipe.vae_scale_factor),
    }
    if run.image is not None:
        d["vae.image"] = _cpu(run.image)
        coef = fit_preview(latents[-1], d["vae.image"])
        if coef is not None:
            d["vae.preview_coefficients"] = coef
    return d


def _pick_ids(run: RunState) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which text-encoder call made the prompt and which the negative prompt."""
    calls = run.text_calls
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
