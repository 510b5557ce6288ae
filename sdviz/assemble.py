"""Turn what the hooks of one generation recorded into a `Run` (CPU float32).

The text-encoder calls are matched to the embeddings the UNet actually received
(cond and, under classifier-free guidance, uncond), token strings come from the
pipeline's tokenizer, per-step tensors are stacked once and moved to the CPU, and
the linear latent->RGB preview is fitted on the final latents and image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .run import Run, fit_preview

if TYPE_CHECKING:
    from .recorder import RunState


def assemble_run(pipe, run: RunState, overrides: dict[str, Any]) -> Run:
    """The `Run` of one recorded generation; `overrides` (from generate) win."""
    meta = run.meta
    sched, tok = pipe.scheduler, getattr(pipe, "tokenizer", None)
    cpu = lambda t: t.detach().float().cpu()  # noqa: E731
    stack = lambda key: cpu(torch.stack([s[key] for s in run.steps]))  # noqa: E731
    d: dict[str, Any] = {}
    cond_ids, uncond_ids = _pick_ids(run)
    d["prompt"] = _text(tok, cond_ids)
    neg = _text(tok, uncond_ids) if meta["cfg"] else ""
    d["negative_prompt"] = neg or None
    d["guidance_scale"] = meta["guidance"]
    d["do_classifier_free_guidance"] = meta["cfg"]
    d["guidance_rescale"] = meta["rescale"]
    d["num_inference_steps"] = int(getattr(sched, "num_inference_steps", None) or len(run.steps))
    lat = run.steps[0]["x"].shape
    vsf = int(pipe.vae_scale_factor)
    size = run.image.shape[-2:] if run.image is not None else (lat[-2] * vsf, lat[-1] * vsf)
    d["height"], d["width"] = int(size[0]), int(size[1])
    d["seed"] = None
    if cond_ids is not None:
        d["text.input_ids"] = cond_ids.cpu().long()
        d.update(_tokens(tok, cond_ids, "text."))
        d["text.truncated"] = []
        if uncond_ids is not None:
            d["text.negative_input_ids"] = uncond_ids.cpu().long()
            d.update(_tokens(tok, uncond_ids, "text.negative_"))
    if "embeds" in meta:
        d["text_encoder.prompt_embeds"] = cpu(meta["embeds"])
    if "negative_embeds" in meta:
        d["text_encoder.negative_prompt_embeds"] = cpu(meta["negative_embeds"])
    d["scheduler.name"] = type(sched).__name__
    d["scheduler.config"] = dict(sched.config)
    d["scheduler.timesteps"] = meta["timesteps"]
    d["scheduler.alphas_cumprod"] = cpu(sched.alphas_cumprod)
    if meta["sigmas"] is not None:
        d["scheduler.sigmas"] = meta["sigmas"]
    steps = slice(meta["offset"], meta["offset"] + len(run.steps))
    d["step.t"] = meta["timesteps"][steps].clone()
    d["step.alpha_bar"] = meta["abar"][steps].clone()
    d["step.sigma"] = ((1 - d["step.alpha_bar"]) / d["step.alpha_bar"]).sqrt()
    xs = [s["x"] for s in run.steps] + ([run.final] if run.final is not None else [])
    d["unet.latents"] = cpu(torch.stack(xs))
    d["unet.noise_pred_uncond"] = stack("uncond")
    d["unet.noise_pred_text"] = stack("text")
    d["unet.noise_pred"] = stack("eps")
    d["unet.pred_original_sample"] = stack("x0")
    d["unet.prediction_type"] = meta["prediction_type"]
    if run.maps:
        d["attention.maps"] = cpu(torch.stack(run.maps))
        d["attention.layers"] = list(run.layers)
        d["attention.n_layers"] = len(run.layers)
    for name, maps in run.detail.items():
        d[name] = cpu(torch.stack(maps))
    vae = pipe.vae
    d["vae.scaling_factor"] = float(vae.config.scaling_factor)
    d["vae_scale_factor"] = vsf
    if run.image is not None:
        d["vae.image"] = cpu(run.image)
        coef = fit_preview(d["unet.latents"][-1], d["vae.image"])
        if coef is not None:
            d["vae.preview_coefficients"] = coef
    d.update(overrides)
    return Run(d)


def _pick_ids(run: RunState) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which text-encoder call made the prompt and which the negative prompt."""
    calls = run.text_calls
    if not calls:
        return None, None

    def find(key: str) -> int | None:
        target = run.meta.get(key)
        for j, (_, hidden) in enumerate(calls):
            if target is not None and hidden.shape == target.shape:
                if torch.allclose(hidden, target, atol=1e-3, rtol=1e-3):
                    return j
        return None

    cond = find("embeds")
    cond = 0 if cond is None else cond
    uncond = find("negative_embeds") if run.meta.get("cfg") else None
    if uncond is None and run.meta.get("cfg") and len(calls) > 1:
        uncond = 1 - cond if cond in (0, 1) else None
    return calls[cond][0], (calls[uncond][0] if uncond is not None else None)


def _text(tok, ids: torch.Tensor | None) -> str:
    if tok is None or ids is None:
        return ""
    return tok.decode(ids.tolist(), skip_special_tokens=True).strip()


def _tokens(tok, ids: torch.Tensor, prefix: str) -> dict[str, Any]:
    ids_list = ids.tolist()
    tokens = tok.convert_ids_to_tokens(ids_list) if tok is not None else []
    eos = getattr(tok, "eos_token_id", None)
    n = ids_list.index(eos) + 1 if eos in ids_list else len(ids_list)
    return {prefix + "tokens": tokens, prefix + "n_tokens": n}
