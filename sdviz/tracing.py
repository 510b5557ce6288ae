"""Trace a Stable Diffusion generation: `with sdviz.trace(pipe) as tr: pipe(...)`.

Stable Diffusion (Rombach et al. 2022) turns a prompt into CLIP token embeddings,
denoises random latents x_T with a UNet guided by those embeddings under a scheduler
(DDPM, Ho et al. 2020; DDIM, Song et al. 2021; classifier-free guidance, Ho &
Salimans 2022), and decodes the final latents with a VAE. A trace records every
stage of each `pipe(...)` call made inside it into a `Run` (sdviz.run), using public
extension points only: forward (pre-)hooks with removable handles on the text
encoder, UNet and VAE, and attention processors on the cross-attention layers
(sdviz.attention). Everything is put back on exit, also when the generation raises.

Per UNet call the hook sees the model input x_t (variance-preserving scale: for
sigma schedulers it is already x/sqrt(1+sigma^2)), the timestep, the text
embeddings ([uncond, cond] under guidance) and the raw model output; it derives
    eps_guided = eps_uncond + g * (eps_text - eps_uncond)
    x0_hat     = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)
with abar_t = 1 / (1 + sigma_t^2) for sigma schedulers, else alphas_cumprod[t], and
v-prediction converted to epsilon (Salimans & Ho 2022): eps = sqrt(abar) v + sqrt(1-abar) x_t.
Step tensors stay on the pipeline's device until the run ends (no per-step sync),
then become CPU float32.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .attention import AttentionCapture, check_layer_filter, cross_attention_layers
from .diffusion import predicted_x0, to_epsilon
from .run import Run, fit_preview
from .text import check_prompt, truncated_tokens

__all__ = ["trace", "generate", "Trace", "Run", "TraceBudgetError"]

# modules currently traced: a second trace on them is refused
_ACTIVE: weakref.WeakSet = weakref.WeakSet()


class TraceBudgetError(ValueError):
    """The requested capture would need more memory than `budget_mb` allows."""


class Trace(Sequence[Run]):
    """The runs recorded inside one `sdviz.trace(...)` block, in call order."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    @property
    def last(self) -> Run:
        if not self.runs:
            raise IndexError(
                "this trace recorded no generation: call the pipeline inside the with-block, "
                "e.g. `with sdviz.trace(pipe) as tr: pipe('a red circle')`."
            )
        return self.runs[-1]

    def __getitem__(self, i):  # type: ignore[override]
        return self.runs[i]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __repr__(self) -> str:
        lines = [f"Trace({len(self.runs)} run{'s' if len(self.runs) != 1 else ''})"]
        for i, run in enumerate(self.runs):
            lines.append(f"  [{i}] {run.get('prompt', '')!r}: {run.n_steps} steps, {len(run)} keys")
        return "\n".join(lines)


class _RunState:
    """What one pipe(...) call has produced so far (tensors on the pipeline's device)."""

    def __init__(self) -> None:
        self.text_calls: list[tuple[torch.Tensor, torch.Tensor]] = []  # (ids (L,), hidden (L, d))
        self.meta: dict[str, Any] = {}
        self.steps: list[dict[str, torch.Tensor]] = []
        self.maps: list[torch.Tensor] = []
        self.detail: dict[str, list[torch.Tensor]] = {}
        self.layers: list[str] = []
        self.final: torch.Tensor | None = None
        self.image: torch.Tensor | None = None

    @property
    def expected(self) -> int:
        return self.meta.get("n_steps", 0)


def _output0(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) or hasattr(output, "to_tuple") else output


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


