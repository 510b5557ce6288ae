"""Classifier-free guidance on sdviz-mini, measured from pixels: what g buys and what it costs.

Classifier-free guidance (Ho & Salimans 2022) extrapolates the UNet's two predictions,
ε = ε_uncond + g·(ε_text − ε_uncond). This benchmark generates the same prompts and
seeds at every scale g and scores each image from its pixels with mini_quality's
scorer (saturated blobs, nearest palette hue, k-NN shape classifier on ShapesWorld
masks; never the model's own CLIP):

accuracy (prompt following), per scale
    one object       the largest object has the prompt's colour and shape
    two objects      both named objects are among the two largest
    placement        ... and the first is on the named side of the second
    held-out pairs   one object, colour-shape pairs never seen in training

image quality (how far the drawing strays from ShapesWorld), per scale, measured
the same way on real held-out ShapesWorld images as the reference
    palette error    mean RGB distance (0-255 units) of object pixels (1 px inside the
                     outline) from the nearest ShapesWorld palette colour; real: ~0
    speckle          % of image pixels that are saturated but in no object
                     (blobs under 12 px): stray dots of colour; real: 0
    extra objects    objects found beyond the number the prompt names, per image
    edge sharpness   steepest colour change across an object's outline divided by the
                     object-to-background contrast (1 / edge width in px); ShapesWorld
                     draws anti-aliased edges about one pixel wide

The recommended scale follows a stated rule (`recommend`): of the scales whose share of
prompts followed is within one paired standard error of the best (the same prompts and
seeds at every scale), the one with the lowest palette error. The table prints;
`--json` writes the record `sdviz.probes.measured_guidance` reads and
`sdviz.figures.guidance_benefit` draws (shipped as the model folder's `guidance.json`,
see its "about"); `--rows` keeps every image's verdict, and `--from-rows` re-reports
one or several such files (pooled) without generating anything. sdviz-mini's shipped
record pools the validation and the reported prompts (~30 CPU-minutes each on a busy
2-core host):

    OMP_NUM_THREADS=1 python benchmarks/guidance_sweep.py --validation --rows val.json
    OMP_NUM_THREADS=1 python benchmarks/guidance_sweep.py --rows rep.json
    python benchmarks/guidance_sweep.py --from-rows val.json rep.json \
        --json sdviz/models/sdviz-mini/guidance.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mini_quality as mq  # noqa: E402  (a script beside this one, not a package)

from sdviz.probes.guidance import rule_sentence  # noqa: E402
from sdviz.shapes import COLOURS, HELD_OUT_PAIRS, ShapesWorld  # noqa: E402

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0)
ACCURACY = ("one_object", "two_objects", "placement", "held_out_pairs")
QUALITY = ("palette_error", "speckle", "extra_objects", "edge_sharpness")
_PALETTE = np.array(list(COLOURS.values()), np.float32)  # (colours, 3)
MIN_AREA = 12  # px: smaller saturated blobs are speckle (mini_quality's min_area)


# -- image quality, from pixels ---------------------------------------------------------------
def _foreground(image: np.ndarray) -> np.ndarray:
    """Saturated, not dark pixels: where ShapesWorld's objects are (mini_quality's rule)."""
    rgb = image.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return (sat > 0.4) & (mx > 0.3)


def image_quality(image: np.ndarray, expected: int) -> dict[str, float]:
    """Palette error, speckle, extra objects and edge sharpness of one RGB uint8 image."""
    fg = _foreground(image)
    labels, n = ndimage.label(fg)
    areas = ndimage.sum(fg, labels, range(1, n + 1)) if n else np.zeros(0)
    big = [i + 1 for i, a in enumerate(areas) if a >= MIN_AREA]
    objects = np.isin(labels, big)  # (H, W)
    speckle = float((fg & ~objects).mean())
    rgb = image.astype(np.float32)
    core = ndimage.binary_erosion(objects)
    if core.any():
        d = np.linalg.norm(rgb[core][:, None, :] - _PALETTE[None], axis=-1).min(1)
        palette = float(d.mean())
    else:
        palette = float("nan")
    sharp = []
    gy, gx = np.gradient(rgb, axis=(0, 1))
    grad = np.sqrt((gx**2 + gy**2).sum(-1))  # (H, W) colour change per pixel
    for lab in big:
        mask = labels == lab
        inner = ndimage.binary_erosion(mask, iterations=2)
        ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask)
        band = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        if not inner.any() or not ring.any():
            continue
        contrast = np.linalg.norm(np.median(rgb[inner], 0) - np.median(rgb[ring], 0))
        if contrast > 30:
            sharp.append(float(np.percentile(grad[band], 90) / contrast))
    return dict(
        palette_error=palette,
        speckle=100.0 * speckle,
        extra_objects=float(max(0, len(big) - expected)),
        edge_sharpness=float(np.mean(sharp)) if sharp else float("nan"),
    )


def mean_quality(images: list[np.ndarray], expected: list[int]) -> dict[str, float]:
    per = [image_quality(im, e) for im, e in zip(images, expected, strict=True)]
    return {k: float(np.nanmean([p[k] for p in per])) for k in QUALITY}


def reference_quality(n: int = 200, size: int = 64, vae=None) -> dict[str, float]:
    """The same statistics on real held-out ShapesWorld images (what the model imitates);
    with `vae`, on their reconstructions (what the decoder alone costs)."""
    world = ShapesWorld(size=size, split="test", seed=7)
    samples = [world[i] for i in range(n)]
    images = [s.image for s in samples]
    if vae is not None:
        with torch.no_grad():
            x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        images = list(rec)
    return mean_quality(images, [len(s.objects) for s in samples])


# -- prompts ----------------------------------------------------------------------------------
def held_out_prompts(seeds: int = 4, offset: int = 0) -> list[tuple[str, int, tuple]]:
    """Each colour-shape pair the training split never shows, with `seeds` seeds."""
    return [
        (f"a {c} {s}", 9000 + offset + 11 * i + k, ((c, s),))
        for i, (c, s) in enumerate(HELD_OUT_PAIRS)
        for k in range(seeds)
    ]


def score_scale(
    pipe, classify, g: float, one, two, held, steps: int = 25
) -> tuple[dict, list[dict]]:
    """Accuracy and quality at one scale; plus one row per image (prompt, seed, ok)."""
    rows = []
    ones = mq.generate(pipe, one + held, g, steps)
    ok1 = [
        mq._has(mq.find_objects(im, classify), *t[0], top=1) is not None
        for im, (_, _, t) in zip(ones, one + held, strict=True)
    ]
    twos = mq.generate(pipe, two, g, steps)
    both, placed = [], []
    for im, (_, _, (a, b, side)) in zip(twos, two, strict=True):
        found = mq.find_objects(im, classify)
        oa, ob = mq._has(found, *a, top=2), mq._has(found, *b, top=2)
        both.append(bool(oa and ob and oa is not ob))
        placed.append(both[-1] and (oa["x"] < ob["x"]) == (side == "left"))
    held_ok = [o for o, (_, _, t) in zip(ok1, one + held, strict=True) if t[0] in HELD_OUT_PAIRS]
    res = dict(
        one_object=100.0 * float(np.mean(ok1[: len(one)])),
        two_objects=100.0 * float(np.mean(both)),
        placement=100.0 * float(np.mean(placed)),
        held_out_pairs=100.0 * float(np.mean(held_ok)),
    )
    res |= mean_quality(ones + twos, [1] * len(ones) + [2] * len(twos))
    for (p, seed, _), ok in zip(one + held + two, ok1 + placed, strict=True):
        rows.append(dict(prompt=p, seed=seed, ok=bool(ok)))
    return res, rows


def mean_accuracy(s: dict) -> float:
    """The mean of one-object, two-object and placement accuracy (%), the ranking's score."""
    return float(np.mean([s[k] for k in ("one_object", "two_objects", "placement")]))


