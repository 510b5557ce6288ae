"""Path straightness: how far the predicted clean latent x̂0 moves while a sampler runs.

Rectified flow (Liu et al. 2022, "Flow straight and fast"; SD3: Esser et al. 2024) trains
the denoiser to predict the velocity of a straight line from the image to the noise,
x_σ = (1 − σ)·x0 + σ·ε. If the learned paths were perfectly straight, the velocity would
not change along them, the clean-image estimate x̂0 = x_σ − σ·v would be the same at every
step, and ONE Euler step would land on the final image. A DDPM-trained UNet (Ho et al.
2020) sampled with DDIM (Song et al. 2021) makes the same x̂0 estimate each step
(x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ). So, model-agnostically, for one generation of S steps with
estimates x̂0_0 … x̂0_{S−1} (the trace key `denoiser.pred_original_sample`):

    distance to final  d_s = ‖x̂0_s − x̂0_{S−1}‖ / ‖x̂0_{S−1}‖      (S values, the last 0)
    step move          m_s = ‖x̂0_s − x̂0_{s−1}‖ / ‖x̂0_{S−1}‖      (S − 1 values)
    path length        P   = Σ_s m_s          (0: x̂0 never moved, a perfectly straight path)
    first guess        d_0                    (how far the one-step answer is from the last)
    endpoint gap       ‖x̂0_final(S) − x̂0_final(S_max)‖ / ‖x̂0_final(S_max)‖: how far an S-step
                       result lands from the same prompt and seed sampled with the most steps

Liu et al. measure straightness as E‖(x1 − x0) − v(x_t, t)‖² along the path; with
x̂0 = x_t − σ·v that is the same statement about x̂0 standing still, and it can be read
from any denoiser's trace, so a UNet and a transformer are compared on one scale. Both
samplers' last step runs at almost no noise (DDIM's t = 1, the flow's σ = 1/1000): x̂0
there is where the step before landed, so the last move is ~0 and a 2-step run has no
real move at all; compare the models at equal step counts, above 2.
`measure_straightness` runs the same prompts and seeds through several pipelines at several
step counts (each at its own recommended guidance) and keeps these numbers per run, and
the decoded x̂0 of one prompt for the figure (`sdviz.figures.path_straightness`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..language import Texts, course_language
from ..tracing import generate

# the table's headers in each course language (`sdviz.language`)
T = Texts(
    __name__,
    {
        "steps": ("steps", "步数"),
        "path": ("{label}: path length", "{label}：路径长度"),
        "first": ("{label}: first guess", "{label}：第一次猜测"),
        "gap": ("{label}: gap to {n} steps", "{label}：与 {n} 步结果的差距"),
    },
)

STEP_COUNTS = (2, 4, 8, 16, 25)  # the numbers of sampling steps compared by default
STRIP_STEPS = 8  # the step count whose x̂0 are decoded for the figure's strips
PROMPTS = (  # ShapesWorld prompts (the embedded models' world), one object and two
    ("a red circle to the left of a blue square", 0),
    ("a green triangle", 1),
    ("a yellow star to the right of a purple circle", 2),
    ("an orange square", 3),
)


def x0_path(x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance to final (S,), step moves (S − 1,)) of one run's x̂0 (S, c, h, w),
    both relative to the norm of the final x̂0 (see the module doc)."""
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x̂0 needs a step axis first: (steps, c, h, w), got {tuple(x0.shape)}.")
    flat = x0.detach().float().reshape(x0.shape[0], -1)  # (S, c*h*w)
    scale = flat[-1].norm().clamp_min(1e-12)
    distance = (flat - flat[-1]).norm(dim=-1) / scale
    moves = (flat[1:] - flat[:-1]).norm(dim=-1) / scale
    return distance, moves


