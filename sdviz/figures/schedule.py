"""Figure 3 — the noise schedule: ᾱ_t, σ_t and the signal-to-noise ratio over t.

In DDPM (Ho et al. 2020) a noisy sample is x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε, with
ᾱ_t the cumulative product of (1 - β_t). The same schedule as a noise level is
σ_t = sqrt((1-ᾱ_t)/ᾱ_t) (Karras et al. 2022), and SNR(t) = ᾱ_t/(1-ᾱ_t) = 1/σ_t².
A sampler visits only a few of the T training timesteps; they are marked on each
curve. Several schedulers (or several step counts) can be drawn side by side. Samplers
built on one model share its training schedule: their curves coincide, so a shared
curve is drawn once and labelled so, and only the visited timesteps tell them apart.
The figure also prints where sampling starts and the last ᾱ_t: Stable Diffusion's
schedule never reaches pure noise (ᾱ_999 ≈ 0.0047, a non-zero terminal SNR; Lin et al.
2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

Flow matching (SD3, Flux: rectified flow, Liu et al. 2022; Lipman et al. 2023; Esser et
al. 2024) has no ᾱ: x_t = (1-σ_t)·x_0 + σ_t·ε on a straight line from the image (σ=0) to
pure noise (σ=1), with t = N·σ. Its SNR is ((1-σ)/σ)², zero at σ=1: sampling starts from
pure noise. The shift s moves the sampled σ towards the noisy end (σ ← sσ/(1+(s-1)σ)).
When a flow-matching source is drawn, the figure writes both kinds as
x_t = a_t·x_0 + b_t·ε and plots a_t² (ᾱ_t for diffusion, (1-σ_t)² for flow), b_t
(√(1-ᾱ_t), σ_t) and SNR = a_t²/b_t² over the same t, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from ..language import Texts, course_language
from ..schedulers import make_scheduler
from .style import LINE_COLORS, MARKERS, WIDE, Canvas, new_figure, style

T = Texts(
    __name__,
    {
        "suptitle": ("Noise schedule over training timesteps t", "训练时间步 t 上的噪声调度"),
        "flow_suptitle": (
            "Noise schedules as x_t = a_t·x0 + b_t·ε: diffusion (ᾱ) and flow matching (σ)",
            "写成 x_t = a_t·x0 + b_t·ε 的噪声调度：扩散（ᾱ）与流匹配（σ）",
        ),
        "markers": ("markers: the sampled timesteps", "散点：采样到的时间步"),
        "starts": ("\nsampling starts at: {notes}", "\n采样起点：{notes}"),
        "separator": ("; ", "；"),
        "shared_one": (
            "; {n} of them share one ᾱ_t curve (the model's training schedule) and differ "
            "only in which timesteps they visit",
            "；其中 {n} 条共用一条 ᾱ_t 曲线（模型训练时的调度），只是访问的时间步不同",
        ),
        "shared_each": (
            "; one curve each for {groups}: they differ only in the t they visit",
            "；共用一条曲线的有 {groups}：它们只是访问的 t 不同",
        ),
        "flow_name": ("{name} (shift {shift:.3g})", "{name}（偏移 {shift:.3g}）"),
        "curve": ("{name}, {n} steps", "{name}，{n} 步"),
        "strip_shift": ("{name}, shift {shift:.3g}", "{name}，偏移 {shift:.3g}"),
        "same_t": ("{name}\n(same t as {twin})", "{name}\n（与 {twin} 的 t 相同）"),
        "strip_title": ("Timesteps each sampler visits", "每个采样器访问的时间步"),
        "timestep": ("timestep t", "时间步 t"),
        "flow_timestep": ("timestep t (flow: t = N·σ)", "时间步 t（流匹配：t = N·σ）"),
        "alpha_bar": ("ᾱ_t: fraction of signal variance", "ᾱ_t：信号方差所占比例"),
        "sigma": ("σ_t = √((1-ᾱ_t)/ᾱ_t): noise level", "σ_t = √((1-ᾱ_t)/ᾱ_t)：噪声水平"),
        "snr": ("SNR(t) = ᾱ_t / (1-ᾱ_t)", "SNR(t) = ᾱ_t / (1-ᾱ_t)"),
        "signal_kept": (
            "a_t²: signal kept\n(diffusion ᾱ_t, flow (1-σ_t)²)",
            "a_t²：保留的信号\n（扩散 ᾱ_t，流匹配 (1-σ_t)²）",
        ),
        "noise_weight": (
            "b_t: noise weight\n(diffusion √(1-ᾱ_t), flow σ_t)",
            "b_t：噪声权重\n（扩散 √(1-ᾱ_t)，流匹配 σ_t）",
        ),
        "flow_snr": (
            "SNR = a_t²/b_t²\n(ᾱ/(1-ᾱ); ((1-σ)/σ)²)",
            "SNR = a_t²/b_t²\n(ᾱ/(1-ᾱ); ((1-σ)/σ)²)",
        ),
        "ends": (
            "sampling starts at t={t:g}: ᾱ={start:.4f}\nt={last}: ᾱ={end:.4f} > 0, never pure noise",
            "采样从 t={t:g} 开始：ᾱ={start:.4f}\nt={last}：ᾱ={end:.4f} > 0，始终不是纯噪声",
        ),
        "flow_note": (
            "{name} σ={sigma:.3f} (SNR {snr:.2g}), shift {shift:.3g}",
            "{name} σ={sigma:.3f}（SNR {snr:.2g}），偏移 {shift:.3g}",
        ),
        "diffusion_note": ("{name} t={t:g}, ᾱ={abar:.4f} > 0", "{name} t={t:g}，ᾱ={abar:.4f} > 0"),
    },
)


def schedule_curves(source: Any, steps: int | None = None) -> dict[str, Any]:
    """ᾱ, σ and SNR over all training timesteps, plus the sampled timesteps.

    `source` is a traced run, a pipeline or a diffusers scheduler. For a scheduler
    without timesteps set (or when `steps` is given) the timesteps come from a fresh
    copy of it (`from_config`), so the scheduler passed in is never changed.
    """
    if is_flow(source):
        return flow_curves(source, steps)
    if isinstance(source, Mapping):
        if "scheduler.alphas_cumprod" not in source:
            raise KeyError("This run has no 'scheduler.alphas_cumprod'; trace it with sdviz.trace.")
        abar = to_numpy(source["scheduler.alphas_cumprod"])
        if steps is not None:
            raise ValueError("`steps` applies to a scheduler; a run has its own timesteps.")
        timesteps = to_numpy(source["scheduler.timesteps"])
        name = str(source.get("scheduler.name", "scheduler"))
        config = dict(source.get("scheduler.config", {}))
    else:
        scheduler = getattr(source, "scheduler", source)
        if not hasattr(scheduler, "alphas_cumprod") or not hasattr(scheduler, "set_timesteps"):
            raise TypeError(
                f"Expected a run, a pipeline or a diffusers scheduler; got {type(source).__name__}."
            )
        abar = to_numpy(scheduler.alphas_cumprod)
        name = type(scheduler).__name__
        config = dict(scheduler.config)
        if steps is not None or getattr(scheduler, "num_inference_steps", None) is None:
            if steps is not None and (not isinstance(steps, int) or steps < 1):
                raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
            fresh = type(scheduler).from_config(scheduler.config)
            fresh.set_timesteps(steps or 25)
            scheduler = fresh
        timesteps = to_numpy(scheduler.timesteps)
    t = np.arange(len(abar), dtype=np.float32)
    abar = np.clip(abar, 1e-12, 1 - 1e-7)
    sampled_abar = np.interp(timesteps, t, abar)
    return {
        "kind": "diffusion",
        "name": name,
        "schedule": config.get("beta_schedule", ""),
        "t": t,
        "alpha_bar": abar,
        "sigma": sigma(abar),
        "snr": abar / (1 - abar),
        "timesteps": timesteps,
        "sampled_alpha_bar": sampled_abar,
    }


def is_flow(source: Any) -> bool:
    """Whether a run, pipeline or scheduler samples by flow matching (no ᾱ; SD3, Flux)."""
    if isinstance(source, Mapping):
        return "scheduler.alphas_cumprod" not in source and "scheduler.shift" in source
    scheduler = getattr(source, "scheduler", source)
    return not hasattr(scheduler, "alphas_cumprod") and "shift" in getattr(scheduler, "config", {})


def _flow_timesteps(source: Any, steps: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(timesteps, σ per step, shift) a flow-matching pipeline or scheduler would sample,
    from a fresh copy of its scheduler. A dynamic shift (Flux) depends on the image's
    token count, read from the pipeline's native size."""
    scheduler = getattr(source, "scheduler", source)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    fresh = type(scheduler).from_config(scheduler.config)
    config = fresh.config
    kwargs = {}
    if config.get("use_dynamic_shifting", False):
        if source is scheduler:
            raise ValueError(
                f"{type(scheduler).__name__} shifts its σ by the image's size (dynamic "
                "shifting, Flux): pass the pipeline or a traced run instead of the scheduler."
            )
        from ..autoencoder import native_size

        side = native_size(source) // int(source.vae_scale_factor) // 2  # Flux packs 2x2
        slope = (config.max_shift - config.base_shift) / (
            config.max_image_seq_len - config.base_image_seq_len
        )
        kwargs["mu"] = config.base_shift + slope * (side * side - config.base_image_seq_len)
    fresh.set_timesteps(steps or 25, **kwargs)
    sigmas = to_numpy(fresh.sigmas)[:-1]  # the last σ is the end point, 0
    shift = float(np.exp(kwargs["mu"])) if kwargs else float(config.shift)
    return to_numpy(fresh.timesteps), sigmas, shift