class _Tracer:
    """The context manager returned by `trace`; `__enter__` gives the `Trace`."""

    def __init__(self, pipe, attention, attention_layers, attention_heads, budget_mb):
        if attention not in (None, "aggregate"):
            raise ValueError(f"attention must be None or 'aggregate', got {attention!r}.")
        if attention is None and (attention_layers is not None or attention_heads):
            raise ValueError(
                "attention_layers/attention_heads need attention='aggregate' (attention=None "
                "records no cross-attention)."
            )
        if not isinstance(attention_heads, bool):
            raise TypeError(f"attention_heads must be True or False, got {attention_heads!r}.")
        if isinstance(budget_mb, bool) or not isinstance(budget_mb, int | float) or budget_mb <= 0:
            raise ValueError(f"budget_mb must be a positive number of MiB, got {budget_mb!r}.")
        missing = [n for n in ("unet", "vae", "text_encoder", "scheduler") if not hasattr(pipe, n)]
        if missing:
            raise TypeError(
                f"sdviz.trace needs a Stable Diffusion pipeline; {type(pipe).__name__} has no "
                f"{', '.join(missing)}."
            )
        if attention is not None:
            check_layer_filter(cross_attention_layers(pipe.unet), attention_layers)
        self._pipe = pipe
        self._options = (attention, attention_layers, attention_heads)
        self._budget = float(budget_mb) * 2**20
        self._handles: list = []
        self._capture: AttentionCapture | None = None
        self._current: _RunState | None = None
        self._done: list[_RunState] = []
        self._overrides: dict[str, Any] = {}  # filled by generate()
        self.trace = Trace()

    # -- enter / exit ---------------------------------------------------------
    def __enter__(self) -> Trace:
        pipe = self._pipe
        if pipe is None:
            raise RuntimeError("this sdviz.trace was already used; call sdviz.trace(pipe) again.")
        modules = [pipe.unet, pipe.vae, pipe.text_encoder]
        if any(m in _ACTIVE for m in modules):
            raise RuntimeError(
                "a trace is already active on this pipeline: sdviz traces cannot be nested. "
                "Leave the first `with sdviz.trace(...)` block before starting another; one "
                "trace records any number of pipe(...) calls."
            )
        try:
            attention, layers, heads = self._options
            if attention is not None:
                self._capture = AttentionCapture(pipe.unet, layers, heads)
                self._capture.install(pipe.unet)
            self._register(pipe)
        except BaseException:
            self._cleanup()
            raise
        _ACTIVE.update(modules)
        return self.trace

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None and self._current is not None:
                self._done.append(self._current)
            elif self._current is not None and self._current.final is not None:
                self._done.append(self._current)  # finished before the error: keep it
            self._current = None
            self.trace.runs.extend(self._finalize(s) for s in self._done if s.steps)
        finally:
            self._cleanup()
        return False

    def _cleanup(self) -> None:
        pipe, self._pipe = self._pipe, None
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        if pipe is not None:
            if self._capture is not None:
                self._capture.restore(pipe.unet)
            for m in (pipe.unet, pipe.vae, pipe.text_encoder):
                _ACTIVE.discard(m)
        self._capture = None
        self._done = []

    def _register(self, pipe) -> None:
        add = self._handles.append
        add(pipe.text_encoder.register_forward_hook(self._on_text, with_kwargs=True))
        add(pipe.unet.register_forward_pre_hook(self._on_unet_in, with_kwargs=True))
        add(pipe.unet.register_forward_hook(self._on_unet_out, with_kwargs=True))
        vae = pipe.vae
        first = vae.post_quant_conv if getattr(vae, "post_quant_conv", None) else vae.decoder
        add(first.register_forward_pre_hook(self._on_vae_in))
        add(vae.decoder.register_forward_hook(self._on_vae_out))

    def _new_run(self) -> _RunState:
        if self._current is not None and self._current.steps:
            self._done.append(self._current)
        self._current = _RunState()
        return self._current

    # -- hooks ----------------------------------------------------------------
    def _on_text(self, module, args, kwargs, output) -> None:
        ids = _arg(args, kwargs, 0, "input_ids")
        run = self._current
        if run is None or run.steps:
            run = self._new_run()
        if ids is not None:
            hidden = _output0(output)
            run.text_calls.append((ids[0].detach().clone(), hidden[0].detach().float().clone()))

    def _on_unet_in(self, module, args, kwargs) -> None:
        sample = _arg(args, kwargs, 0, "sample")
        run = self._current
        if run is None or run.final is not None or (run.steps and len(run.steps) >= run.expected):
            run = self._new_run()
        if not run.steps:
            self._start(run, sample, _arg(args, kwargs, 1, "timestep"), kwargs, args)
        if self._capture is not None:
            cfg = run.meta["cfg"]
            self._capture.begin(*sample.shape[-2:], sample.shape[0] // 2 if cfg else 0)

    def _start(self, run: _RunState, sample, t, kwargs, args) -> None:
        """First UNet call of a run: read the schedule, guidance, and check the budget."""
        pipe, sched = self._pipe, self._pipe.scheduler
        ehs = _arg(args, kwargs, 2, "encoder_hidden_states")  # (batch, L, d)
        timesteps = sched.timesteps.detach().float().cpu()
        offset = int((timesteps - float(t)).abs().argmin())
        sigmas = getattr(sched, "sigmas", None)
        if sigmas is not None and len(sigmas) == len(timesteps) + 1:
            sigmas = torch.as_tensor(sigmas).detach().float().cpu()
            abar = 1.0 / (1.0 + sigmas[:-1] ** 2)
        else:
            sigmas = None
            abar = sched.alphas_cumprod.detach().float().cpu()[timesteps.round().long()]
        batch = sample.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and batch % 2 == 0
        c, h, w = sample.shape[1:]
        n_steps = len(timesteps) - offset
        tokens = ehs.shape[1] if ehs is not None else 0
        run.meta.update(
            cfg=cfg,
            n_steps=n_steps,
            offset=offset,
            timesteps=timesteps,
            sigmas=sigmas,
            abar=abar,
            abar_device=abar.to(sample.device),  # indexed per step without a host sync
            guidance=float(getattr(pipe, "guidance_scale", 1.0)) if cfg else 1.0,
            rescale=float(getattr(pipe, "guidance_rescale", 0.0) or 0.0) if cfg else 0.0,
            prediction_type=sched.config.get("prediction_type", "epsilon"),
        )
        if ehs is not None:
            run.meta["embeds"] = ehs[batch // 2 if cfg else 0].detach().float().clone()
            if cfg:
                run.meta["negative_embeds"] = ehs[0].detach().float().clone()
        self._check_budget(n_steps, tokens, c, h, w)

    def _check_budget(self, steps: int, tokens: int, c: int, h: int, w: int) -> None:
        per_step = 5 * steps * c * h * w * 4  # x_t, three noise predictions, x0-hat
        agg = detail = 0
        if self._capture is not None:
            agg, detail = self._capture.estimate_bytes(steps, tokens, h, w)
        total = per_step + agg + detail
        if total <= self._budget:
            return
        mib = 2**20
        what = f"{steps} steps x {tokens} tokens x {h}x{w} latents: {agg / mib:.0f} MiB of maps"
        if detail:
            heads = "per head" if self._capture.keep_heads else "averaged over heads"
            what += (
                f" + {detail / mib:.0f} MiB for {len(self._capture.detail)} layer(s) kept {heads}"
            )
        raise TraceBudgetError(
            f"sdviz.trace: this capture needs about {total / mib:.0f} MiB ({what}), more than "
            f"budget_mb={self._budget / mib:g}. Raise it (sdviz.trace(pipe, budget_mb="
            f"{math.ceil(total / mib * 1.1)})), narrow attention_layers, set "
            "attention_heads=False, or use fewer steps. Nothing was denoised; the pipeline is "
            "left as it was."
        )

    def _on_unet_out(self, module, args, kwargs, output) -> None:
        run = self._current
        if run is None or not run.meta:
            return
        meta = run.meta
        sample = _arg(args, kwargs, 0, "sample")
        i = meta["offset"] + len(run.steps)
        abar = meta["abar_device"][min(i, len(meta["abar"]) - 1)]  # 0-dim, on device
        raw = _output0(output).detach().float()  # (batch, c, h, w)
        half = sample.shape[0] // 2 if meta["cfg"] else 0
        x = sample[half].detach().float()  # (c, h, w), both halves hold the same x_t
        raw_u, raw_c = raw[0], raw[half]
        guided = raw_u + meta["guidance"] * (raw_c - raw_u) if meta["cfg"] else raw_c
        if meta["rescale"] > 0:  # Lin et al. 2024, Sec. 3.4: match the text branch's std
            r = meta["rescale"]
            guided = r * guided * (raw_c.std() / guided.std()) + (1 - r) * guided
        kind = meta["prediction_type"]
        eps = to_epsilon(x, guided, abar, kind)
        run.steps.append(
            dict(
                x=x.clone(),
                uncond=to_epsilon(x, raw_u, abar, kind).clone(),
                text=to_epsilon(x, raw_c, abar, kind).clone(),
                eps=eps.clone(),
                x0=predicted_x0(x, eps, abar, "epsilon"),
            )
        )
        if self._capture is not None:
            mean, detail, layers = self._capture.end()
            if mean is not None:
                run.maps.append(mean)
                run.layers = run.layers or layers
            for name, m in detail.items():
                run.detail.setdefault(name, []).append(m)

    def _on_vae_in(self, module, args) -> None:
        run = self._current
        if run is not None and run.steps and run.final is None:
            config = self._pipe.vae.config
            shift = float(getattr(config, "shift_factor", None) or 0.0)
            run.final = (args[0][0].detach().float() - shift) * float(config.scaling_factor)

    def _on_vae_out(self, module, args, output) -> None:
        run = self._current
        if run is not None and run.final is not None and run.image is None:
            run.image = (_output0(output)[0].detach().float() / 2 + 0.5).clamp(0, 1)

    # -- building the Run ----------------------------------------------------------
    def _finalize(self, run: _RunState) -> Run:
        pipe, meta = self._pipe, run.meta
        sched, tok = pipe.scheduler, getattr(pipe, "tokenizer", None)
        cpu = lambda t: t.detach().float().cpu()  # noqa: E731
        stack = lambda key: cpu(torch.stack([s[key] for s in run.steps]))  # noqa: E731
        d: dict[str, Any] = {}
        cond_ids, uncond_ids = self._pick_ids(run)
        d["prompt"] = self._text(tok, cond_ids)
        neg = self._text(tok, uncond_ids) if meta["cfg"] else ""
        d["negative_prompt"] = neg or None
        d["guidance_scale"] = meta["guidance"]
        d["num_inference_steps"] = int(
            getattr(sched, "num_inference_steps", None) or len(run.steps)
        )
        lat = run.steps[0]["x"].shape
        vsf = int(getattr(pipe, "vae_scale_factor", 8))
        size = run.image.shape[-2:] if run.image is not None else (lat[-2] * vsf, lat[-1] * vsf)
        d["height"], d["width"] = int(size[0]), int(size[1])
        d["seed"] = None
        if cond_ids is not None:
            d["text.input_ids"] = cond_ids.cpu().long()
            d.update(self._tokens(tok, cond_ids, "text."))
            d["text.truncated"] = []
            if uncond_ids is not None:
                d["text.negative_input_ids"] = uncond_ids.cpu().long()
                d.update(self._tokens(tok, uncond_ids, "text.negative_"))
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
        d.update(self._overrides)
        return Run(d)

    @staticmethod
    def _pick_ids(run: _RunState) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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

    @staticmethod
    def _text(tok, ids: torch.Tensor | None) -> str:
        if tok is None or ids is None:
            return ""
        return tok.decode(ids.tolist(), skip_special_tokens=True).strip()

    @staticmethod
    def _tokens(tok, ids: torch.Tensor, prefix: str) -> dict[str, Any]:
        ids_list = ids.tolist()
        tokens = tok.convert_ids_to_tokens(ids_list) if tok is not None else []
        eos = getattr(tok, "eos_token_id", None)
        n = ids_list.index(eos) + 1 if eos in ids_list else len(ids_list)
        return {prefix + "tokens": tokens, prefix + "n_tokens": n}


def trace(
    pipe,
    *,
    attention: str | None = "aggregate",
    attention_layers: str | Sequence[str] | None = None,
    attention_heads: bool = False,
    budget_mb: float = 1024.0,
) -> _Tracer:
    """Record every stage of the `pipe(...)` calls made inside a with-block.

    `attention="aggregate"` keeps per-step per-token cross-attention maps averaged
    over heads and layers; `attention_layers` (substring, glob or list of them over
    diffusers module paths such as "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    keeps those layers' own maps too, per head with `attention_heads=True`. A capture
    whose estimated memory exceeds `budget_mb` is refused before any denoising.
    """
    return _Tracer(pipe, attention, attention_layers, attention_heads, budget_mb)


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
