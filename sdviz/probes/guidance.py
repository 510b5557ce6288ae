"""What classifier-free guidance measurably buys a model, and what it costs, as shipped.

Classifier-free guidance (Ho & Salimans 2022) pushes each denoising step along
ε_text − ε_uncond, g times. `benchmarks/guidance_sweep.py` generates the same prompts
and seeds at g = 1 … 15 and scores every image from its pixels: how often the prompt
was followed (one object, two objects, left/right placement, colour-shape pairs never
seen in training) and how far the drawing strays from ShapesWorld's (colours off the
palette, stray specks, extra objects, edge sharpness). It writes the result into the
model folder as `guidance.json`; `measured_guidance` reads it back as a record that
`sdviz.figures.guidance_benefit` draws and a lesson prints, without re-running the
benchmark's ~1,000 images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..language import Texts, course_language

GUIDANCE_FILE = "guidance.json"  # beside model_index.json, written by the benchmark
BENCHMARK = "benchmarks/guidance_sweep.py"
# record keys -> what a student reads (column headers say what each number means)
ACCURACY_NAMES = {
    "one_object": "one object right (%)",
    "two_objects": "two objects right (%)",
    "placement": "left/right right (%)",
    "held_out_pairs": "unseen colour-shape pair right (%)",
}
QUALITY_NAMES = {
    "palette_error": "colour off palette (RGB units)",
    "speckle": "stray specks (% of pixels)",
    "extra_objects": "extra objects per image",
    "edge_sharpness": "edge sharpness (1/px)",
}
ZH_NAMES = {  # the same headers in Chinese (`sdviz.language`)
    "one_object": "一个物体画对（%）",
    "two_objects": "两个物体画对（%）",
    "placement": "左右位置画对（%）",
    "held_out_pairs": "没见过的颜色-形状组合画对（%）",
    "palette_error": "偏离调色板的颜色（RGB 单位）",
    "speckle": "杂点（像素的 %）",
    "extra_objects": "每张图像多出的物体",
    "edge_sharpness": "边缘锐度（1/像素）",
}
T = Texts(
    __name__,
    {
        "g": ("guidance g", "引导系数 g"),
        "images": ("images", "图像"),
        "real": ("real ShapesWorld", "真实的 ShapesWorld 图像"),
        "real_vae": ("real, through the VAE", "真实图像，经过 VAE"),
        "recommendation": ("recommended g = {g}: {rule}", "推荐的引导系数 g = {g}：{rule}"),
        "rule": (
            "of the scales whose share of prompts followed ({n} verdicts: one object, unseen "
            "pairs, two objects placed) is within one paired standard error of the best "
            "({best_share:.1f}% at g = {best_g}) — {near} — the one whose colours stray least "
            "from ShapesWorld's palette ({palette:.1f} RGB units at g = {g})",
            "在遵循提示词的比例（{n} 个判定：一个物体、没见过的颜色-形状组合、两个物体且位置正确）"
            "与最好的那个（g = {best_g} 时 {best_share:.1f}%）相差不超过一个配对标准误差的"
            "引导系数中（{near}），选颜色偏离 ShapesWorld 调色板最少的那个"
            "（g = {g} 时 {palette:.1f} 个 RGB 单位）",
        ),
    }
    | {key: (english, ZH_NAMES[key]) for key, english in (ACCURACY_NAMES | QUALITY_NAMES).items()},
)


def rule_sentence(facts: dict[str, Any], lang: str | None = None) -> str:
    """The recommendation rule of `benchmarks/guidance_sweep.py`, in words, from its facts
    (`n` verdicts per scale, the `best` scale `g` and its `share` of prompts followed, the
    scales `near` it, the recommended `g` and its `palette_error`), in `lang` (default:
    the course language). The benchmark writes the English one into guidance.json."""
    return T(
        "rule",
        course_language(lang),
        n=facts["n"],
        best_share=facts["best_share"],
        best_g=f"{facts['best_g']:g}",
        near=", ".join(f"{x:g}" for x in facts["near"]),
        palette=facts["palette_error"],
        g=f"{facts['g']:g}",
    )


@dataclass(frozen=True)
class MeasuredGuidance:
    """One model's guidance sweep: per scale g, prompt-following accuracy (%) per task and
    image-quality statistics; the same statistics on real ShapesWorld images
    (`reference`) and on their VAE reconstructions (`reference_vae`, what the decoder
    alone costs); the scale the data recommend, by `rule`; `n` images per task; and
    `example`, a prompt and seed whose image `followed` the prompt or not at each scale."""

    scales: list[float]
    accuracy: dict[str, list[float]]
    quality: dict[str, list[float]]
    reference: dict[str, float]
    reference_vae: dict[str, float]
    recommended: float
    rule: str
    n: dict[str, int]
    steps: int
    example: dict[str, Any]
    held_out_example: dict[str, Any]
    source: str
    rule_facts: dict[str, Any] = field(default_factory=dict)  # what `rule` says, as numbers

    def recommendation(self, lang: str | None = None) -> str:
        """ "recommended g = 2: of the scales whose share …": the recommended scale and the
        rule that chose it, in `lang` (default: the course language; a guidance.json
        written before the rule's facts were kept says its rule in English)."""
        lang = course_language(lang)
        rule = rule_sentence(self.rule_facts, lang) if self.rule_facts else self.rule
        return T("recommendation", lang, g=f"{self.recommended:g}", rule=rule)

    def columns(self, part: str = "accuracy", lang: str | None = None) -> dict[str, list[float]]:
        """One `part` of the table ("accuracy" or "quality"), a column per measure (headers
        say what the numbers mean, in `lang`, default the course language), a row per
        scale: for `sdviz.course.table`."""
        names = {"accuracy": ACCURACY_NAMES, "quality": QUALITY_NAMES}
        if part not in names:
            raise ValueError(f"part is 'accuracy' or 'quality', not {part!r}.")
        lang = course_language(lang)
        values = self.accuracy if part == "accuracy" else self.quality
        cols: dict[str, list[float]] = {T("g", lang): list(self.scales)}
        return cols | {T(k, lang): v for k, v in values.items() if k in names[part]}

    def reference_columns(self, lang: str | None = None) -> dict[str, list[float]]:
        """The quality statistics of real ShapesWorld images, and of the same through the
        VAE (what decoding alone costs), in `columns("quality")`'s units and `lang`."""
        lang = course_language(lang)
        rows = {T("images", lang): [T("real", lang), T("real_vae", lang)]}
        return rows | {
            T(k, lang): [v, self.reference_vae.get(k, float("nan"))]
            for k, v in self.reference.items()
            if k in QUALITY_NAMES
        }

    def at(self, g: float) -> dict[str, float]:
        """Every measure at scale `g` (one of `scales`)."""
        if g not in self.scales:
            raise ValueError(f"g = {g:g} was not measured; the sweep has {self.scales}.")
        i = self.scales.index(g)
        return {k: v[i] for k, v in (self.accuracy | self.quality).items()}


def _folder(model: Any) -> Path:
    from ..pipeline import EMBEDDED_MODEL

    if model is None:
        return Path(EMBEDDED_MODEL)
    if isinstance(model, str | os.PathLike):
        return Path(model)
    folder = getattr(model, "config", {}).get("_name_or_path") or getattr(model, "name_or_path", "")
    if not folder:
        raise FileNotFoundError(
            "This pipeline was built in code, not loaded from a folder, so no guidance "
            f"measurements come with it. Run `python {BENCHMARK} --model <folder> --json "
            f"<folder>/{GUIDANCE_FILE}` on a saved copy."
        )
    return Path(folder)


def measured_guidance(model: Any = None) -> MeasuredGuidance:
    """The guidance sweep shipped with a model: None (the embedded sdviz-mini), a pipeline
    loaded from a folder, a folder, or the path of a `guidance.json` itself.

    Example:
        >>> measured = sdviz.probes.measured_guidance()
        >>> measured.recommended, measured.at(1.0)["two_objects"]
    """
    path = _folder(model)
    path = path if path.suffix == ".json" else path / GUIDANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No guidance measurements at {path}. They come from the benchmark, which "
            f"generates ~1,000 images (about 10 CPU-minutes for sdviz-mini): "
            f"`python {BENCHMARK} --model <folder> --json <folder>/{GUIDANCE_FILE}`. "
            "The embedded sdviz-mini ships its own: measured_guidance() with no argument."
        )
    data = json.loads(path.read_text())
    try:
        return MeasuredGuidance(
            scales=[float(g) for g in data["scales"]],
            accuracy={k: [float(x) for x in v] for k, v in data["accuracy"].items()},
            quality={k: [float(x) for x in v] for k, v in data["quality"].items()},
            reference={k: float(v) for k, v in data["reference"].items()},
            reference_vae={k: float(v) for k, v in data.get("reference_vae", {}).items()},
            recommended=float(data["recommended"]["guidance_scale"]),
            rule=str(data["recommended"]["rule"]),
            rule_facts=dict(data["recommended"].get("facts", {})),
            n={k: int(v) for k, v in data["n"].items()},
            steps=int(data["steps"]),
            example=dict(data.get("example", {})),
            held_out_example=dict(data.get("held_out_example", {})),
            source=str(path),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{path} is not a guidance sweep written by {BENCHMARK} (missing or bad {e}); "
            "re-run the benchmark with --json to rewrite it."
        ) from None