def flow_curves(source: Any, steps: int | None = None) -> dict[str, Any]:
    """A flow-matching schedule as `schedule_curves` gives it: σ_t = t/N over the train
    timesteps t = 1..N, a_t² = (1-σ)², b_t = σ, SNR = ((1-σ)/σ)², and the sampled
    timesteps with their σ (a run's own `scheduler.step_sigma`)."""
    if isinstance(source, Mapping):
        if steps is not None:
            raise ValueError("`steps` applies to a scheduler; a run has its own timesteps.")
        config = dict(source.get("scheduler.config", {}))
        timesteps = to_numpy(source["scheduler.step_timestep"])
        sampled = to_numpy(source["scheduler.step_sigma"])
        shift = float(source["scheduler.shift"])
        name = str(source.get("scheduler.name", "scheduler"))
    else:
        scheduler = getattr(source, "scheduler", source)
        config = dict(scheduler.config)
        timesteps, sampled, shift = _flow_timesteps(source, steps)
        name = type(scheduler).__name__
    n = int(config.get("num_train_timesteps", 1000))
    t = np.arange(1, n + 1, dtype=np.float32)
    sig = t / n  # the straight path: t = N σ
    return {
        "kind": "flow",
        "name": name,
        "schedule": f"shift {shift:.3g}",
        "shift": shift,
        "t": t,
        "sigma": sig,
        "signal": (1 - sig) ** 2,
        "noise": sig,
        "snr": flow_snr(sig),
        "timesteps": timesteps,
        "sampled_sigma": sampled,
        "sampled_signal": (1 - sampled) ** 2,
        "sampled_noise": sampled,
        "sampled_snr": flow_snr(sampled),
    }