def recommend(sweep: dict[float, dict], rows: dict[float, list[dict]]) -> tuple[float, dict]:
    """The scale to recommend: among the scales whose share of prompts followed is within
    one paired standard error of the best (the same prompts and seeds at every scale, so
    the error is that of the per-prompt differences: what these prompts cannot resolve),
    the one whose drawings stray least from ShapesWorld's colours (lowest palette error;
    ties: smaller g). More guidance than that buys no measurable prompt-following and
    costs colour fidelity. Returns (g, the rule's facts): `sdviz.probes.guidance.rule_sentence`
    says them in words."""
    verdicts = {g: np.array([r["ok"] for r in rows[g]], dtype=float) for g in sweep}
    best = max(verdicts, key=lambda g: verdicts[g].mean())
    n = len(verdicts[best])
    near = []
    for g, v in verdicts.items():
        d = verdicts[best] - v  # (prompts,) 1 where only the best scale followed the prompt
        if d.mean() <= d.std(ddof=1) / np.sqrt(n):
            near.append(g)
    g = min(near, key=lambda g: (round(sweep[g]["palette_error"], 1), g))
    facts = dict(
        n=n,
        best_g=float(best),
        best_share=100 * float(verdicts[best].mean()),
        near=[float(x) for x in sorted(near)],
        g=float(g),
        palette_error=float(sweep[g]["palette_error"]),
    )
    return float(g), facts


