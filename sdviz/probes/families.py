"""The four families side by side (lesson 10): SD 1.x, SDXL, SD3 and Flux, traced alike.

`trace_families(pipe, prompt)` traces one generation per family: the loaded pipeline
in its own family's place (sdviz-mini, or a real SDXL / SD3 / Flux folder), and a tiny
random pipeline built in code (`sdviz.builder`) for every other family (sdviz-mini for SD 1.x when another family is
loaded) — random weights, so their pictures are noise; what they show is the structure and the shapes
of each family's record. `families_table` turns the published configs of
`sdviz.architectures` into rows (facts) by columns (models), `text_encoders_table`
lists every text encoder, and `records_table` says which records each traced family
adds: several token lists (SDXL: Podell et al. 2023), a pooled vector and size ids,
T5's tokens joined in one sequence with joint attention (SD3: Esser et al. 2024),
velocity under flow matching (Liu et al. 2022; Lipman et al. 2023), and one denoiser
call per step with the guidance scale embedded (Flux: guidance distillation, Meng et
al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..architectures import ARCHITECTURES, architecture_facts, comparison
from ..builder import TINY_RESOLUTION, tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sdxl_pipeline
from ..language import Texts, course_language
from ..pipeline import FAMILY_NAMES, family, load
from ..tracing import generate

TINY_BUILDERS = {  # family -> the tiny random pipeline built in code
    "stable-diffusion-xl": tiny_sdxl_pipeline,
    "stable-diffusion-3": tiny_sd3_pipeline,
    "flux": tiny_flux_pipeline,
}
MISSING = "–"  # a fact a family does not have
PREDICTIONS = {"epsilon": "ε (the noise)", "v_prediction": "v (SD 2's v)", "flow": "v (velocity)"}

# the tables' headers and words in each course language (`sdviz.language`); the English
# templates are what the tables always printed
T = Texts(
    __name__,
    {
        # weights of a traced family
        "loaded": ("loaded", "已加载"),
        "tiny, random": ("tiny, random", "微型，随机权重"),
        "label": ("{family} ({weights})", "{family}（{weights}）"),
        # families_table
        "fact": ("fact (unit)", "事实（单位）"),
        # text_encoders_table
        "model": ("model", "模型"),
        "component": ("component", "组件"),
        "encoder": ("encoder", "编码器"),
        "parameters": ("parameters (M)", "参数（百万）"),
        "width": ("width d", "宽度 d"),
        "tokens": ("tokens L", "标记数 L"),
        "role": ("what the denoiser takes from it", "去噪网络从中取用什么"),
        "role.token vectors": ("token vectors", "标记向量"),
        "role.token vectors (concatenated)": (
            "token vectors (concatenated)",
            "标记向量（拼接）",
        ),
        "role.token vectors (concatenated) + pooled": (
            "token vectors (concatenated) + pooled",
            "标记向量（拼接）+ 池化向量",
        ),
        "role.pooled only": ("pooled only", "只取池化向量"),
        # records_table
        "record": ("record", "记录"),
        "weights": ("weights", "权重"),
        "token_lists": ("token lists (L each)", "标记列表（每个 L 个）"),
        "sequence": ("text sequence read (L, d)", "读取的文本序列（L, d）"),
        "pooled": ("pooled vector (d,)", "池化向量（d,）"),
        "time_ids": ("time_ids (size, crop)", "time_ids（尺寸、裁剪）"),
        "latents": ("latents (steps+1, c, h, w)", "潜在表示（步数+1, c, h, w）"),
        "prediction": ("prediction", "预测"),
        "epsilon": ("ε (the noise)", "ε（噪声）"),
        "v_prediction": ("v (SD 2's v)", "v（SD 2 的 v）"),
        "flow": ("v (velocity)", "v（速度）"),
        "schedule": ("per-step schedule", "每步的调度值"),
        "sigma": ("step_sigma (flow)", "step_sigma（流匹配）"),
        "branches": ("denoiser branches per step", "每步的去噪网络分支"),
        "two_branches": ("2 (uncond + text)", "2（无条件 + 文本）"),
        "one_branch": ("1 (text)", "1（文本）"),
        "guidance": ("guidance g", "引导系数 g"),
        "embedded": ("{g}, embedded (distilled)", "{g}，嵌入输入（引导蒸馏）"),
        "cfg": ("{g}, CFG", "{g}，无分类器引导"),
        "maps": ("attention.maps (S, L, h, w)", "attention.maps（S, L, h, w）"),
    },
)


@dataclass(frozen=True, eq=False)
class Families:
    """One traced generation per family, and whether its pipeline is a tiny random one."""

    pipes: dict[str, Any]  # family -> pipeline
    runs: dict[str, Any]  # family -> Run
    tiny: dict[str, bool]  # family -> built in code with random weights (pictures are noise)
    weights: dict[str, str]  # family -> 'loaded', 'tiny, random' or 'sdviz-mini' (SD's stand-in)

    def __getitem__(self, name: str) -> Any:
        return self.runs[name]

    def labels(self, lang: str | None = None) -> list[str]:
        """'SDXL (tiny, random)' or 'SD 1.x / 2.x (loaded)', one per family, in `lang`
        (default: the course language)."""
        lang = course_language(lang)
        return [
            T("label", lang, family=FAMILY_NAMES[n], weights=_weights(self.weights[n], lang))
            for n in self.runs
        ]

    def images(self) -> list[Any]:
        """Each family's final image (3, H, W), in the order of `labels`."""
        return [run["vae.image"] for run in self.runs.values()]


