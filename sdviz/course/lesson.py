"""A lesson's setup: `setup(model)`, the one call of every lesson's setup cell, and the
`Lesson` it returns (the pipeline and the settings every cell uses).

`setup` loads the pipeline (sdviz-mini, or `SDVIZ_MODEL`, a hub id or a local folder),
reads the test switch `SDVIZ_SMOKE`, and takes steps and guidance from what the model
recommends (`sdviz.pipeline.recommended`). It also settles the course's language
(`sdviz.language.course_language`: $SDVIZ_LANG, else `sdviz-lang.txt` in the lesson's
folder, which Jupyter makes the kernel's working folder, else English): `Lesson.lang`, in
which the setup is printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..language import Texts, course_language

DEFAULT_PROMPT = "a red circle to the left of a blue square"
SMOKE_STEPS = 8  # denoising steps in smoke mode (SDVIZ_SMOKE=1: the tests' short run)
EMBEDDED_LABEL = "sdviz-mini (embedded in sdviz)"

T = Texts(
    __name__,
    {
        "head": (
            "Lesson setup: {model}, a {pipeline} on {device} ({dtype})",
            "课程设置：{model}，一个 {pipeline}，运行在 {device} 上（{dtype}）",
        ),
        "embedded": ("sdviz-mini (embedded in sdviz)", "sdviz-mini（内置于 sdviz）"),
        "smoke": ("smoke mode, the tests' short run", "冒烟模式，测试用的短运行"),
        "recommended": ("the model's recommendation", "模型的推荐值"),
        "steps": ("denoising steps per image ({mode})", "每张图像的去噪步数（{mode}）"),
        "distilled": (
            "guidance scale, an input of the guidance-distilled model (lesson 10)",
            "引导系数，引导蒸馏模型的一个输入（第 10 课）",
        ),
        "cfg": (
            "classifier-free guidance scale (lesson 7)",
            "无分类器引导的引导系数（第 7 课）",
        ),
        "guidance": ("{kind}, from {source}", "{kind}，来源：{source}"),
        "sdviz_json": ("the model folder's sdviz.json", "模型文件夹中的 sdviz.json"),
        "seed": (
            "seed of the starting noise: same seed, same image",
            "初始噪声的随机种子：随机种子相同，图像就相同",
        ),
        "threads": (
            "torch CPU threads (benchmarks/threads.py says why)",
            "torch 的 CPU 线程数（原因见基准测试 benchmarks/threads.py）",
        ),
    },
)


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
    lang: str = "en"  # the course's language (sdviz.language.LANGUAGES), of this printout too

    def pick(self, full: Any, smoke: Any) -> Any:
        """`full` for a learner, `smoke` in smoke mode (say, how long a live training runs)."""
        return smoke if self.smoke else full

    def __repr__(self) -> str:
        pipe, lang = self.pipe, self.lang
        mode = T("smoke" if self.smoke else "recommended", lang)
        transformer = getattr(pipe, "transformer", None)  # Flux dev embeds its guidance
        distilled = bool(getattr(getattr(transformer, "config", None), "guidance_embeds", False))
        kind = T("distilled" if distilled else "cfg", lang)
        source = self.guidance_source
        source = T("sdviz_json", lang) if source == T("sdviz_json", "en") else source
        rows = [  # the names are the Lesson's attributes, as a lesson's code spells them
            ("steps", str(self.steps), T("steps", lang, mode=mode)),
            ("guidance", str(self.guidance), T("guidance", lang, kind=kind, source=source)),
            ("seed", str(self.seed), T("seed", lang)),
            ("threads", str(self.threads), T("threads", lang)),
            ("prompt", repr(self.prompt), ""),
        ]
        model = T("embedded", lang) if self.model == EMBEDDED_LABEL else self.model
        head = T(
            "head", lang, model=model, pipeline=type(pipe).__name__, device=pipe.device,
            dtype=pipe.dtype,
        )  # fmt: skip
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
    lang: str | None = None,
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
    `lang`: None for the course's language (`SDVIZ_LANG` in `environ`, else the
    `sdviz-lang.txt` of the kernel's folder, lessons/zh/ for the Chinese lessons, else "en").
    """
    from ..builder import count_parameters
    from ..pipeline import denoiser, load, recommended
    from ..threads import configure_threads

    env = os.environ if environ is None else environ
    if model is None:
        model = env.get("SDVIZ_MODEL") or None
    smoke = env.get("SDVIZ_SMOKE") == "1"
    lang = course_language(lang if lang is not None else env.get("SDVIZ_LANG") or None)
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
        lang=lang,
    )
