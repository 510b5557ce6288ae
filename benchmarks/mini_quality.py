"""Quality of sdviz-mini, scored from pixels against ShapesWorld's ground truth.

Never uses the model's own CLIP to judge its images. A generated image is segmented
into saturated blobs (the backgrounds are light and nearly grey); each blob's colour
is the nearest named hue of its median pixel, and its shape comes from a k-nearest-
neighbour classifier on bbox-normalised masks, fitted on ShapesWorld training masks
(its accuracy on real held-out ShapesWorld images is printed as a sanity check).

Bars (issue 3): VAE PSNR >= 30 dB on held-out images; CLIP top-1 retrieval >= 95%
among 16 captions; at 25 steps and the recommended guidance: one-object colour+shape
>= 90%, two-object both right >= 70%, left/right placement >= 70%; one image <= 1 s.

    python benchmarks/mini_quality.py [--model DIR] [--guidance 1.5 2 3] [--scheduler ddim]
                                      [--json out.json]
"""

from __future__ import annotations

import argparse
import colorsys
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from sdviz.autoencoder import psnr
from sdviz.shapes import COLOURS, HELD_OUT_PAIRS, SHAPES, ShapesWorld, contrast_captions
from sdviz.text import padded_ids

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "sdviz" / "models" / "sdviz-mini"
_HUES = {name: colorsys.rgb_to_hsv(*(np.array(rgb) / 255.0))[0] for name, rgb in COLOURS.items()}
_GRID = 16


