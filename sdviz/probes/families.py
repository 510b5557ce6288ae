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
from ..pipeline import FAMILY_NAMES, family, load
from ..tracing import generate

TINY_BUILDERS = {  # family -> the tiny random pipeline built in code
    "stable-diffusion-xl": tiny_sdxl_pipeline,
    "stable-diffusion-3": tiny_sd3_pipeline,
    "flux": tiny_flux_pipeline,
}
MISSING = "–"  # a fact a family does not have
PREDICTIONS = {"epsilon": "ε (the noise)", "v_prediction": "v (SD 2's v)", "flow": "v (velocity)"}


@dataclass(frozen=True, eq=False)
class Families:
    """One traced generation per family, and whether its pipeline is a tiny random one."""

    pipes: dict[str, Any]  # family -> pipeline
    runs: dict[str, Any]  # family -> Run
    tiny: dict[str, bool]  # family -> built in code with random weights (pictures are noise)
    weights: dict[str, str]  # family -> 'loaded', 'tiny, random' or 'sdviz-mini' (SD's stand-in)

    def __getitem__(self, name: str) -> Any:
        return self.runs[name]

    def labels(self) -> list[str]:
        """'SDXL (tiny, random)' or 'SD 1.x / 2.x (loaded)', one per family."""
        return [f"{FAMILY_NAMES[n]} ({self.weights[n]})" for n in self.runs]

    def images(self) -> list[Any]:
        """Each family's final image (3, H, W), in the order of `labels`."""
        return [run["vae.image"] for run in self.runs.values()]


SD_STAND_IN = "sdviz-mini"  # embedded and trained  # SD's place when another family is loaded


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


def families_table(names: tuple[str, ...] = tuple(ARCHITECTURES)) -> dict[str, list[Any]]:
    """`sdviz.architectures.comparison` turned on its side: one row per fact, one column per
    published model (for `sdviz.course.table`)."""
    columns = comparison(names)
    models = columns.pop("model")
    table: dict[str, list[Any]] = {"fact (unit)": list(columns)}
    for i, model in enumerate(models):
        table[model] = [_cell(values[i]) for values in columns.values()]
    return table


def _cell(value: Any) -> Any:
    if isinstance(value, tuple):
        return "×".join(str(v) for v in value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return value


def text_encoders_table(names: tuple[str, ...] = tuple(ARCHITECTURES)) -> dict[str, list[Any]]:
    """Every text encoder of the published models: its parameters, width, tokens, role."""
    rows = [(architecture_facts(n), t) for n in names for t in architecture_facts(n).text_encoders]
    return {
        "model": [f.name for f, _ in rows],
        "component": [t.component for _, t in rows],
        "encoder": [t.label for _, t in rows],
        "parameters (M)": [t.parameters / 1e6 for _, t in rows],
        "width d": [t.width for _, t in rows],
        "tokens L": [t.tokens for _, t in rows],
        "what the denoiser takes from it": [t.role for _, t in rows],
    }


def _lengths(run: Any) -> str:
    keys = ("tokenizer", "tokenizer_2", "tokenizer_3")
    return " + ".join(str(len(run[f"{k}.tokens"])) for k in keys if f"{k}.tokens" in run)


def _sequence(run: Any) -> tuple[int, ...]:
    for key in ("pipeline.prompt_embeds", "text_encoder.prompt_embeds"):
        if key in run and not (run["pipeline.family"] == "flux"):
            return tuple(run[key].shape)
    return tuple(run["text_encoder_2.prompt_embeds"].shape)  # Flux: T5's tokens only


def records_table(families: Families) -> dict[str, list[Any]]:
    """What each traced family records, one column per family: token lists, the text
    sequence the denoiser reads, pooled vector, size ids, latent, prediction, schedule per
    step, denoiser branches per step, guidance, attention maps."""
    runs = families.runs
    names = list(runs)

    def get(key: str, show=lambda v: tuple(v.shape)) -> list[Any]:
        return [show(runs[n][key]) if key in runs[n] else MISSING for n in names]

    branches = [
        "2 (uncond + text)" if runs[n]["pipeline.do_classifier_free_guidance"] else "1 (text)"
        for n in names
    ]
    guidance = [
        f"{float(runs[n]['denoiser.guidance']):g}, embedded (distilled)"
        if "denoiser.guidance" in runs[n]
        else f"{float(runs[n]['pipeline.guidance_scale']):g}, CFG"
        for n in names
    ]
    rows = {
        "weights": [families.weights[n] for n in names],
        "token lists (L each)": [_lengths(runs[n]) for n in names],
        "text sequence read (L, d)": [_sequence(runs[n]) for n in names],
        "pooled vector (d,)": get("pipeline.pooled_prompt_embeds"),
        "time_ids (size, crop)": get("pipeline.add_time_ids", lambda v: tuple(v.int().tolist())),
        "latents (steps+1, c, h, w)": get("denoiser.latents"),
        "prediction": [
            PREDICTIONS.get(
                str(runs[n]["denoiser.prediction_type"]), str(runs[n]["denoiser.prediction_type"])
            )
            for n in names
        ],
        "per-step schedule": [
            "step_sigma (flow)" if "scheduler.shift" in runs[n] else "step_alpha_bar" for n in names
        ],
        "denoiser branches per step": branches,
        "guidance g": guidance,
        "attention.maps (S, L, h, w)": get("attention.maps"),
    }
    table: dict[str, list[Any]] = {"record": list(rows)}
    for i, n in enumerate(names):
        table[FAMILY_NAMES[n]] = [values[i] for values in rows.values()]
    return table


def embedded_twins(device: str = "auto") -> tuple[Any, Any]:
    """(sdviz-mini, sdviz-mini-flow): the two embedded models, trained on the same world with
    the same VAE and CLIP; only the denoiser differs (a UNet with DDPM, an SD3 transformer
    with rectified flow)."""
    from ..pipeline import load

    return load("sdviz-mini", device=device), load("sdviz-mini-flow", device=device)
