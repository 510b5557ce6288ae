"""`sdviz figures`: every explanatory figure from one real run, plus an HTML gallery.

    sdviz figures --prompt "a red circle to the left of a blue square" --out sdviz-figures

Loads a model (the embedded one by default, `sdviz.load`), traces one generation with
per-layer cross-attention (`sdviz.generate`), renders figures 1-11 of "The Illustrated
Stable Diffusion" (see `sdviz.figures`) in the requested formats, a GIF of the run (and
an MP4 where ffmpeg exists) and `index.html` with a caption under each figure and a
link to every file. Files are written into a temporary folder beside `--out` and moved
into place at the end: a failure leaves no half-written gallery.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .style import FORMATS

DEFAULT_OUT = Path("sdviz-figures")
DEFAULT_STEPS = 20
SWEEP_SCALES = (1.0, 3.0)  # extra guidance scales rendered next to the run's own
CLIP_CAPTIONS = ("a green triangle", "a yellow star")  # contrast captions for figure 8
STOPWORDS = {"a", "an", "the", "of", "to", "and", "on", "in", "with", "at", "<start>", "<end>"}
MAX_ATTENTION_WORDS = 6
SMALL_UNET = 100e6  # parameters: below this a CPU run is fastest on one thread (no thread sync)


def format_list(text: str) -> tuple[str, ...]:
    """'png,svg' -> ('png', 'svg'); unknown formats are an argparse error."""
    items = tuple(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    unknown = [x for x in items if x not in FORMATS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(text)}; choose from "
            f"{', '.join(FORMATS)} (comma-separated, e.g. png,svg)"
        )
    return items


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `sdviz figures` on argparse subparsers (sets `func=main`)."""
    from ..cli import DEFAULT_PROMPT, non_negative_float, positive_int, prompt_arg

    p = subparsers.add_parser(
        "figures",
        help="write every explanatory figure and an index.html gallery",
        description="Trace one generation and write figures 1-11 plus an HTML gallery.",
    )
    p.add_argument("--model", default=None, help="folder or hub id (default: embedded model)")
    p.add_argument("--prompt", type=prompt_arg, default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help="denoising steps")
    p.add_argument(
        "--guidance",
        type=non_negative_float,
        default=None,
        help="classifier-free guidance scale (default: 3 for the embedded model, 7.5 otherwise)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument(
        "--format",
        type=format_list,
        default=("png",),
        help=f"comma-separated figure formats from {','.join(FORMATS)} (default png)",
    )
    p.set_defaults(func=main)
    return p


@dataclass
class Entry:
    """One gallery item: a figure (or animation) and the files written for it."""

    name: str
    title: str
    caption: str
    files: list[str] = field(default_factory=list)
    note: str = ""


def attention_words(run: Any) -> list[str]:
    """The prompt's content words (stopwords dropped), for the cross-attention figure."""
    words = [w for w in run.words if w.lower() not in STOPWORDS]
    return list(dict.fromkeys(words))[:MAX_ATTENTION_WORDS]


def find_clip(pipe: Any) -> tuple[Any, Any, Any, Any] | None:
    """(CLIPModel, tokenizer, image_mean, image_std) shipped in `<model folder>/clip`, or None."""
    folder = Path(str(getattr(pipe, "name_or_path", "") or "")) / "clip"
    if not (folder / "config.json").is_file():
        return None
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = CLIPTokenizer.from_pretrained(folder) if has_tokenizer else pipe.tokenizer
    mean = std = (0.5, 0.5, 0.5)  # sdviz-trained CLIPs see pixels in [-1, 1]
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        config = json.loads(processor.read_text())
        mean, std = config.get("image_mean", mean), config.get("image_std", std)
    return model, tokenizer, mean, std


