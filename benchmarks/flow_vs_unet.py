"""The same world drawn by two designs: sdviz-mini (UNet, DDPM) vs sdviz-mini-flow (MMDiT, flow).

sdviz-mini's UNet was trained as a DDPM noise predictor (Ho et al. 2020) and samples with
DDIM (Song et al. 2021); sdviz-mini-flow's SD3 transformer (Esser et al. 2024) was trained
with rectified flow (Liu et al. 2022) on the same ShapesWorld images with the same VAE and
CLIP. Each model runs at its own recommended guidance (`sdviz.pipeline.recommended`), on
the same prompts and seeds:

(a) quality against the number of sampling steps: `benchmarks/mini_quality.py`'s pixel
    scorer on the reported prompt set (its first --prompts one-object prompts, spread over
    the 24 colour-shape pairs, and its first --prompts two-object prompts): one object
    colour+shape right, both objects right, left/right placement right; and seconds for
    one image (median of 3, one thread, after a warm-up call);
(b) path straightness (`sdviz.probes.straightness`): how far x̂0 moves from step to step,
    in total relative to the final x̂0 (0 = a straight path), and how far the first step's
    x̂0 is from the final one;
(c) attention localisation (`benchmarks/attention_localisation.py`, part 2's measures):
    on generated two-object images, does each noun's and colour word's map (mean over the
    steps) peak inside its object, hold more mass in its own object than in the other, and
    its mIoU; UNet cross-attention vs the transformer's joint attention (text→image part);
(d) with --figures DIR: the straightness figure and the side-by-side attention figure.

    python benchmarks/flow_vs_unet.py [--unet sdviz-mini] [--flow sdviz-mini-flow]
        [--prompts 48] [--steps 2 4 8 16 25] [--straight-prompts 6]
        [--attention-prompts 32] [--figures DIR] [--jobs 2]

--jobs 2 measures the two models at once, one process each (one thread each by default).

A smoke run on the tiny random pipelines: --unet sdviz-tiny --flow sdviz-tiny-sd3
--prompts 2 --steps 2 4 --straight-prompts 1 --attention-prompts 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
STEPS = (2, 4, 8, 16, 25)
ATTENTION_PROMPT = ("a red circle to the left of a blue square", 0)  # the figures' prompt
ATTENTION_WORDS = ["red", "circle", "blue", "square"]


def benchmark(name: str):
    """A sibling benchmark script as a module (`mini_quality`, `attention_localisation`)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_label(name: str, pipe) -> str:
    """'sdviz-mini (UNet)' / 'sdviz-mini-flow (MMDiT)': the model and its denoiser."""
    design = "UNet" if getattr(pipe, "unet", None) is not None else "MMDiT"
    return f"{Path(str(name)).name} ({design})"


def reported_prompts(mq, n: int) -> tuple[list, list]:
    """The first `n` of mini_quality's reported one-object prompts (4 seeds per colour-shape
    pair: every pair before a second seed) and its first `n` two-object prompts."""
    one = mq.one_object_prompts(4)
    seeds = len(one) // len({p for p, _, _ in one})
    by_seed = [one[k::seeds] for k in range(seeds)]  # pair order, seed 0 first
    one = [p for group in by_seed for p in group][: max(1, n)]
    return one, mq.two_object_prompts(96)[: max(1, n)]


def pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def quality_rows(pipes: dict, steps: list[int], n: int) -> list[dict]:
    """One row per model and step count: the pixel scorer's three rates and s/image."""
    from sdviz.pipeline import recommended

    mq = benchmark("mini_quality")
    classify = mq.ShapeClassifier()
    one, two = reported_prompts(mq, n)
    rows = []
    for label, pipe in pipes.items():
        g = recommended(pipe).guidance_scale
        for s in steps:
            t0 = time.perf_counter()
            r = mq.score_generation(pipe, classify, g, one, two, s)
            rows.append(
                dict(
                    model=label,
                    steps=s,
                    guidance=g,
                    one=r["one_object"],
                    two=r["two_object_both"],
                    placement=r["placement"],
                    seconds=mq.speed(pipe, g, s),
                    scoring_s=time.perf_counter() - t0,
                    n_one=len(one),
                    n_two=len(two),
                )
            )
            print(
                f"  [{label}, {s} steps: {time.perf_counter() - t0:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
    return rows


def quality_table(rows: list[dict]) -> str:
    lines = [
        "| model | guidance | steps | one object | two objects | placement | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['guidance']:g} | {r['steps']} | {pct(r['one'])} | "
            f"{pct(r['two'])} | {pct(r['placement'])} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def straightness_table(rec) -> str:
    most = max(rec.steps)
    lines = [
        "| model | steps | path length: mean | min | max | first guess: mean | min | max | "
        f"gap to {most} steps: mean | min | max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in rec.labels:
        for s in rec.steps:
            cells = [
                f"{float(fn(v)):.3f}"
                for v in (
                    rec.path_length(label, s),
                    rec.first_guess(label, s),
                    rec.endpoint_gap(label, s),
                )
                for fn in (torch.mean, torch.min, torch.max)
            ]
            lines.append(f"| {label} | {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attention_table(scores: dict[str, dict]) -> str:
    lines = [
        "| model | images scored (of prompts) | objects | peak inside: noun | colour | "
        "own > other: noun | colour | mIoU: noun | colour | own mass: noun | colour |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, sc in scores.items():
        cells = [
            pct(sc[kind][m])
            for m in ("pointing", "own>other", "iou", "mass")
            for kind in ("noun", "colour")
        ]
        lines.append(
            f"| {label} | {sc['n_images']} ({sc['n_prompts']}) | {sc['n_objects']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def save_figures(pipes: dict, rec, out: Path) -> list[Path]:
    """The straightness figure and the side-by-side attention figure, as PNGs in `out`."""
    import sdviz

    out.mkdir(parents=True, exist_ok=True)
    prompt, seed = ATTENTION_PROMPT
    runs = {label: sdviz.generate(pipe, prompt, seed=seed) for label, pipe in pipes.items()}
    words = [w for w in ATTENTION_WORDS if w in prompt.split()]
    figs = {
        "straightness.png": sdviz.figures.path_straightness(rec),
        "attention_side_by_side.png": sdviz.figures.attention_side_by_side(runs, words),
    }
    paths = []
    for name, fig in figs.items():
        fig.savefig(out / name)
        paths.append(out / name)
    return paths


def load_pipe(name: str):
    import sdviz

    pipe = sdviz.load(name, device="cpu", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    return model_label(name, pipe), pipe


def measure_model(name: str, args: argparse.Namespace, pipe=None) -> dict:
    """Parts (a), (b) and (c) for one model (in a process of its own with --jobs 2)."""
    from sdviz.probes.straightness import measure_straightness

    torch.set_num_threads(args.threads)
    label, pipe = load_pipe(name) if pipe is None else (model_label(name, pipe), pipe)
    rows = quality_rows({label: pipe}, args.steps, args.prompts)
    _, two = reported_prompts(benchmark("mini_quality"), args.straight_prompts)
    pairs = [(p, seed) for p, seed, _ in two]
    t0 = time.perf_counter()
    rec = measure_straightness({label: pipe}, pairs, args.steps)
    print(f"  [{label}, straightness: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    t0 = time.perf_counter()
    scores = benchmark("attention_localisation").default_map_scores(pipe, args.attention_prompts)
    print(f"  [{label}, attention: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    return dict(label=label, rows=rows, record=rec, attention=scores)


def merge_records(records: list):
    """One Straightness of several models' records (same prompts and step counts)."""
    first = records[0]
    for rec in records[1:]:
        first.labels += rec.labels
        for part in ("distance", "moves", "finals", "guidance", "strips"):
            getattr(first, part).update(getattr(rec, part))
    return first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unet", default="sdviz-mini", help="the UNet model (name or folder)")
    ap.add_argument("--flow", default="sdviz-mini-flow", help="the flow model (name or folder)")
    ap.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    ap.add_argument(
        "--prompts", type=int, default=48, help="one-object and two-object prompts each (<= 96)"
    )
    ap.add_argument("--straight-prompts", type=int, default=6, help="(prompt, seed) pairs for (b)")
    ap.add_argument("--attention-prompts", type=int, default=32, help="two-object prompts for (c)")
    ap.add_argument("--figures", default=None, help="save the figures (PNG) into this folder")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each process")
    ap.add_argument(
        "--jobs", type=int, default=1, choices=(1, 2), help="2: one process per model, at once"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    names = [args.unet, args.flow]
    if args.jobs == 2:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=spawn) as pool:
            results = list(pool.map(measure_model, names, [args] * 2))
    else:
        results = [measure_model(name, args) for name in names]
    labels = [r["label"] for r in results]
    rows = [row for r in results for row in r["rows"]]
    rec = merge_records([r["record"] for r in results])
    scores = {r["label"]: r["attention"] for r in results}
    print(
        f"# flow vs UNet, {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}; "
        f"models: {', '.join(labels)}; {args.jobs} process(es) of {args.threads} thread(s)"
    )
    print()
    print(
        f"## (a) Quality against the number of steps ({rows[0]['n_one']} one-object and "
        f"{rows[0]['n_two']} two-object prompts of mini_quality's reported set, each model at "
        "its recommended guidance)"
    )
    print()
    print(quality_table(rows))
    print()
    print(
        "one object: the largest object has the named colour and shape; two objects: both "
        "named objects among the two largest; placement: both found and on the named sides "
        "(so placement <= two objects); s / image: one image, median of 3, wall clock."
    )
    print()
    print(
        f"## (b) Path straightness of x̂0 ({len(rec.prompts)} two-object prompts and seeds, "
        "each model at its recommended guidance)"
    )
    print()
    print(straightness_table(rec))
    print()
    print(
        "path length: sum over steps of ||x̂0_s - x̂0_(s-1)|| / ||x̂0_final|| (0 = x̂0 never "
        "moved: a straight path, one step would do); first guess: ||x̂0_first - x̂0_final|| / "
        "||x̂0_final|| (how far the one-step answer is from the last); gap: ||x̂0_final(S) - "
        "x̂0_final(most steps)|| / ||x̂0_final(most steps)||, how far an S-step result lands "
        "from the same prompt and seed sampled with the most steps; min/max over the runs. "
        "Both samplers take their last step at almost no noise (DDIM t = 1, flow sigma = 0.001), "
        "where x̂0 is where the step before landed: the last move is ~0, so a 2-step run has "
        "no real move and both measures are ~0 there by construction."
    )
    print()
    print(
        f"## (c) Attention localisation ({args.attention_prompts} two-object prompts, "
        "attention_localisation.py part 2; each model's default maps, mean over its steps)"
    )
    print()
    print(attention_table(scores))
    print()
    print(
        "scored only where both named objects were found in the image (objects = 2 per such "
        "image). peak inside: the word's map peaks inside its object's pixels (pointing "
        "game); own > other: more map mass inside its own object than in the other; mIoU: "
        "the map min-max scaled, cut at 0.4, against the object's mask; own mass: the share "
        "of the map inside its object. UNet: cross-attention, 16x16; MMDiT: joint attention's "
        "text->image part, 8x8 patches."
    )
    if args.figures:
        print()
        pipes = dict(load_pipe(name) for name in names)
        for path in save_figures(pipes, rec, Path(args.figures)):
            print(f"figure: {path}")
    print()
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
