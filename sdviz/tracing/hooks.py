"""Hooks in: the hooks behind `sdviz.trace`: what each stage of a generation does, as it runs.

Only public extension points are used: forward (pre-)hooks with removable handles on
the text encoder, the UNet and the VAE, and attention processors on the
cross-attention layers (sdviz.attention). Per UNet call the hooks see the model input
x_t (variance-preserving scale: for sigma schedulers it is already x/sqrt(1+sigma^2)),
the timestep, the text embeddings ([uncond, cond] under classifier-free guidance, Ho &
Salimans 2022) and the raw model output, and derive

    eps_guided = eps_uncond + g * (eps_text - eps_uncond)
    x0_hat     = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)

with abar_t = 1 / (1 + sigma_t^2) for sigma schedulers, else alphas_cumprod[t], and
v-prediction converted to epsilon (Salimans & Ho 2022). Step tensors stay on the
pipeline's device until the run ends (no host sync per step); sdviz.tracing.record
then makes the `Run`. Everything is removed on exit, also when the generation raises.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from ..attention import AttentionCapture, check_layer_filter, cross_attention_layers
from ..diffusion import alpha_bar_from_sigma, predicted_x0, to_epsilon
from .record import RunState, Schedule, build_run
from .run import Trace

# modules currently traced: a second trace on them is refused
_ACTIVE: weakref.WeakSet = weakref.WeakSet()


class TraceBudgetError(ValueError):
    """The requested capture would need more memory than `budget_mb` allows."""


def _output0(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) or hasattr(output, "to_tuple") else output


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


class Tracer:
    """The context manager returned by `trace`; `__enter__` gives the `Trace`."""

    def __init__(
        self,
        pipe: Any,
        attention: str | None,
        attention_layers: str | Sequence[str] | None,
        attention_heads: bool,
        budget_mb: float,
        known: dict[str, Any] | None = None,
    ):
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
        if attention is not None and attention_layers is not None:
            check_layer_filter(cross_attention_layers(pipe.unet), attention_layers)
        self._pipe = pipe
        self._options = (attention, attention_layers, attention_heads)
        self._budget = float(budget_mb) * 2**20
        self._handles: list = []
        self._capture: AttentionCapture | None = None
        self._current: RunState | None = None
        self._done: list[RunState] = []
        self._known = dict(known or {})  # the call's inputs, when generate() knows them
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
            self.trace.runs.extend(
                build_run(self._pipe, s, self._known) for s in self._done if s.steps
            )
        finally:
            self._cleanup()
        return False

    def _cleanup(self) -> None:
        pipe, self._pipe = self._pipe, None
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        capture, self._capture = self._capture, None
        self._done = []
        if pipe is not None:
            try:
                if capture is not None:
                    capture.restore(pipe.unet)
            finally:
                for m in (pipe.unet, pipe.vae, pipe.text_encoder):
                    _ACTIVE.discard(m)

    def _register(self, pipe) -> None:
        add = self._handles.append
        add(pipe.text_encoder.register_forward_hook(self._on_text, with_kwargs=True))
        add(pipe.unet.register_forward_pre_hook(self._on_unet_in, with_kwargs=True))
        add(pipe.unet.register_forward_hook(self._on_unet_out, with_kwargs=True))
        vae = pipe.vae
        first = vae.post_quant_conv if getattr(vae, "post_quant_conv", None) else vae.decoder
        add(first.register_forward_pre_hook(self._on_vae_in))
        add(vae.decoder.register_forward_hook(self._on_vae_out))

    def _new_run(self) -> RunState:
        if self._current is not None and self._current.steps:
            self._done.append(self._current)
        self._current = RunState()
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
            cfg = run.meta.cfg
            self._capture.begin(*sample.shape[-2:], sample.shape[0] // 2 if cfg else 0)

    def _start(self, run: RunState, sample, t, kwargs, args) -> None:
        """First UNet call of a run: read the schedule, guidance, and check the budget."""
        pipe, sched = self._pipe, self._pipe.scheduler
        ehs = _arg(args, kwargs, 2, "encoder_hidden_states")  # (batch, L, d)
        timesteps = sched.timesteps.detach().float().cpu()
        offset = int((timesteps - float(t)).abs().argmin())
        sigmas = getattr(sched, "sigmas", None)
        if sigmas is not None and len(sigmas) == len(timesteps) + 1:
            sigmas = torch.as_tensor(sigmas).detach().float().cpu()
            abar = alpha_bar_from_sigma(sigmas[:-1])
        else:
            sigmas = None
            abar = sched.alphas_cumprod.detach().float().cpu()[timesteps.round().long()]
        batch = sample.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and batch % 2 == 0
        c, h, w = sample.shape[1:]
        n_steps = len(timesteps) - offset
        tokens = ehs.shape[1] if ehs is not None else 0
        run.meta = Schedule(
            cfg=cfg,
            n_steps=n_steps,
            offset=offset,
            timesteps=timesteps,
            sigmas=sigmas,
            abar=abar,
            abar_device=abar.to(sample.device),  # indexed per step without a host sync
            guidance=float(getattr(pipe, "guidance_scale", 1.0)),  # applied only under cfg
            rescale=float(getattr(pipe, "guidance_rescale", 0.0) or 0.0) if cfg else 0.0,
            prediction_type=sched.config.get("prediction_type", "epsilon"),
        )
        if ehs is not None:
            run.meta.embeds = ehs[batch // 2 if cfg else 0].detach().float().clone()
            if cfg:
                run.meta.negative_embeds = ehs[0].detach().float().clone()
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
        if run is None or run.meta is None:
            return
        meta = run.meta
        sample = _arg(args, kwargs, 0, "sample")
        i = meta.offset + len(run.steps)
        abar = meta.abar_device[min(i, len(meta.abar) - 1)]  # 0-dim, on device
        raw = _output0(output).detach().float()  # (batch, c, h, w)
        half = sample.shape[0] // 2 if meta.cfg else 0
        x = sample[half].detach().float()  # (c, h, w), both halves hold the same x_t
        raw_u, raw_c = raw[0], raw[half]
        guided = raw_u + meta.guidance * (raw_c - raw_u) if meta.cfg else raw_c
        if meta.rescale > 0:  # Lin et al. 2024, Sec. 3.4: match the text branch's std
            r = meta.rescale
            guided = r * guided * (raw_c.std() / guided.std()) + (1 - r) * guided
        kind = meta.prediction_type
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
            if args[0].shape[1:] != run.steps[0]["x"].shape:  # a tile of a tiled decode
                return
            config = self._pipe.vae.config
            shift = float(getattr(config, "shift_factor", None) or 0.0)
            run.final = (args[0][0].detach().float() - shift) * float(config.scaling_factor)

    def _on_vae_out(self, module, args, output) -> None:
        run = self._current
        if run is not None and run.final is not None and run.image is None:
            run.image = (_output0(output)[0].detach().float() / 2 + 0.5).clamp(0, 1)