def plan(pipe: Any, run: Any, args: argparse.Namespace) -> list[tuple[Entry, Callable]]:
    """The figures to draw, in article order: (entry, function returning a Figure)."""
    from .. import figures as F
    from ..tracing import generate
    from .guidance import uses_guidance

    def sweep():
        runs = [
            generate(pipe, args.prompt, steps=args.steps, seed=args.seed, guidance_scale=g,
                     attention=None)
            for g in SWEEP_SCALES
            if g != run["pipeline.guidance_scale"]
        ]  # fmt: skip
        return F.guidance_sweep(sorted(runs + [run], key=lambda r: r["pipeline.guidance_scale"]))

    def similarity():
        model, tokenizer, mean, std = clip
        others = [
            generate(
                pipe,
                c,
                steps=args.steps,
                seed=args.seed,
                guidance_scale=args.guidance,
                attention=None,
            )
            for c in CLIP_CAPTIONS
        ]
        return F.clip_similarity(
            [run, *others], model=model, tokenizer=tokenizer, image_mean=mean, image_std=std
        )

    steps = run.n_steps
    word = run.words[-2] if len(run.words) > 2 else 0
    clip = find_clip(pipe)
    items = [
        ("01_components", "Components", "The text encoder, the UNet with its scheduler and the VAE decoder, with the loaded model's shapes and parameter counts.", lambda: F.components(pipe, run)),
        ("02_forward_noising", "Forward noising", "The generated image noised to increasing timesteps t, in pixel space (top) and in latent space, decoded (bottom).", lambda: F.forward_noising(pipe, run)),
        ("03_noise_schedule", "Noise schedule", "ᾱ_t, σ_t and the signal-to-noise ratio over the training timesteps; dots are the timesteps each sampler visits.", lambda: F.noise_schedule(run, "euler", "dpm++", steps=[None, steps, steps])),
        ("04_training_example", "A training example", "A clean latent, the noise added, the noisy latent at t, the UNet's noise prediction and its error; right: the error over t.", lambda: F.training_example(pipe, run)),
        ("05_denoising_filmstrip", "Denoising filmstrip", "The noisy latent x_t (top) and the predicted clean image x̂0 (bottom), decoded by the VAE at several steps.", lambda: F.denoising_filmstrip(run, pipe)),
        ("06_latent_space", "Latent space", "The image, its latent channels and the VAE's reconstruction, with the compression ratio.", lambda: F.latent_space(pipe, run)),
        ("07_tokens_and_embeddings", "Tokens and embeddings", "The prompt's tokens padded to the text encoder's length, and the matrix of token embeddings.", lambda: F.tokens_and_embeddings(run)),
        ("08_clip_similarity", "CLIP similarity", "Cosine similarity between images and captions in CLIP's shared embedding space.", similarity if clip else None),
        ("09_unet_diagram", "Inside the UNet", "Down, mid and up blocks with their channels and resolutions, the skip connections, and where the cross-attention layers sit.", lambda: F.unet_diagram(pipe, latent_size=run["denoiser.latents"].shape[-1])),
        ("10_cross_attention", "Cross-attention", "Where each word of the prompt attends on the image, averaged over steps, heads and layers.", lambda: F.cross_attention(run, attention_words(run) or None)),
        ("10b_attention_drilldown", "Cross-attention per layer and step", f"The attention of the word {word!r} in every cross-attention layer (rows) at several steps (columns).", lambda: F.attention_drilldown(run, word)),
        ("11_guidance_terms", "Classifier-free guidance", "The unconditional and text-conditioned noise predictions, their difference and the guided prediction; right: the text's push per step.", (lambda: F.guidance_terms(run)) if uses_guidance(run) else None),
        ("11b_guidance_sweep", "Guidance-scale sweep", "The same prompt and seed at several guidance scales.", sweep),
    ]  # fmt: skip
    skipped = {
        "08_clip_similarity": "Skipped: this model ships no CLIP model (a clip/ folder next to it).",
        "11_guidance_terms": "Skipped: the run used no guidance (--guidance 1 or less).",
    }
    out = []
    for name, title, caption, make in items:
        out.append((Entry(name, title, caption, note="" if make else skipped[name]), make))
    return out