def flow_snr(sigma_: np.ndarray) -> np.ndarray:
    """Rectified flow's signal-to-noise ratio ((1-σ)/σ)²: infinite at σ=0, zero at σ=1."""
    with np.errstate(divide="ignore"):
        return ((1 - sigma_) / sigma_) ** 2


def _weights(c: dict) -> dict:
    """A diffusion curve written as x_t = a·x0 + b·ε too: a² = ᾱ, b = √(1-ᾱ), SNR."""
    if c["kind"] == "flow":
        return c
    abar, abar_s = c["alpha_bar"], c["sampled_alpha_bar"]
    return {
        **c,
        "signal": abar,
        "noise": np.sqrt(1 - abar),
        "sampled_signal": abar_s,
        "sampled_noise": np.sqrt(1 - abar_s),
        "sampled_snr": abar_s / (1 - abar_s),
    }


def sigma(alpha_bar: np.ndarray) -> np.ndarray:
    """The noise level σ = √((1-ᾱ)/ᾱ) (Karras et al. 2022); `diffusion.alpha_bar_from_sigma`
    inverts it."""
    return np.sqrt((1 - alpha_bar) / alpha_bar)


def noise_schedule(
    *sources: Any,
    steps: int | Sequence[int | None] | None = None,
    labels: Sequence[str] | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """Plot ᾱ_t, σ_t (log) and SNR(t) (log) for one or more runs / pipelines / schedulers.

    Each source is a line; its sampled timesteps are dots on it. A source may also be
    a scheduler name ("euler", "dpm++", see `sdviz.schedulers`), built from the first
    source's schedule. `steps` sets the
    number of sampling steps (one value, or one per source); `labels` names the lines;
    `lang` the language of the texts ("en", "zh"; default `sdviz.language.course_language`).

    Example:
        >>> pipe = sdviz.load()
        >>> fig = sdviz.figures.noise_schedule(pipe)                      # its own scheduler
        >>> fig = sdviz.figures.noise_schedule(pipe, "euler", "dpm++", steps=[20, 20, 10])
    """
    lang = course_language(lang)
    curves = _curves_of(sources, steps, labels)
    flow = any(c["kind"] == "flow" for c in curves)  # then both kinds as x_t = a x0 + b eps
    with style(lang):
        fig = new_figure(
            fig,
            4 * WIDE,
            max(4.2, 3.0 + 0.3 * len(curves)) if flow else max(3.8, 2.6 + 0.3 * len(curves)),
            suptitle=T("flow_suptitle" if flow else "suptitle", lang),
        )
        axes = fig.subplots(1, 4)
        _draw_curves(axes, curves, labels, flow, lang)
        _draw_strip(axes[3], curves, axes[0].get_xlim(), labels if flow else None, lang)
        title = T("markers", lang) + shared_note(curves, labels, lang)
        if flow:
            notes = T("separator", lang).join(_flow_notes(curves, labels, lang))
            title += T("starts", lang, notes=notes)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, names, loc="outside lower center", ncols=min(len(curves), 3), title=title
        )
    return fig