# -- pixel scorer ---------------------------------------------------------------------------
def _mask_feature(mask: np.ndarray) -> np.ndarray:
    """Bounding-box crop of a mask resized to 16x16, plus its aspect ratio."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    zoom = (_GRID / crop.shape[0], _GRID / crop.shape[1])
    grid = ndimage.zoom(crop, zoom, order=1)[:_GRID, :_GRID]
    aspect = crop.shape[1] / crop.shape[0]
    return np.concatenate([grid.ravel(), [2.0 * aspect]])


class ShapeClassifier:
    """k-NN on bbox-normalised masks of ShapesWorld training objects."""

    def __init__(self, count: int = 600, size: int = 64, k: int = 5) -> None:
        world = ShapesWorld(size=size, split="train", seed=123)
        feats, labels = [], []
        for i in range(count):
            for o in world[i].objects:
                feats.append(_mask_feature(o.mask))
                labels.append(SHAPES.index(o.shape))
        self.x, self.y, self.k = np.stack(feats), np.array(labels), k

    def __call__(self, mask: np.ndarray) -> str:
        d = ((self.x - _mask_feature(mask)) ** 2).sum(1)
        votes = np.bincount(self.y[np.argsort(d)[: self.k]], minlength=len(SHAPES))
        return SHAPES[int(votes.argmax())]


def find_objects(image: np.ndarray, classify: ShapeClassifier, min_area: int = 12) -> list[dict]:
    """Saturated blobs of an RGB uint8 image -> [{colour, shape, x, y, area}], largest first."""
    hsv = np.array(
        [colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3) / 255.0], dtype=np.float32
    ).reshape(*image.shape[:2], 3)
    fg = (hsv[..., 1] > 0.4) & (hsv[..., 2] > 0.3)
    labels, n = ndimage.label(fg)
    found = []
    for lab in range(1, n + 1):
        mask = labels == lab
        if mask.sum() < min_area:
            continue
        hue = float(np.median(hsv[mask][:, 0]))
        colour = min(_HUES, key=lambda c: min(abs(hue - _HUES[c]), 1 - abs(hue - _HUES[c])))
        ys, xs = np.nonzero(mask)
        found.append(
            dict(
                colour=colour,
                shape=classify(mask),
                x=xs.mean() / image.shape[1],
                y=ys.mean() / image.shape[0],
                area=int(mask.sum()),
            )
        )
    return sorted(found, key=lambda o: -o["area"])


def _has(found: list[dict], colour: str, shape: str, top: int | None = None) -> dict | None:
    """The first of the `top` largest objects with this colour and shape (None: not there)."""
    return next((o for o in found[:top] if o["colour"] == colour and o["shape"] == shape), None)


# -- benchmarks -------------------------------------------------------------------------------
def scorer_sanity(classify: ShapeClassifier, n: int = 200) -> float:
    """Fraction of real held-out ShapesWorld objects the scorer finds with the right colour+shape."""
    world, hits, total = ShapesWorld(split="test", seed=7), 0, 0
    for i in range(n):
        s = world[i]
        found = find_objects(s.image, classify)
        for o in s.objects:
            total += 1
            hits += _has(found, o.colour, o.shape) is not None
    return hits / total


@torch.no_grad()
def vae_psnr(pipe, n: int = 256) -> float:
    images, _ = ShapesWorld(size=pipe.vae.config.sample_size, split="test", seed=11).batch(0, n)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    return float(np.mean([psnr(a, b, data_range=2.0) for a, b in zip(rec, x, strict=True)]))


def _features(out) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output holds the projection
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def clip_retrieval(clip, tokenizer, n: int = 256, candidates: int = 16) -> float:
    world = ShapesWorld(size=clip.config.vision_config.image_size, split="test", seed=13)
    images, captions = world.batch(0, n)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    img = _features(clip.get_image_features(pixel_values=x))
    hits = 0
    for i in range(n):
        others = [c for c in dict.fromkeys(captions) if c != captions[i]]
        caps = [captions[i]] + list(rng.choice(others, candidates - 1, replace=False))
        ids = padded_ids(tokenizer, caps)
        txt = _features(clip.get_text_features(input_ids=ids))
        hits += int((txt @ img[i]).argmax() == 0)
    return hits / n


@torch.no_grad()
def clip_contrasts(clip, tokenizer, n: int = 256) -> dict[str, float]:
    """How often CLIP scores a held-out image's caption above its counterfactuals.

    `sdviz.shapes.contrast_captions`: "relation" flips left/right, above/below or
    top/bottom; "colours" swaps two objects' colours. 50% is a bag-of-words model.
    """
    world = ShapesWorld(size=clip.config.vision_config.image_size, split="test", seed=13)
    images, captions = world.batch(0, n)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    img = _features(clip.get_image_features(pixel_values=x))
    wins: dict[str, list[bool]] = {"relation": [], "colours": []}
    for i, caption in enumerate(captions):
        contrasts = contrast_captions(caption)
        if not contrasts:
            continue
        ids = padded_ids(tokenizer, [caption, *contrasts.values()])
        score = _features(clip.get_text_features(input_ids=ids)) @ img[i]
        for k, kind in enumerate(contrasts, start=1):
            wins[kind].append(bool(score[0] > score[k]))
    return {kind: float(np.mean(w)) for kind, w in wins.items()}


def one_object_prompts(seeds: int = 4, offset: int = 0) -> list[tuple[str, int, tuple]]:
    pairs = list(itertools.product(COLOURS, SHAPES))
    return [
        (f"a {c} {s}", 1000 + offset + 7 * i + k, ((c, s),))
        for i, (c, s) in enumerate(pairs)
        for k in range(seeds)
    ]


def two_object_prompts(n: int = 96, offset: int = 0) -> list[tuple[str, int, tuple]]:
    rng = np.random.default_rng(5 + offset)
    pairs = list(itertools.product(COLOURS, SHAPES))
    out = []
    for i in range(n):
        a, b = (pairs[j] for j in rng.choice(len(pairs), 2, replace=False))
        side = "left" if i % 2 == 0 else "right"
        art = lambda c: "an" if c[0] in "aeiou" else "a"  # noqa: E731
        out.append(
            (
                f"{art(a[0])} {a[0]} {a[1]} to the {side} of {art(b[0])} {b[0]} {b[1]}",
                5000 + offset + i,
                (a, b, side),
            )
        )
    return out


@torch.no_grad()
def generate(pipe, prompts, guidance: float, steps: int = 25, batch: int = 16) -> list[np.ndarray]:
    from sdviz.pipeline import recommended

    extra = recommended(pipe).call_arguments()  # sdviz-mini-flow: no T5 token positions
    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed) for _, seed, _ in chunk]
        out = pipe(
            [p for p, _, _ in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="np",
            **extra,
        )
        images += [(im * 255).round().astype(np.uint8) for im in out.images]
    return images


def score_generation(pipe, classify, guidance: float, one=None, two=None, steps: int = 25) -> dict:
    one = one if one is not None else one_object_prompts()
    two = two if two is not None else two_object_prompts()
    res = {}
    imgs = generate(pipe, one, guidance, steps)
    # strict: the largest object must be the named one (speckle and copies do not count)
    ok = [
        _has(find_objects(im, classify), *truth[0], top=1) is not None
        for im, (_, _, truth) in zip(imgs, one, strict=True)
    ]
    held = [o for o, (_, _, t) in zip(ok, one, strict=True) if t[0] in HELD_OUT_PAIRS]
    res["one_object"] = float(np.mean(ok))
    res["one_object_held_out_pairs"] = float(np.mean(held)) if held else float("nan")
    res["one_object_by_colour"] = {
        c: float(np.mean([o for o, (_, _, t) in zip(ok, one, strict=True) if t[0][0] == c]))
        for c in dict.fromkeys(t[0][0] for _, _, t in one)
    }
    imgs2 = generate(pipe, two, guidance, steps)
    both = placed = 0
    for im, (_, _, (a, b, side)) in zip(imgs2, two, strict=True):
        found = find_objects(im, classify)
        oa, ob = _has(found, *a, top=2), _has(found, *b, top=2)  # the two largest objects
        if oa and ob and oa is not ob:
            both += 1
            placed += (oa["x"] < ob["x"]) == (side == "left")
    res["two_object_both"] = both / len(two)
    res["placement"] = placed / len(two)
    res["placement_given_both"] = placed / both if both else float("nan")
    res["_images"] = imgs[:24] + imgs2[:24]
    return res


def speed(pipe, guidance: float, steps: int = 25) -> float:
    from sdviz.pipeline import recommended

    gen = torch.Generator().manual_seed(0)
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance, generator=gen)
    kwargs.update(recommended(pipe).call_arguments())
    pipe("a red circle", **kwargs)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        pipe("a red circle", **kwargs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def table(r: dict) -> str:
    g = r["guidance"]
    rows = [
        (
            "VAE reconstruction PSNR (held-out)",
            f"{r['vae_psnr']:.1f} dB",
            ">= 30 dB",
            r["vae_psnr"] >= 30,
        ),
        (
            "CLIP top-1 retrieval among 16",
            f"{100 * r['clip_top1']:.1f}%",
            ">= 95%",
            r["clip_top1"] >= 0.95,
        ),
        (
            "  CLIP prefers the true caption to: relation flipped",
            f"{100 * r['clip_contrasts']['relation']:.1f}%",
            "",
            None,
        ),
        (
            "  ... to: two colours swapped",
            f"{100 * r['clip_contrasts']['colours']:.1f}%",
            "",
            None,
        ),
        (
            f"One object, colour+shape (g={g}, n={r.get('n_one', '?')})",
            f"{100 * r['one_object']:.1f}%",
            ">= 90%",
            r["one_object"] >= 0.9,
        ),
        (
            "  of which held-out colour-shape pairs",
            f"{100 * r['one_object_held_out_pairs']:.1f}%",
            "",
            None,
        ),
        (
            "  by colour",
            ", ".join(f"{c} {100 * v:.0f}%" for c, v in r.get("one_object_by_colour", {}).items()),
            "",
            None,
        ),
        (
            f"Two objects, both right (g={g}, n={r.get('n_two', '?')})",
            f"{100 * r['two_object_both']:.1f}%",
            ">= 70%",
            r["two_object_both"] >= 0.7,
        ),
        (
            f"Left/right placement right (g={g})",
            f"{100 * r['placement']:.1f}%",
            ">= 70%",
            r["placement"] >= 0.7,
        ),
        (
            "  placement when both objects found",
            f"{100 * r['placement_given_both']:.1f}%",
            "",
            None,
        ),
        (
            "One image, 25 steps, CPU",
            f"{r['seconds_per_image']:.2f} s",
            "<= 1 s",
            r["seconds_per_image"] <= 1.0,
        ),
        ("Scorer sanity: real held-out images", f"{100 * r['scorer_sanity']:.1f}%", "", None),
    ]
    lines = ["| metric | value | bar | pass |", "|---|---|---|---|"]
    for name, val, bar, ok in rows:
        lines.append(
            f"| {name} | {val} | {bar} | {'' if ok is None else ('yes' if ok else 'NO')} |"
        )
    sweep = r.get("sweep", {})
    if sweep:
        lines += ["", "| guidance | one object | two objects | placement |", "|---|---|---|---|"]
        for gs, s in sweep.items():
            lines.append(
                f"| {gs} | {100 * s['one_object']:.1f}% | "
                f"{100 * s['two_object_both']:.1f}% | {100 * s['placement']:.1f}% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[1.5, 2.0, 3.0],
        help="scales to sweep; the best (one+two objects) is reported",
    )
    ap.add_argument(
        "--scheduler", default=None, help="sample with this scheduler (default: the model's own)"
    )
    ap.add_argument(
        "--report",
        type=float,
        default=None,
        help="report the table at this scale (the model card's); default: the sweep's best",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=25, help="denoising steps of every image")
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid", default=None, help="save a PNG of sample generations here")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per one-object prompt (24 prompts)")
    ap.add_argument("--pairs", type=int, default=96, help="two-object prompts")
    ap.add_argument("--only-generation", action="store_true", help="skip VAE, CLIP, speed")
    ap.add_argument(
        "--validation",
        action="store_true",
        help="other prompts and seeds, to choose checkpoints or settings without tuning "
        "on the reported set",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import CLIPModel

    import sdviz
    from sdviz.borrowed import borrowed_spec

    pipe = sdviz.load(args.model, device="cpu", dtype="fp32")  # sdviz-mini or -flow
    pipe.set_progress_bar_config(disable=True)
    borrows = borrowed_spec(Path(args.model))  # sdviz-mini-flow: sdviz-mini's CLIP
    clip_folder = Path(args.model) / (borrows["folder"] if borrows else ".") / "clip"
    if args.scheduler:
        from sdviz.pipeline import set_scheduler

        set_scheduler(pipe, args.scheduler)
    classify = ShapeClassifier()
    r: dict = {"model": args.model, "scheduler": type(pipe.scheduler).__name__}
    if not args.only_generation:
        r["scorer_sanity"] = scorer_sanity(classify)
        r["vae_psnr"] = vae_psnr(pipe)
        clip = CLIPModel.from_pretrained(clip_folder).eval()
        r["clip_top1"] = clip_retrieval(clip, pipe.tokenizer)
        r["clip_contrasts"] = clip_contrasts(clip, pipe.tokenizer)
    offset = 100_000 if args.validation else 0
    one, two = one_object_prompts(args.seeds, offset), two_object_prompts(args.pairs, offset)
    sweep = {g: score_generation(pipe, classify, g, one, two, args.steps) for g in args.guidance}
    if args.report is not None and args.report not in sweep:
        ap.error(f"--report {args.report} must be one of the swept --guidance scales")
    best = (
        args.report
        if args.report is not None
        else max(
            sweep,
            key=lambda g: (
                sweep[g]["one_object"] + sweep[g]["two_object_both"] + sweep[g]["placement"]
            ),
        )
    )
    images = sweep[best].pop("_images")
    for s in sweep.values():
        s.pop("_images", None)
    r.update(sweep[best], guidance=best, sweep=sweep, n_one=len(one), n_two=len(two))
    if args.only_generation:
        print(json.dumps(sweep, indent=1))
    else:
        r["seconds_per_image"] = speed(pipe, best, args.steps)
        print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    if args.grid:
        from PIL import Image

        rows = [np.concatenate(images[i : i + 8], 1) for i in range(0, len(images) - 7, 8)]
        Image.fromarray(np.concatenate(rows, 0)).save(args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