def write_index(folder: Path, entries: list[Entry], args: argparse.Namespace, pipe: Any) -> Path:
    """index.html: each figure with its caption and links to all of its files."""
    esc = html.escape
    model = args.model or "embedded model"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>sdviz figures</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
        "figure{margin:2em 0;border-bottom:1px solid #ddd;padding-bottom:1em}"
        "img{max-width:100%}figcaption{font-size:1.05em;margin-top:.5em}</style>",
        "</head><body>",
        "<h1>The Illustrated Stable Diffusion — figures from a real run</h1>",
        f"<p>Model: {esc(str(model))} ({esc(type(pipe.unet).__name__)}, "
        f"{esc(type(pipe.scheduler).__name__)}); prompt: <q>{esc(args.prompt)}</q>; "
        f"seed {args.seed}; {args.steps} steps; guidance {args.guidance:g}.</p>",
    ]
    for e in entries:
        shown = next((f for f in e.files if f.endswith((".png", ".svg", ".gif"))), None)
        links = " · ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in e.files)
        parts.append(f'<figure id="{esc(e.name)}">')
        if shown:
            parts.append(f'<img src="{esc(shown)}" alt="{esc(e.title)}">')
        caption = f"<b>{esc(e.title)}.</b> {esc(e.caption)}"
        if e.note:
            caption += f" <i>{esc(e.note)}</i>"
        if links:
            caption += f"<br>Files: {links}"
        parts.append(f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>\n")
    path = folder / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def main(args: argparse.Namespace) -> int:
    """Run `sdviz figures` with parsed arguments; returns the exit code."""
    import torch
    from tqdm.auto import tqdm

    from ..cli import CommandError, publish, staged_output
    from ..pipeline import load, recommended
    from ..text import truncated_tokens
    from ..tracing import generate
    from .animation import denoising_animation, mp4_available
    from .overview import count_parameters
    from .style import save

    if args.guidance is None:
        args.guidance = recommended(args.model).guidance_scale

    staging = staged_output(args.out)
    threads = torch.get_num_threads()
    try:
        with tqdm(total=3, desc="sdviz figures", unit="step") as bar:
            bar.set_postfix_str("loading model")
            pipe = load(args.model)
            cut = truncated_tokens(pipe.tokenizer, args.prompt)
            if cut:
                raise CommandError(
                    f"the prompt is longer than this model's {pipe.tokenizer.model_max_length} "
                    f"tokens; these would be cut off: {' '.join(cut)}. Shorten the prompt."
                )
            if pipe.device.type == "cpu" and count_parameters(pipe.unet) < SMALL_UNET:
                torch.set_num_threads(1)
            bar.update()
            bar.set_postfix_str("tracing the generation")
            run = generate(
                pipe, args.prompt, steps=args.steps, seed=args.seed, attention_layers="attn2"
            )
            bar.update()
            items = plan(pipe, run, args)
            bar.total += len(items) + 1
            entries = []
            for entry, make in items:
                bar.set_postfix_str(entry.name)
                if make is not None:
                    fig = make()
                    for fmt in args.format:
                        save(fig, staging / f"{entry.name}.{fmt}")
                        entry.files.append(f"{entry.name}.{fmt}")
                entries.append(entry)
                bar.update()
            bar.set_postfix_str("animation")
            movie = Entry(
                "05b_denoising_animation",
                "Denoising animation",
                "x_t and x̂0 decoded at every step of the run.",
            )
            for suffix in (".gif", ".mp4") if mp4_available() else (".gif",):
                denoising_animation(run, staging / f"{movie.name}{suffix}", pipe)
                movie.files.append(f"{movie.name}{suffix}")
            entries.insert(5, movie)
            write_index(staging, entries, args, pipe)
            bar.update()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    publish(staging, args.out)
    n_files = sum(len(e.files) for e in entries)
    print(f"wrote {n_files} files and {args.out / 'index.html'}")
    return 0