SD_STAND_IN = "sdviz-mini"  # embedded and trained  # SD's place when another family is loaded


def _weights(weights: str, lang: str) -> str:
    return T.get(weights, lang, weights)  # sdviz-mini: a name


def family_pipelines(pipe: Any, seed: int = 0) -> dict[str, Any]:
    """`pipe` in its family's place, a tiny random pipeline (seeded) for every other family
    but SD 1.x's, where the embedded sdviz-mini stands in (trained, and as small)."""
    own = family(pipe)
    pipes = {own: pipe}
    if own != "stable-diffusion":
        pipes["stable-diffusion"] = load(None, device="cpu")
        pipes["stable-diffusion"].set_progress_bar_config(disable=True)
    for name, build in TINY_BUILDERS.items():
        if name != own:
            pipes[name] = build(seed)
            pipes[name].set_progress_bar_config(disable=True)
    order = list(FAMILY_NAMES)
    return dict(sorted(pipes.items(), key=lambda item: order.index(item[0])))


def trace_families(pipe: Any, prompt: str, *, steps: int, seed: int = 0) -> Families:
    """Trace `prompt` once per family: `pipe` at its native size with its recommended
    guidance, the tiny ones at `sdviz.builder.TINY_RESOLUTION` with their pipeline class's
    default guidance (SDXL 5, SD3 7, Flux 3.5), all with `steps` steps and `seed`."""
    own = family(pipe)
    pipes = family_pipelines(pipe, seed)
    runs, tiny, weights = {}, {}, {}
    for name, p in pipes.items():
        tiny[name] = name in TINY_BUILDERS and name != own
        weights[name] = "tiny, random" if tiny[name] else "loaded"
        if name != own and not tiny[name]:
            weights[name] = SD_STAND_IN
        side = TINY_RESOLUTION if tiny[name] else None
        runs[name] = generate(p, prompt, steps=steps, seed=seed, height=side, width=side)
    return Families(pipes, runs, tiny, weights)


def families_table(
    names: tuple[str, ...] = tuple(ARCHITECTURES), lang: str | None = None
) -> dict[str, list[Any]]:
    """`sdviz.architectures.comparison` turned on its side: one row per fact, one column per
    published model (for `sdviz.course.table`), in `lang` (default: the course language)."""
    lang = course_language(lang)
    columns = comparison(names, lang=lang)
    models = columns.pop(next(iter(columns)))  # the first column names the models
    table: dict[str, list[Any]] = {T("fact", lang): list(columns)}
    for i, model in enumerate(models):
        table[model] = [_cell(values[i]) for values in columns.values()]
    return table