def _curves_of(sources: tuple, steps: Any, labels: Sequence[str] | None) -> list[dict]:
    """`schedule_curves` of each source, scheduler names built from the first real one."""
    if not sources:
        raise ValueError("Pass at least one run, pipeline or scheduler.")
    per_source = list(steps) if isinstance(steps, (list, tuple)) else [steps] * len(sources)
    if len(per_source) != len(sources):
        raise ValueError(f"Got {len(per_source)} step counts for {len(sources)} sources.")
    if labels is not None and len(labels) != len(sources):
        raise ValueError(f"Got {len(labels)} labels for {len(sources)} sources.")
    resolved = list(sources)
    if any(isinstance(s, str) for s in sources):
        base = next((s for s in sources if not isinstance(s, str)), None)
        if base is None:
            raise ValueError(
                "Scheduler names need a model's schedule: pass a run, pipeline or scheduler "
                "first, e.g. noise_schedule(pipe, 'euler', 'dpm++')."
            )
        if isinstance(base, Mapping):
            config = base["scheduler.config"]
        else:
            config = getattr(getattr(base, "scheduler", base), "config", None)
        resolved = [make_scheduler(s, config) if isinstance(s, str) else s for s in sources]
    return [schedule_curves(s, n) for s, n in zip(resolved, per_source, strict=True)]