@dataclass
class Straightness:
    """x̂0's path per model (label), step count S and run (prompt, seed).

    `distance[label][S]`: (runs, S) distance to the final x̂0; `moves[label][S]`:
    (runs, S − 1) step moves (both relative to the final x̂0's norm); `finals[label][S]`:
    (runs, c, h, w) the final x̂0 of each run; `strips[label]`:
    (strip_steps, 3, H, W) decoded x̂0 of `prompts[0]` in [0, 1]; `guidance[label]`: the
    guidance scale each model ran at.
    """

    labels: list[str]
    steps: list[int]
    prompts: list[tuple[str, int]]
    distance: dict[str, dict[int, torch.Tensor]]
    moves: dict[str, dict[int, torch.Tensor]]
    finals: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    guidance: dict[str, float] = field(default_factory=dict)
    strips: dict[str, torch.Tensor] = field(default_factory=dict)
    strip_steps: int | None = None

    def path_length(self, label: str, steps: int) -> torch.Tensor:
        """(runs,) total movement of x̂0, relative to the final x̂0's norm (0 = straight)."""
        return self.moves[label][steps].sum(-1)

    def first_guess(self, label: str, steps: int) -> torch.Tensor:
        """(runs,) how far the first step's x̂0 is from the final one (relative)."""
        return self.distance[label][steps][:, 0]

    def endpoint_gap(self, label: str, steps: int) -> torch.Tensor:
        """(runs,) how far the S-step result is from the result with the most steps
        (relative to the latter's norm; 0 at the most steps)."""
        ref = self.finals[label][max(self.steps)].flatten(1)
        gap = self.finals[label][steps].flatten(1) - ref
        return gap.norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-12)

    def table(self, lang: str | None = None) -> dict[str, list]:
        """Columns (for `sdviz.course.table` or a markdown table): one row per step count,
        the mean path length, first-guess distance and endpoint gap of each model; headers
        in `lang` (default: the course language)."""
        lang = course_language(lang)
        cols: dict[str, list] = {T("steps", lang): list(self.steps)}
        for label in self.labels:
            cols[T("path", lang, label=label)] = [
                float(self.path_length(label, s).mean()) for s in self.steps
            ]
            cols[T("first", lang, label=label)] = [
                float(self.first_guess(label, s).mean()) for s in self.steps
            ]
            cols[T("gap", lang, label=label, n=max(self.steps))] = [
                float(self.endpoint_gap(label, s).mean()) for s in self.steps
            ]
        return cols


def _check_steps(steps: Sequence[int]) -> list[int]:
    out = [int(s) for s in steps]
    if not out or min(out) < 1:
        raise ValueError(f"step counts must be positive integers, got {list(steps)}.")
    return out


@torch.no_grad()
def measure_straightness(
    pipes: Mapping[str, Any],
    prompts: Sequence[tuple[str, int]] = PROMPTS,
    steps: Sequence[int] = STEP_COUNTS,
    *,
    strip_steps: int | None = STRIP_STEPS,
    guidance: Mapping[str, float] | None = None,
) -> Straightness:
    """Generate every (prompt, seed) with every pipeline (label -> pipe) at every step count
    and measure x̂0's path (`x0_path`). Each pipeline runs at its own recommended guidance
    (`sdviz.pipeline.recommended`) unless `guidance` names one for its label. With
    `strip_steps` (default 8; None: no strips) the first prompt is also generated at that
    step count and its x̂0 decoded with each pipeline's VAE for the figure.

    Example:
        >>> rec = measure_straightness({"UNet": mini, "flow": flow}, steps=[2, 8, 25])
        >>> rec.path_length("flow", 25).mean()
    """
    from ..pipeline import recommended

    steps = _check_steps(steps)
    prompts = [(str(p), int(s)) for p, s in prompts]
    if not pipes or not prompts:
        raise ValueError("measure_straightness needs at least one pipeline and one (prompt, seed).")
    scales = {
        label: float((guidance or {}).get(label, recommended(pipe).guidance_scale))
        for label, pipe in pipes.items()
    }
    distance: dict[str, dict[int, torch.Tensor]] = {}
    moves: dict[str, dict[int, torch.Tensor]] = {}
    finals: dict[str, dict[int, torch.Tensor]] = {}
    strips: dict[str, torch.Tensor] = {}
    for label, pipe in pipes.items():
        distance[label], moves[label], finals[label] = {}, {}, {}
        for s in steps:
            x0s = [
                generate(
                    pipe, prompt, steps=s, seed=seed, guidance_scale=scales[label], attention=None
                )["denoiser.pred_original_sample"]
                for prompt, seed in prompts
            ]  # each (S, c, h, w)
            paths = [x0_path(x0) for x0 in x0s]
            distance[label][s] = torch.stack([d for d, _ in paths])  # (runs, S)
            moves[label][s] = torch.stack([m for _, m in paths])  # (runs, S - 1)
            finals[label][s] = torch.stack([x0[-1].float() for x0 in x0s])  # (runs, c, h, w)
        if strip_steps is not None:
            prompt, seed = prompts[0]
            run = generate(
                pipe,
                prompt,
                steps=strip_steps,
                seed=seed,
                guidance_scale=scales[label],
                attention=None,
            )
            strips[label] = run.decode(pipe, "pred_original_sample")  # (S, 3, H, W)
    return Straightness(
        labels=list(pipes),
        steps=steps,
        prompts=prompts,
        distance=distance,
        moves=moves,
        finals=finals,
        guidance=scales,
        strips=strips,
        strip_steps=strip_steps,
    )
