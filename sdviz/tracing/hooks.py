"""Hooks in: the hooks behind `sdviz.trace`: what each stage of a generation does, as it runs.

Only public extension points are used: forward (pre-)hooks with removable handles on
the text encoders, the denoiser (a UNet, or SD3's / Flux's transformer) and the VAE,
and attention processors on the text-attention layers (sdviz.attention for the UNet's
cross-attention, sdviz.joint_attention for SD3's and Flux's joint attention). Per
denoiser call the hooks see the model input x_t (for UNet sigma schedulers already
x/sqrt(1+sigma^2); Flux's 2x2-packed tokens are unpacked), the timestep, the text
embeddings ([uncond, cond] under classifier-free guidance, Ho & Salimans 2022) and the
raw model output, and derive, for a diffusion (DDPM-family) scheduler,

    eps_guided = eps_uncond + g * (eps_text - eps_uncond)
    x0_hat     = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)

with abar_t = 1 / (1 + sigma_t^2) for sigma schedulers, else alphas_cumprod[t], and
v-prediction converted to epsilon (Salimans & Ho 2022); for flow matching (SD3, Flux:
x_t = (1 - sigma) x0 + sigma noise, Lipman et al. 2023, Esser et al. 2024) the
prediction is a velocity v = noise - x0 and

    v_guided = v_uncond + g * (v_text - v_uncond)      x0_hat = x_t - sigma_t * v_guided

Step tensors stay on the pipeline's device until the run ends (no host sync per step);
sdviz.tracing.record then makes the `Run`. Everything is removed on exit, also when
the generation raises.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from ..attention import AttentionCapture, check_layer_filter, cross_attention_layers
from ..diffusion import alpha_bar_from_sigma, predicted_x0, to_epsilon
from ..joint_attention import JointAttentionCapture, joint_attention_layers
from .keys import SD3, XL
from .record import TEXT_ENCODERS, RunState, Schedule, build_run
from .run import Trace

# modules currently traced: a second trace on them is refused
_ACTIVE: weakref.WeakSet = weakref.WeakSet()


class TraceBudgetError(ValueError):
    """The requested capture would need more memory than `budget_mb` allows."""


def _output0(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) or hasattr(output, "to_tuple") else output


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def pipeline_family(pipe: Any) -> str:
    """The family (sdviz.tracing.keys.FAMILIES, sdviz.pipeline's names) from the components.

    Read from what the pipeline holds, not its class, so that img2img and other pipelines
    of a family trace too."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        name = type(transformer).__name__
        if name.startswith("SD3"):
            return SD3
        if name.startswith("Flux"):
            return "flux"
        raise TypeError(
            f"sdviz.trace knows the transformers of SD3 (SD3Transformer2DModel) and Flux "
            f"(FluxTransformer2DModel), not {name}."
        )
    if getattr(pipe, "text_encoder_2", None) is not None:
        return XL
    return "stable-diffusion"


# where the denoisers take their inputs: (position, keyword)
_UNET_ARGS = {
    "sample": (0, "sample"),
    "timestep": (1, "timestep"),
    "text": (2, "encoder_hidden_states"),
}
_TRANSFORMER_ARGS = {
    "sample": (0, "hidden_states"),
    "text": (1, "encoder_hidden_states"),
    "pooled": (2, "pooled_projections"),
    "timestep": (3, "timestep"),
}


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
        image_to_text: bool = False,
        text_share: bool = False,
    ):
        if attention not in (None, "aggregate"):
            raise ValueError(f"attention must be None or 'aggregate', got {attention!r}.")
        joint = image_to_text or text_share
        if attention is None and (attention_layers is not None or attention_heads or joint):
            raise ValueError(
                "attention_layers/attention_heads/image_to_text/text_share need "
                "attention='aggregate' "
                "(attention=None records no attention)."
            )
        flags = {"attention_heads": attention_heads, "image_to_text": image_to_text}
        flags["text_share"] = text_share
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}.")
        if isinstance(budget_mb, bool) or not isinstance(budget_mb, int | float) or budget_mb <= 0:
            raise ValueError(f"budget_mb must be a positive number of MiB, got {budget_mb!r}.")
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        missing = [n for n in ("vae", "scheduler") if getattr(pipe, n, None) is None]
        if denoiser is None or missing:
            missing = (["unet or transformer"] if denoiser is None else []) + missing
            raise TypeError(
                "sdviz.trace needs a Stable Diffusion pipeline (SD 1.x/2.x, SDXL, SD3 or Flux): "
                "a denoiser (unet or transformer), a vae and a scheduler; "
                f"{type(pipe).__name__} has no {', '.join(missing)}."
            )
        self.family = pipeline_family(pipe)
        self._denoiser = denoiser
        self._is_unet = getattr(pipe, "unet", None) is not None
        if joint and self._is_unet:
            raise ValueError(
                "image_to_text and text_share read joint attention (SD3, Flux), where text and "
                "image tokens attend to each other; a UNet's cross-attention has only image "
                "queries and text keys."
            )
        if attention is not None and attention_layers is not None:
            names = (
                cross_attention_layers(denoiser)
                if self._is_unet
                else joint_attention_layers(denoiser)
            )
            check_layer_filter(names, attention_layers)
        self._pipe = pipe
        self._options = (attention, attention_layers, attention_heads, image_to_text, text_share)
        self._budget = float(budget_mb) * 2**20
        self._handles: list = []
        self._capture: AttentionCapture | JointAttentionCapture | None = None
        self._current: RunState | None = None
        self._negative_call = False  # the denoiser call under way is Flux's negative one
        self._done: list[RunState] = []
        self._known = dict(known or {})  # the call's inputs, when generate() knows them
        self.trace = Trace()

    def _modules(self, pipe) -> list:
        encoders = [getattr(pipe, n, None) for n in TEXT_ENCODERS]
        return [self._denoiser, pipe.vae] + [e for e in encoders if e is not None]

    # -- enter / exit ---------------------------------------------------------
    def __enter__(self) -> Trace:
        pipe = self._pipe
        if pipe is None:
            raise RuntimeError("this sdviz.trace was already used; call sdviz.trace(pipe) again.")
        modules = self._modules(pipe)
        if any(m in _ACTIVE for m in modules):
            raise RuntimeError(
                "a trace is already active on this pipeline: sdviz traces cannot be nested. "
                "Leave the first `with sdviz.trace(...)` block before starting another; one "
                "trace records any number of pipe(...) calls."
            )
        try:
            attention, layers, heads, image_to_text, text_share = self._options
            if attention is not None:
                if self._is_unet:
                    self._capture = AttentionCapture(self._denoiser, layers, heads)
                else:
                    self._capture = JointAttentionCapture(
                        self._denoiser, layers, heads, image_to_text, text_share
                    )
                self._capture.install(self._denoiser)
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
                build_run(self._pipe, s, self._known, self.family) for s in self._done if s.steps
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
                    capture.restore(self._denoiser)
            finally:
                for m in self._modules(pipe):
                    _ACTIVE.discard(m)

    def _register(self, pipe) -> None:
        add = self._handles.append
        for name in TEXT_ENCODERS:
            encoder = getattr(pipe, name, None)
            if encoder is not None:
                add(encoder.register_forward_hook(self._text_hook(name), with_kwargs=True))
        add(self._denoiser.register_forward_pre_hook(self._on_denoiser_in, with_kwargs=True))
        add(self._denoiser.register_forward_hook(self._on_denoiser_out, with_kwargs=True))
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
    def _text_hook(self, encoder: str):
        def hook(module, args, kwargs, output) -> None:
            ids = _arg(args, kwargs, 0, "input_ids")
            run = self._current
            if run is None or run.steps:
                run = self._new_run()
            if ids is not None:
                hidden = _output0(output)
                calls = run.text_calls.setdefault(encoder, [])
                calls.append((ids[0].detach().clone(), hidden[0].detach().float().clone()))

        return hook

    def _inputs(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        table = _UNET_ARGS if self._is_unet else _TRANSFORMER_ARGS
        return {key: _arg(args, kwargs, i, name) for key, (i, name) in table.items()}

    def _on_denoiser_in(self, module, args, kwargs) -> None:
        if kwargs.get("skip_layers") is not None:  # SD3's skip-layer guidance: an extra call
            return
        inputs = self._inputs(args, kwargs)
        sample = inputs["sample"]
        run = self._current
        if self._is_negative_call(run, inputs):
            return
        if run is None or run.final is not None or (run.steps and len(run.steps) >= run.expected):
            run = self._new_run()
        if not run.steps and run.meta is None:
            self._start(run, inputs, args, kwargs)
        if self._capture is not None:
            cfg = run.meta.cfg
            half = sample.shape[0] // 2 if cfg else 0
            h, w = run.meta.grid
            if self._is_unet:
                self._capture.begin(h, w, half)
            else:
                self._capture.begin(h, w, half, inputs["text"].shape[1])

    def _is_negative_call(self, run: RunState | None, inputs: dict) -> bool:
        """FluxPipeline's true CFG (true_cfg_scale > 1 and a negative prompt): after each
        step's call with the prompt, a second call with the negative prompt's own text
        tensor. Its output is kept as the step's unconditional velocity; no maps."""
        text = inputs["text"]
        if self.family != "flux" or run is None or run.meta is None or not run.steps:
            return False
        if run.final is not None or text is None or text.data_ptr() == run.meta.text_ptr:
            return False
        self._negative_call = True
        if run.meta.negative_embeds is None:
            run.meta.negative_embeds = text[0].detach().float().clone()
            if inputs["pooled"] is not None:
                run.meta.negative_pooled = inputs["pooled"][0].detach().float().clone()
        return True

    def _start(self, run: RunState, inputs: dict, args: tuple, kwargs: dict) -> None:
        """First denoiser call of a run: read the schedule, guidance, and check the budget."""
        pipe, sched = self._pipe, self._pipe.scheduler
        sample, t, ehs = inputs["sample"], inputs["timestep"], inputs["text"]
        timesteps = sched.timesteps.detach().float().cpu()
        flow = not self._is_unet
        t = torch.as_tensor(t).detach().float().flatten()[0].cpu()
        if self.family == "flux":
            t = t * 1000  # FluxPipeline hands the transformer t / 1000
        offset = int((timesteps - t).abs().argmin())
        sigmas = getattr(sched, "sigmas", None)
        abar = None
        if sigmas is not None and len(sigmas) == len(timesteps) + 1:
            sigmas = torch.as_tensor(sigmas).detach().float().cpu()
            if not flow:
                abar = alpha_bar_from_sigma(sigmas[:-1])
        elif flow:
            raise TypeError(
                f"{type(sched).__name__} keeps no sigma per step; sdviz.trace reads SD3's and "
                "Flux's flow-matching schedule from FlowMatchEulerDiscreteScheduler's sigmas."
            )
        else:
            sigmas = None
            abar = sched.alphas_cumprod.detach().float().cpu()[timesteps.round().long()]
        batch = sample.shape[0]
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False)) and batch % 2 == 0
        tokens = ehs.shape[1] if ehs is not None else 0
        if self.family == "flux":
            img_ids = kwargs.get("img_ids")
            rows, cols = (int(img_ids[..., i].max()) + 1 for i in (1, 2))
            grid = (rows, cols)
        elif self._is_unet:
            grid = tuple(sample.shape[-2:])
        else:
            p = int(self._denoiser.config.patch_size)
            grid = (sample.shape[-2] // p, sample.shape[-1] // p)
        step_values = abar if not flow else sigmas[:-1]
        guidance = kwargs.get("guidance") if not self._is_unet else None
        run.meta = Schedule(
            cfg=cfg,
            n_steps=len(timesteps) - offset,
            offset=offset,
            timesteps=timesteps,
            sigmas=sigmas,
            abar=abar,
            abar_device=step_values.to(sample.device),  # indexed per step without a host sync
            guidance=float(getattr(pipe, "guidance_scale", 1.0)),  # applied only under cfg
            rescale=float(getattr(pipe, "guidance_rescale", 0.0) or 0.0) if cfg else 0.0,
            prediction_type="flow" if flow else sched.config.get("prediction_type", "epsilon"),
            flow=flow,
            grid=grid,
            embedded_guidance=None if guidance is None else float(guidance.flatten()[0]),
            text_ptr=ehs.data_ptr() if ehs is not None else 0,
        )
        item = batch // 2 if cfg else 0
        if ehs is not None:
            run.meta.embeds = ehs[item].detach().float().clone()
            if cfg:
                run.meta.negative_embeds = ehs[0].detach().float().clone()
        pooled = inputs.get("pooled")
        added = kwargs.get("added_cond_kwargs") or {}
        if pooled is None:
            pooled = added.get("text_embeds")
        if pooled is not None:
            run.meta.pooled = pooled[item].detach().float().clone()
            if cfg:
                run.meta.negative_pooled = pooled[0].detach().float().clone()
        if added.get("time_ids") is not None:
            run.meta.time_ids = added["time_ids"][item].detach().float().clone()
        if self.family == "flux":  # 2x2-packed tokens: (batch, h/2 * w/2, c * 4)
            run.meta.latent_shape = (sample.shape[-1] // 4, 2 * grid[0], 2 * grid[1])
        else:
            run.meta.latent_shape = tuple(sample.shape[1:])
        c, h, w = run.meta.latent_shape
        self._check_budget(run.meta.n_steps, tokens, c, grid, (h, w))

    def _check_budget(
        self, steps: int, tokens: int, c: int, grid: tuple[int, int], latent: Sequence[int]
    ) -> None:
        per_step = 5 * steps * c * latent[0] * latent[1] * 4  # x_t, 3 predictions, x0-hat
        agg = detail = 0
        if self._capture is not None:
            agg, detail = self._capture.estimate_bytes(steps, tokens, *grid)
        total = per_step + agg + detail
        if total <= self._budget:
            return
        mib = 2**20
        h, w = grid
        what = f"{steps} steps x {tokens} tokens x {h}x{w} positions: {agg / mib:.0f} MiB of maps"
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

    def _on_denoiser_out(self, module, args, kwargs, output) -> None:
        if kwargs.get("skip_layers") is not None:
            return
        run = self._current
        if run is None or run.meta is None:
            return
        if self._negative_call:  # Flux's true CFG: this step's unconditional velocity
            self._negative_call = False
            run.steps[-1]["uncond"] = _output0(output)[0].detach().float().clone()
            run.meta.true_cfg = True
            return
        meta = run.meta
        sample = self._inputs(args, kwargs)["sample"]
        raw = _output0(output).detach().float()  # (batch, c, h, w); Flux: (batch, N, c*4)
        i = meta.offset + len(run.steps)
        # 0-dim, on device: alpha-bar (diffusion) or sigma (flow) of this step
        value = meta.abar_device[min(i, len(meta.abar_device) - 1)]
        half = sample.shape[0] // 2 if meta.cfg else 0
        x = sample[half].detach().float()  # both halves hold the same x_t
        raw_u, raw_c = raw[0], raw[half]
        guided = raw_u + meta.guidance * (raw_c - raw_u) if meta.cfg else raw_c
        if meta.rescale > 0:  # Lin et al. 2024, Sec. 3.4: match the text branch's std
            r = meta.rescale
            guided = r * guided * (raw_c.std() / guided.std()) + (1 - r) * guided
        if meta.flow:  # velocity v = noise - x0; x_t = (1 - sigma) x0 + sigma noise
            step = dict(uncond=raw_u.clone(), text=raw_c.clone(), eps=guided.clone())
            step["x0"] = x - value * guided
        else:
            kind = meta.prediction_type
            eps = to_epsilon(x, guided, value, kind)
            step = dict(
                uncond=to_epsilon(x, raw_u, value, kind).clone(),
                text=to_epsilon(x, raw_c, value, kind).clone(),
                eps=eps.clone(),
                x0=predicted_x0(x, eps, value, "epsilon"),
            )
        step["x"] = x.clone()
        run.steps.append(step)
        if self._capture is not None:
            mean, detail, layers, *extras = self._capture.end()
            if mean is not None:
                run.maps.append(mean)
                run.layers = run.layers or layers
                averaged = getattr(self._capture, "aggregate", None)  # None: every layer
                run.aggregate_layers = run.aggregate_layers or [
                    n for n in layers if averaged is None or n in averaged
                ]
            for name, m in (extras[0] if extras else {}).items():
                run.extras.setdefault(name, []).append(m)
            for name, m in detail.items():
                run.detail.setdefault(name, []).append(m)

    def _on_vae_in(self, module, args) -> None:
        run = self._current
        if run is not None and run.steps and run.final is None:
            if tuple(args[0].shape[1:]) != run.meta.latent_shape:  # a tile of a tiled decode
                return
            config = self._pipe.vae.config
            shift = float(getattr(config, "shift_factor", None) or 0.0)
            run.final = (args[0][0].detach().float() - shift) * float(config.scaling_factor)

    def _on_vae_out(self, module, args, output) -> None:
        run = self._current
        if run is not None and run.final is not None and run.image is None:
            run.image = (_output0(output)[0].detach().float() / 2 + 0.5).clamp(0, 1)