def same_schedule(a: dict, b: dict) -> bool:
    """Whether two `schedule_curves` share their curve over all training timesteps (ᾱ_t;
    flow matching: σ_t = t/N, whatever the shift)."""
    key = "alpha_bar" if a["kind"] == "diffusion" else "sigma"
    return (
        a["kind"] == b["kind"]
        and a[key].shape == b[key].shape
        and np.allclose(a[key], b[key], rtol=1e-5, atol=1e-7)
    )


def shared_note(
    curves: list[dict], labels: Sequence[str] | None = None, lang: str | None = None
) -> str:
    """A legend line saying which sources share one curve ('' when none do): ᾱ_t for
    diffusion (the model's training schedule), σ_t = t/N for flow matching."""
    firsts = [
        next(j for j in range(i + 1) if same_schedule(curves[j], c)) for i, c in enumerate(curves)
    ]
    groups = [[i for i, f in enumerate(firsts) if f == g] for g in sorted(set(firsts))]
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return ""
    lang = course_language(lang)
    if len(groups) == 1 and curves[groups[0][0]]["kind"] == "diffusion":
        return T("shared_one", lang, n=len(groups[0]))
    named = [
        " = ".join(_short(curves[i], labels, i) for i in g)
        + (" (σ_t = t/N)" if curves[g[0]]["kind"] == "flow" else " (ᾱ_t)")
        for g in groups
    ]
    return T("shared_each", lang, groups=T("separator", lang).join(named))


def curve_label(c: dict, label: str | None = None, lang: str | None = None) -> str:
    """'DDIMScheduler (scaled_linear), 25 steps', or `label` with the step count."""
    lang = course_language(lang)
    if label:
        name = label
    elif c["kind"] == "flow":
        name = T("flow_name", lang, name=c["name"], shift=c["shift"])
    else:
        name = f"{c['name']} ({c['schedule']})".replace(" ()", "")
    return T("curve", lang, name=name, n=len(c["timesteps"]))


DIFFUSION_TITLES = ("alpha_bar", "sigma", "snr")  # keys of T: the three panels' titles
FLOW_TITLES = ("signal_kept", "noise_weight", "flow_snr")


def _panels(c: dict, flow: bool) -> tuple:
    """(curve, sampled) for each of the three panels: ᾱ, σ, SNR of a diffusion schedule;
    with `flow`, a², b and SNR of x_t = a·x0 + b·ε for either kind."""
    if flow:
        w = _weights(c)
        return tuple((w[k], w["sampled_" + k]) for k in ("signal", "noise", "snr"))
    abar_s = c["sampled_alpha_bar"]
    return (
        (c["alpha_bar"], abar_s),
        (c["sigma"], sigma(abar_s)),
        (c["snr"], abar_s / (1 - abar_s)),
    )


def _draw_curves(
    axes: Any,
    curves: list[dict],
    labels: Sequence[str] | None,
    flow: bool = False,
    lang: str = "en",
) -> None:
    """ᾱ_t, σ_t and SNR(t) per source on the first three axes, sampled timesteps marked
    (with `flow`: a_t², b_t and SNR, diffusion and flow matching alike).

    A curve equal to an earlier one is not drawn again (it would hide under it): its
    sampled timesteps are marked (hollow) on the earlier curve; the legend says so."""
    for i, c in enumerate(curves):
        color = LINE_COLORS[i % len(LINE_COLORS)]
        marker = MARKERS[i % len(MARKERS)]
        label = curve_label(c, labels[i] if labels else None, lang)
        first = next(j for j in range(i + 1) if same_schedule(curves[j], c))
        for ax, (y, y_s) in zip(axes[:3], _panels(c, flow), strict=True):
            if first == i:
                ax.plot(c["t"], y, color=color, linewidth=2, label=label)
            ax.plot(
                c["timesteps"],
                y_s,
                marker,
                color=color,
                markersize=6 if first != i else 5,
                fillstyle="none" if first != i else "full",
                label=(label if first != i else None),
            )
    if not flow:
        _mark_ends(axes[0], curves[0], lang)
    titles, ylabels = (
        (FLOW_TITLES, ("a_t²", "b_t", "SNR")) if flow else (DIFFUSION_TITLES, ("ᾱ_t", "σ_t", "SNR"))
    )
    for ax, title, ylabel in zip(axes[:3], titles, ylabels, strict=True):
        ax.set_title(T(title, lang))
        ax.set_xlabel(T("flow_timestep" if flow else "timestep", lang))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if not flow:
        axes[1].set_yscale("log")
    axes[2].set_yscale("log")