def _cell(value: Any) -> Any:
    if isinstance(value, tuple):
        return "×".join(str(v) for v in value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return value


def text_encoders_table(
    names: tuple[str, ...] = tuple(ARCHITECTURES), lang: str | None = None
) -> dict[str, list[Any]]:
    """Every text encoder of the published models: its parameters, width, tokens, role;
    in `lang` (default: the course language)."""
    lang = course_language(lang)
    rows = [(architecture_facts(n), t) for n in names for t in architecture_facts(n).text_encoders]
    return {
        T("model", lang): [f.name for f, _ in rows],
        T("component", lang): [t.component for _, t in rows],
        T("encoder", lang): [t.label for _, t in rows],
        T("parameters", lang): [t.parameters / 1e6 for _, t in rows],
        T("width", lang): [t.width for _, t in rows],
        T("tokens", lang): [t.tokens for _, t in rows],
        T("role", lang): [T.get(f"role.{t.role}", lang, t.role) for _, t in rows],
    }


def _lengths(run: Any) -> str:
    keys = ("tokenizer", "tokenizer_2", "tokenizer_3")
    return " + ".join(str(len(run[f"{k}.tokens"])) for k in keys if f"{k}.tokens" in run)


def _sequence(run: Any) -> tuple[int, ...]:
    for key in ("pipeline.prompt_embeds", "text_encoder.prompt_embeds"):
        if key in run and not (run["pipeline.family"] == "flux"):
            return tuple(run[key].shape)
    return tuple(run["text_encoder_2.prompt_embeds"].shape)  # Flux: T5's tokens only


def records_table(families: Families, lang: str | None = None) -> dict[str, list[Any]]:
    """What each traced family records, one column per family: token lists, the text
    sequence the denoiser reads, pooled vector, size ids, latent, prediction, schedule per
    step, denoiser branches per step, guidance, attention maps; in `lang` (default: the
    course language)."""
    lang = course_language(lang)
    runs = families.runs
    names = list(runs)

    def get(key: str, show=lambda v: tuple(v.shape)) -> list[Any]:
        return [show(runs[n][key]) if key in runs[n] else MISSING for n in names]

    def prediction(run: Any) -> str:
        kind = str(run["denoiser.prediction_type"])
        return T.get(kind, lang, kind) if kind in PREDICTIONS else kind

    def guidance(run: Any) -> str:
        if "denoiser.guidance" in run:
            return T("embedded", lang, g=f"{float(run['denoiser.guidance']):g}")
        return T("cfg", lang, g=f"{float(run['pipeline.guidance_scale']):g}")

    rows = {
        T("weights", lang): [_weights(families.weights[n], lang) for n in names],
        T("token_lists", lang): [_lengths(runs[n]) for n in names],
        T("sequence", lang): [_sequence(runs[n]) for n in names],
        T("pooled", lang): get("pipeline.pooled_prompt_embeds"),
        T("time_ids", lang): get("pipeline.add_time_ids", lambda v: tuple(v.int().tolist())),
        T("latents", lang): get("denoiser.latents"),
        T("prediction", lang): [prediction(runs[n]) for n in names],
        T("schedule", lang): [
            T("sigma", lang) if "scheduler.shift" in runs[n] else "step_alpha_bar" for n in names
        ],
        T("branches", lang): [
            T(
                "two_branches" if runs[n]["pipeline.do_classifier_free_guidance"] else "one_branch",
                lang,
            )
            for n in names
        ],
        T("guidance", lang): [guidance(runs[n]) for n in names],
        T("maps", lang): get("attention.maps"),
    }
    table: dict[str, list[Any]] = {T("record", lang): list(rows)}
    for i, n in enumerate(names):
        table[FAMILY_NAMES[n]] = [values[i] for values in rows.values()]
    return table


def embedded_twins(device: str = "auto") -> tuple[Any, Any]:
    """(sdviz-mini, sdviz-mini-flow): the two embedded models, trained on the same world with
    the same VAE and CLIP; only the denoiser differs (a UNet with DDPM, an SD3 transformer
    with rectified flow)."""
    from ..pipeline import load

    return load("sdviz-mini", device=device), load("sdviz-mini-flow", device=device)
