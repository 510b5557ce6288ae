"""A lesson's setup: `setup(model)`, the one call of every lesson's setup cell, and the
`Lesson` it returns (the pipeline and the settings every cell uses).

`setup` loads the pipeline (sdviz-mini, or `SDVIZ_MODEL`, a hub id or a local folder),
reads the test switch `SDVIZ_SMOKE`, and takes steps and guidance from what the model
recommends (`sdviz.pipeline.recommended`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_PROMPT = "a red circle to the left of a blue square"
SMOKE_STEPS = 8  # denoising steps in smoke mode (SDVIZ_SMOKE=1: the tests' short run)
EMBEDDED_LABEL = "sdviz-mini (embedded in sdviz)"


@dataclass(frozen=True, eq=False)
class Lesson:
    """What a lesson's cells use: the pipeline and the settings of its generations."""

    pipe: Any
    model: str  # what was loaded: EMBEDDED_LABEL, a hub id or a folder
    steps: int  # denoising steps per generation
    seed: int  # seed of the starting noise
    prompt: str
    guidance: float  # classifier-free guidance scale the model recommends
    guidance_source: str  # where that recommendation was read
    smoke: bool  # SDVIZ_SMOKE=1: shorter loops and training runs, the same story
    threads: int  # torch CPU threads (sdviz.threads: one for a small model such as sdviz-mini)

    def pick(self, full: Any, smoke: Any) -> Any:
        """`full` for a learner, `smoke` in smoke mode (say, how long a live training runs)."""
        return smoke if self.smoke else full

    def __repr__(self) -> str:
        pipe = self.pipe
        mode = "smoke mode, the tests' short run" if self.smoke else "the model's recommendation"
        transformer = getattr(pipe, "transformer", None)  # Flux dev embeds its guidance
        distilled = bool(getattr(getattr(transformer, "config", None), "guidance_embeds", False))
        kind = (
            "guidance scale, an input of the guidance-distilled model (lesson 10)"
            if distilled
            else "classifier-free guidance scale (lesson 7)"
        )
        rows = [
            ("steps", str(self.steps), f"denoising steps per image ({mode})"),
            (
                "guidance",
                str(self.guidance),
                f"{kind}, from {self.guidance_source}",
            ),
            ("seed", str(self.seed), "seed of the starting noise: same seed, same image"),
            ("threads", str(self.threads), "torch CPU threads (benchmarks/threads.py says why)"),
            ("prompt", repr(self.prompt), ""),
        ]
        head = (
            f"Lesson setup: {self.model}, a {type(pipe).__name__} on {pipe.device} ({pipe.dtype})"
        )
        width = max(len(v) for _, v, _ in rows[:-1])
        lines = [f"  {k:<8}  {v:<{width}}  {m}".rstrip() for k, v, m in rows]
        return "\n".join([head, *lines])


def _guidance_source(source: str) -> str:
    return "the model folder's sdviz.json" if source.endswith("sdviz.json") else source


def setup(
    model: str | os.PathLike | None = None,
    *,
    prompt: str = DEFAULT_PROMPT,
    seed: int = 0,
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> Lesson:
    """Load the lesson's pipeline and settings: the one call of a lesson's setup cell.

    `model`: None for `SDVIZ_MODEL` when set, else the embedded sdviz-mini (offline, CPU,
    about a second per image); a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5"
    (online once, ~4 GB, a CUDA GPU advised: sdviz loads it in float16 there) or a
    local diffusers folder. `SDVIZ_SMOKE=1` (set by the tests) makes `steps` short and
    `Lesson.pick` choose its smoke value. Steps and guidance are the model's
    recommendation (`sdviz.pipeline.recommended`): 2.0 for sdviz-mini, also a copy of
    it in a folder of your own, 7.5 for models that say nothing. On the CPU, torch's
    threads are set by `sdviz.threads.configure_threads` (one for a small model: torch's
    default threads ran sdviz-mini 10x slower on a busy 2-core machine).
    """
    from ..builder import count_parameters
    from ..pipeline import denoiser, load, recommended
    from ..threads import configure_threads

    env = os.environ if environ is None else environ
    if model is None:
        model = env.get("SDVIZ_MODEL") or None
    smoke = env.get("SDVIZ_SMOKE") == "1"
    pipe = load(model, device=device)
    pipe.set_progress_bar_config(disable=True)  # no progress bars in the lessons
    advice = recommended(pipe)
    threads = (
        configure_threads(None, unet_parameters=count_parameters(denoiser(pipe)))
        if pipe.device.type == "cpu"
        else torch.get_num_threads()
    )
    return Lesson(
        pipe=pipe,
        model=EMBEDDED_LABEL if model is None else os.fspath(model),
        steps=SMOKE_STEPS if smoke else advice.num_inference_steps,
        seed=seed,
        prompt=prompt,
        guidance=advice.guidance_scale,
        guidance_source=_guidance_source(advice.source),
        smoke=smoke,
        threads=threads,
    )