def _mark_ends(ax: Any, c: dict, lang: str = "en") -> None:
    """Where sampling starts and the last training timestep's ᾱ, printed on the ᾱ panel."""
    start = int(np.argmax(c["timesteps"]))
    t_start, abar_start = float(c["timesteps"][start]), float(c["sampled_alpha_bar"][start])
    last = len(c["alpha_bar"]) - 1
    ax.text(
        0.98,
        0.97,
        T("ends", lang, t=t_start, start=abar_start, last=last, end=float(c["alpha_bar"][-1])),
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
    )


def _draw_strip(
    strip: Any,
    curves: list[dict],
    xlim: tuple[float, float],
    labels: Sequence[str] | None = None,
    lang: str = "en",
) -> None:
    """One row of markers per source: the timesteps its sampler visits."""
    for i, c in enumerate(curves):
        row = np.full(len(c["timesteps"]), len(curves) - 1 - i)
        color, marker = LINE_COLORS[i % len(LINE_COLORS)], MARKERS[i % len(MARKERS)]
        strip.plot(c["timesteps"], row, marker, color=color, markersize=7)
    names = []
    for i, c in enumerate(curves):
        name = T("curve", lang, name=_short(c, labels, i), n=len(c["timesteps"]))
        if c["kind"] == "flow":
            name = T("strip_shift", lang, name=name, shift=c["shift"])
        twin = next((j for j in range(i) if _same_steps(curves[j], c)), None)
        if twin is not None:
            name = T("same_t", lang, name=name, twin=_short(curves[twin], labels, twin))
        names.append(name)
    strip.set_title(T("strip_title", lang))
    strip.set_xlabel(T("timestep", lang))
    strip.set_yticks(range(len(curves)), list(reversed(names)))
    strip.set_ylim(-0.7, len(curves) - 0.3)
    strip.set_xlim(xlim)
    strip.grid(axis="x", alpha=0.3)


def _same_steps(a: dict, b: dict) -> bool:
    """Whether two samplers visit the same timesteps."""
    return a["timesteps"].shape == b["timesteps"].shape and np.allclose(
        a["timesteps"], b["timesteps"]
    )


def _short(c: dict, labels: Sequence[str] | None, i: int) -> str:
    """A source's name in notes: its label, else its scheduler without 'Scheduler'."""
    return labels[i] if labels else c["name"].removesuffix("Scheduler")


def _flow_notes(curves: list[dict], labels: Sequence[str] | None, lang: str = "en") -> list[str]:
    """Where each kind starts: flow at σ=1 (pure noise, SNR 0), diffusion at ᾱ > 0."""
    lines = []
    for i, c in enumerate(curves):
        start = int(np.argmax(c["timesteps"]))
        if c["kind"] == "flow":
            sigma_start = c["sampled_sigma"][start : start + 1]
            lines.append(
                T(
                    "flow_note",
                    lang,
                    name=_short(c, labels, i),
                    sigma=sigma_start[0],
                    snr=flow_snr(sigma_start)[0],
                    shift=c["shift"],
                )
            )
        else:
            lines.append(
                T(
                    "diffusion_note",
                    lang,
                    name=_short(c, labels, i),
                    t=c["timesteps"][start],
                    abar=c["sampled_alpha_bar"][start],
                )
            )
    return lines