def pick_example(rows: dict[float, list[dict]], g_rec: float, held_out: bool = False) -> dict:
    """A prompt and seed where guidance visibly matters: wrong without it, right at the
    recommended scale; ranked by how many scales below g_rec fail, how many from g_rec to
    7.5 pass, and whether the largest scale fails again. A two-object prompt, or with
    `held_out` a colour-shape pair training never showed."""
    scales = sorted(rows)
    unseen = {f"a {c} {s}" for c, s in HELD_OUT_PAIRS}
    first = rows[scales[0]]
    pool = [
        i
        for i, r in enumerate(first)
        if (r["prompt"] in unseen if held_out else " of " in r["prompt"])
    ]

    def score(i: int) -> tuple:
        ok = {g: rows[g][i]["ok"] for g in scales}
        return (
            ok[g_rec] and not ok[scales[0]],
            sum(not ok[g] for g in scales if g < g_rec),
            sum(ok[g] for g in scales if g_rec <= g <= 7.5),
            not ok[scales[-1]],
        )

    i = max(pool, key=score)
    return dict(
        prompt=first[i]["prompt"],
        seed=first[i]["seed"],
        followed=[rows[g][i]["ok"] for g in scales],
    )


def table(sweep: dict[float, dict], ref: dict[str, float], rec: dict[str, float]) -> str:
    head = (
        "| g | one object | two objects | placement | held-out pairs || palette error "
        "| speckle % | extra objects | edge sharpness |"
    )
    lines = [head, "|---|---|---|---|---||---|---|---|---|"]
    for g, s in sweep.items():
        lines.append(
            f"| {g:g} | {s['one_object']:.1f}% | {s['two_objects']:.1f}% | {s['placement']:.1f}% "
            f"| {s['held_out_pairs']:.1f}% || {s['palette_error']:.1f} | {s['speckle']:.2f} "
            f"| {s['extra_objects']:.2f} | {s['edge_sharpness']:.2f} |"
        )
    for name, r in (("real ShapesWorld", ref), ("its VAE reconstruction", rec)):
        lines.append(
            f"| {name} | | | | || {r['palette_error']:.1f} | {r['speckle']:.2f} "
            f"| {r['extra_objects']:.2f} | {r['edge_sharpness']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(mq.DEFAULT_MODEL))
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--seeds", type=int, default=2, help="seeds per one-object prompt (24 pairs)")
    ap.add_argument("--pairs", type=int, default=48, help="two-object prompts")
    ap.add_argument("--held-out-seeds", type=int, default=4, help="extra seeds per held-out pair")
    ap.add_argument("--validation", action="store_true", help="mini_quality's validation prompts")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument(
        "--json", default=None, help="write the sweep here (e.g. the model's guidance.json)"
    )
    ap.add_argument("--rows", default=None, help="write every score and image's verdict here")
    ap.add_argument(
        "--from-rows",
        nargs="+",
        default=None,
        help="re-report --rows files (several: pooled), generating nothing",
    )
    args = ap.parse_args(argv)
    if args.from_rows:
        return report(merge([json.loads(Path(f).read_text()) for f in args.from_rows]), args.json)
    import sdviz

    torch.set_num_threads(1)
    pipe = sdviz.load(args.model, device="cpu", dtype="fp32")  # sdviz-mini or sdviz-mini-flow
    pipe.set_progress_bar_config(disable=True)
    classify = mq.ShapeClassifier()
    offset = 100_000 if args.validation else 0
    one = mq.one_object_prompts(args.seeds, offset)
    two = mq.two_object_prompts(args.pairs, offset)
    held = held_out_prompts(args.held_out_seeds, offset)
    ref, rec = reference_quality(), reference_quality(vae=pipe.vae)
    sweep, rows, t0 = {}, {}, time.perf_counter()
    for g in args.scales:
        sweep[g], rows[g] = score_scale(pipe, classify, g, one, two, held, args.steps)
        print(f"g={g:g} done at {time.perf_counter() - t0:.0f} s: {sweep[g]}", flush=True)
    meta = dict(
        command="python benchmarks/guidance_sweep.py " + " ".join(argv or sys.argv[1:]),
        date=datetime.date.today().isoformat(),
        prompts="validation" if args.validation else "reported",
        steps=args.steps,
        scheduler=type(pipe.scheduler).__name__,
        seconds=round(time.perf_counter() - t0),
        n=dict(
            one_object=len(one),
            two_objects=len(two),
            held_out_pairs=len(held) + sum(t[0] in HELD_OUT_PAIRS for _, _, t in one),
        ),
    )
    measured = dict(meta=meta, sweep=sweep, rows=rows, reference=ref, reference_vae=rec)
    if args.rows:
        Path(args.rows).write_text(json.dumps(measured))
    return report(measured, args.json)


def merge(parts: list[dict]) -> dict:
    """Several --rows files (other prompts and seeds, same scales) as one sweep: accuracy
    and quality weighted by each part's prompt counts, the verdicts concatenated."""
    if len(parts) == 1:
        return parts[0]
    scales = [list(p["sweep"]) for p in parts]
    if any(s != scales[0] for s in scales):
        raise SystemExit(f"--from-rows files must sweep the same scales; got {scales}.")
    weight = dict(one_object="one_object", two_objects="two_objects", placement="two_objects")
    weight |= dict(held_out_pairs="held_out_pairs")
    sweep = {}
    for g in scales[0]:
        sweep[g] = {}
        for k in parts[0]["sweep"][g]:
            w = [p["meta"]["n"][weight.get(k, "one_object")] for p in parts]
            if k in QUALITY:
                w = [p["meta"]["n"]["one_object"] + p["meta"]["n"]["two_objects"] for p in parts]
            values = [p["sweep"][g][k] for p in parts]
            sweep[g][k] = float(np.average(values, weights=w))
    meta = dict(parts[0]["meta"])
    meta["command"] = " + ".join(p["meta"]["command"] for p in parts)
    meta["prompts"] = " + ".join(p["meta"]["prompts"] for p in parts)
    meta["seconds"] = sum(p["meta"]["seconds"] for p in parts)
    meta["n"] = {k: sum(p["meta"]["n"][k] for p in parts) for k in meta["n"]}
    rows = {g: [r for p in parts for r in p["rows"][g]] for g in scales[0]}
    return dict(parts[0], meta=meta, sweep=sweep, rows=rows)


def report(measured: dict, json_path: str | None) -> int:
    """Print the table and the recommendation; write the compact record to `json_path`."""
    meta, ref, rec = measured["meta"], measured["reference"], measured["reference_vae"]
    sweep = {float(g): s for g, s in measured["sweep"].items()}
    rows = {float(g): r for g, r in measured["rows"].items()}
    g_rec, facts = recommend(sweep, rows)
    rule = rule_sentence(facts, "en")
    example = pick_example(rows, g_rec)
    held_out_example = pick_example(rows, g_rec, held_out=True)
    n = meta["n"]
    print(
        f"{n['one_object']} one-object and {n['two_objects']} two-object prompts per scale, "
        f"{n['held_out_pairs']} with held-out pairs ({meta['prompts']} prompts and seeds), "
        f"{meta['steps']} steps, {meta['scheduler']}; {meta['seconds']} s\n"
    )
    print(table(sweep, ref, rec))
    print(f"\nrecommended g = {g_rec:g}: {rule}")
    print(f"example: {example}\nheld-out example: {held_out_example}")
    if json_path:
        record = dict(
            about=(
                "Classifier-free guidance on this model, measured from pixels by "
                "benchmarks/guidance_sweep.py (see its docstring): accuracy in % of prompts "
                "followed; quality statistics of the drawings; 'reference' is the same "
                "statistics on real ShapesWorld images, 'reference_vae' on their VAE "
                "reconstructions; 'example' is a prompt and seed where guidance matters, "
                "'followed' whether each scale's image followed it; 'held_out_example' the same "
                "for a colour-shape pair never seen in training."
            ),
            **{k: meta[k] for k in ("command", "date", "prompts", "steps", "scheduler", "n")},
            scales=list(sweep),
            accuracy={k: [round(sweep[g][k], 2) for g in sweep] for k in ACCURACY},
            quality={k: [round(sweep[g][k], 3) for g in sweep] for k in QUALITY},
            reference={k: round(v, 3) for k, v in ref.items()},
            reference_vae={k: round(v, 3) for k, v in rec.items()},
            recommended=dict(guidance_scale=g_rec, rule=rule, facts=facts),
            example=example,
            held_out_example=held_out_example,
        )
        Path(json_path).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
