"""`sdviz figures`: every explanatory figure from one real run, plus an HTML gallery.

    sdviz figures --prompt "a red circle to the left of a blue square" --out sdviz-figures

Loads a model (the embedded one by default, `sdviz.load`), traces one generation with
per-layer cross-attention (`sdviz.generate`) at the model's recommended steps and
guidance (or `--steps`, `--guidance`), draws the explanatory figures in the order of
"The Illustrated Stable Diffusion"'s story (see `sdviz.figures`) — the pipeline's parts,
forward noising and the noise schedule, a training example, the denoising steps, the
latent space, tokens and embeddings, CLIP, the UNet, cross-attention, classifier-free
guidance and its measured benefit — in the requested formats, a GIF of the run (and an
MP4 where ffmpeg exists) and `index.html` (`gallery_html`) with the settings used, a
caption under each figure and a link to every file. Files are written into a temporary
folder beside `--out` and moved into place at the end: a failure leaves no half-written
gallery.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..figures.style import FORMATS
from .common import (
    CommandError,
    add_generation_command,
    cpu_threads,
    model_description,
    notes,
    settings,
    staged,
)
from .gallery_html import Entry, write_index

DEFAULT_OUT = Path("sdviz-figures")
# the sweep shows no guidance, Stable Diffusion's usual 7.5 and an over-guided 15 next to
# the run's own scale (the model's recommendation unless --guidance)
SWEEP_SCALES = (1.0, 7.5, 15.0)  # extra guidance scales rendered next to the run's own
CLIP_CAPTIONS = ("a green triangle", "a yellow star")  # contrast captions for figure 8
STOPWORDS = {"a", "an", "the", "of", "to", "and", "on", "in", "with", "at", "<start>", "<end>"}
MAX_ATTENTION_WORDS = 6

# name, title, caption ({word}: the word of the drill-down), in article order
FIGURES = (
    ("01_components", "Components", "The text encoder, the UNet with its scheduler and the VAE decoder, with the loaded model's shapes and parameter counts."),
    ("02_forward_noising", "Forward noising", "The generated image noised to increasing timesteps t: in pixel space (top), and in latent space drawn by a linear latent→RGB preview (middle) and decoded by the VAE (bottom)."),
    ("03_noise_schedule", "Noise schedule", "ᾱ_t, σ_t and the signal-to-noise ratio over the training timesteps. The samplers (the run's, Euler, DPM++) share one curve, the model's training schedule; they differ only in which timesteps they visit (markers)."),
    ("04_training_example", "A training example", "A clean latent, the noise added, the noisy latent at t, the UNet's noise prediction and its error; right: the error over t."),
    ("05_denoising_filmstrip", "Denoising filmstrip", "x_t as a linear latent→RGB preview (top) and decoded by the VAE (middle), and the predicted clean image x̂0 decoded (bottom), at several steps counted from 0."),
    ("06_latent_space", "Latent space", "The image, its latent channels and the VAE's reconstruction, with the compression ratio."),
    ("07_tokens_and_embeddings", "Tokens and embeddings", "The prompt's tokens padded to the text encoder's length, and the matrix of token embeddings."),
    ("08_clip_similarity", "CLIP similarity", "Cosine similarity between images and captions in CLIP's shared embedding space."),
    ("09_unet_diagram", "Inside the UNet", "Down, mid and up blocks with their channels and resolutions, the skip connections, where the ResNets, self- and cross-attention layers sit, and where the timestep and the text enter."),
    ("09b_timestep_embedding", "How the UNet knows t", "The sinusoidal features of t and what the model's MLP makes of them."),
    ("10_cross_attention", "Cross-attention", "Where each word of the prompt attends on the image, averaged over steps, heads and layers."),
    ("10b_attention_drilldown", "Cross-attention per layer and step", "The attention of the word {word} in every cross-attention layer (rows) at several steps (columns)."),
    ("11_guidance_terms", "Classifier-free guidance", "The unconditional and text-conditioned noise predictions, their difference and the guided prediction; right: the text's push per step."),
    ("11b_guidance_sweep", "Guidance-scale sweep", "The same prompt and seed at several guidance scales."),
    ("11c_guidance_benefit", "Guidance, measured", "What guidance buys and costs on this model, scored from pixels by benchmarks/guidance_sweep.py (the model's guidance.json): prompts followed per task, and how far the drawings stray from the training images, against the guidance scale g; beneath, the prompt at each measured scale."),
)  # fmt: skip
SKIPPED = {
    "08_clip_similarity": "Skipped: this model ships no CLIP model (a clip/ folder next to it).",
    "11_guidance_terms": "Skipped: the run used no guidance (--guidance 1 or less).",
    "11c_guidance_benefit": "Skipped: this model ships no guidance measurements (a "
    "guidance.json beside it, written by benchmarks/guidance_sweep.py).",
}
# name, title, caption of the animation, shown after the filmstrip
ANIMATION = (
    "05b_denoising_animation",
    "Denoising animation",
    "x_t (linear preview and VAE-decoded) and x̂0 decoded at every step of the run.",
)
ANIMATION_AFTER = "05_denoising_filmstrip"
# the progress bar's steps: load, trace, each figure, the animation, index.html
PROGRESS_STEPS = 2 + len(FIGURES) + 2


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
    p = add_generation_command(
        subparsers,
        "figures",
        out=DEFAULT_OUT,
        help="write every explanatory figure and an index.html gallery",
        description="Trace one generation and write every explanatory figure, from the "
        "pipeline's parts to guidance, plus an HTML gallery.",
    )
    p.add_argument(
        "--format",
        type=format_list,
        default=("png",),
        help=f"comma-separated figure formats from {','.join(FORMATS)} (default png)",
    )
    p.set_defaults(func=main)
    return p


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


def plan(
    pipe: Any, run: Any, args: argparse.Namespace, images: Callable[[], Any] | None = None
) -> list[tuple[Entry, Callable | None]]:
    """The figures to draw, in article order: (entry, function returning a Figure, or
    None for a figure this run cannot have). `args.steps` and `args.guidance` are the
    values the run used; every extra generation uses them too. `images`: the run's
    decoded step images (`sdviz.probes.step_images`), computed once when first needed."""
    from .. import figures as F
    from .. import probes
    from ..autoencoder import reconstruct
    from ..figures.guidance import uses_guidance
    from ..tracing import generate

    images = images or step_images_once(run, pipe)

    def sweep():
        own = run["pipeline.guidance_scale"]
        scales = [g for g in SWEEP_SCALES if g != own]
        runs = probes.guidance_runs(pipe, args.prompt, scales, seed=args.seed, steps=args.steps)
        return F.guidance_sweep(sorted(runs + [run], key=lambda r: r["pipeline.guidance_scale"]))

    def benefit():
        own = run["pipeline.guidance_scale"]
        extra = [g for g in measured.scales if g != own]
        runs = probes.guidance_runs(pipe, args.prompt, extra, seed=args.seed, steps=args.steps)
        runs += [run] if own in measured.scales else []
        return F.guidance_benefit(
            measured, sorted(runs, key=lambda r: r["pipeline.guidance_scale"])
        )

    def similarity():
        model, tokenizer, mean, std = clip
        others = [
            generate(
                pipe, c, steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                attention=None,
            )
            for c in CLIP_CAPTIONS
        ]  # fmt: skip
        embeddings = probes.clip_embeddings(
            [run, *others], model=model, tokenizer=tokenizer, image_mean=mean, image_std=std
        )
        return F.clip_similarity(embeddings)

    steps = run.n_steps
    word = run.words[-2] if len(run.words) > 2 else 0
    clip = find_clip(pipe)
    measured = find_measured_guidance(pipe)
    makers = {
        "01_components": lambda: F.components(pipe, run),
        "02_forward_noising": lambda: F.forward_noising(probes.noised_images(pipe, run)),
        "03_noise_schedule": lambda: F.noise_schedule(run, "euler", "dpm++", steps=[None, steps, steps]),
        "04_training_example": lambda: F.training_example(probes.noise_predictions(pipe, run)),
        "05_denoising_filmstrip": lambda: F.denoising_filmstrip(run, images=images()),
        "06_latent_space": lambda: F.latent_space(reconstruct(pipe, run)),
        "07_tokens_and_embeddings": lambda: F.tokens_and_embeddings(run),
        "08_clip_similarity": similarity if clip else None,
        "09_unet_diagram": lambda: F.unet_diagram(pipe, latent_size=run["denoiser.latents"].shape[-1]),
        "09b_timestep_embedding": lambda: F.timestep_embedding(probes.timestep_embeddings(pipe)),
        "10_cross_attention": lambda: F.cross_attention(run, attention_words(run) or None),
        "10b_attention_drilldown": lambda: F.attention_drilldown(run, word),
        "11_guidance_terms": (lambda: F.guidance_terms(run)) if uses_guidance(run) else None,
        "11b_guidance_sweep": sweep,
        "11c_guidance_benefit": benefit if measured else None,
    }  # fmt: skip
    out = []
    for name, title, caption in FIGURES:
        make = makers[name]
        note = "" if make else SKIPPED[name]
        out.append((Entry(name, title, caption.format(word=repr(word)), note=note), make))
    return out


def find_measured_guidance(pipe: Any) -> Any:
    """The guidance sweep shipped beside the model (`sdviz.probes.measured_guidance`), or
    None for a model without one (SD 1.5, a pipeline built in code)."""
    from ..probes.guidance import measured_guidance

    try:
        return measured_guidance(pipe)
    except FileNotFoundError:
        return None


def step_images_once(run: Any, pipe: Any) -> Callable[[], Any]:
    """A function returning the run's x_t and x̂0 decoded at every step (figure 5 and the
    animation), decoded at its first call only."""
    from functools import cache

    from ..probes import step_images

    return cache(lambda: step_images(run, pipe))


def about(args: argparse.Namespace, pipe: Any, used: Any, model: str) -> str:
    """The run in one sentence for index.html: the values used and where they came from."""
    from ..pipeline import denoiser

    return (
        f"Model: {model} ({type(denoiser(pipe)).__name__}, {type(pipe.scheduler).__name__}); "
        f"prompt: “{args.prompt}”; seed {args.seed}; {used.steps} steps (from "
        f"{used.steps_from}); guidance {used.guidance:g} (from {used.guidance_from})."
    )


def check_family(pipe: Any) -> None:
    """The gallery follows the article's Stable Diffusion 1.x/2.x (its noising, training and
    UNet figures call SD's UNet and text encoder directly): any other family is refused
    with what works for it instead."""
    from ..pipeline import FAMILY_NAMES, family

    name = family(pipe)
    if name == "stable-diffusion":
        return
    raise CommandError(
        f"sdviz figures draws the article's gallery for {FAMILY_NAMES['stable-diffusion']} "
        f"pipelines; this model is {FAMILY_NAMES[name]} ({type(pipe).__name__}). For it, "
        "sdviz.generate(pipe, prompt) traces a Run, and sdviz.figures.components(pipe, run), "
        "noise_schedule(run), tokens_and_embeddings(run) and cross_attention(run) draw it; "
        "lessons/10_newer_families.py shows SDXL, SD3 and Flux side by side."
    )


def main(args: argparse.Namespace) -> int:
    """Run `sdviz figures` with parsed arguments; returns the exit code."""
    from tqdm.auto import tqdm

    from ..pipeline import load
    from ..text import truncation_notice
    from ..tracing import generate, vocabulary_notice

    def say(text: str) -> None:
        tqdm.write(f"note: {text}", file=sys.stderr)

    with staged(args.out) as staging, tqdm(total=PROGRESS_STEPS, desc="sdviz figures") as bar:
        bar.set_postfix_str("loading model")
        pipe = load(args.model)
        check_family(pipe)
        used = settings(args, pipe)
        args = argparse.Namespace(**{**vars(args), "steps": used.steps, "guidance": used.guidance})
        bar.update()
        with cpu_threads(args.threads, pipe), notes(vocabulary_notice(pipe, args.prompt), say=say):
            too_long = truncation_notice(pipe.tokenizer, args.prompt)
            if too_long:
                raise CommandError(
                    f"{too_long}. sdviz figures draws every word of the prompt, so it stops "
                    "here: shorten the prompt."
                )
            bar.set_postfix_str("tracing the generation")
            run = generate(
                pipe,
                args.prompt,
                steps=used.steps,
                guidance_scale=used.guidance,
                seed=args.seed,
                attention_layers="attn2",
            )
            bar.update()
            entries = draw(pipe, run, args, staging, bar)
        bar.set_postfix_str("index.html")
        write_index(staging, entries, about(args, pipe, used, model_description(args.model, pipe)))
        bar.update()
    n_files = sum(len(e.files) for e in entries)
    print(f"wrote {n_files} files and {args.out / 'index.html'}")
    return 0


def draw(pipe: Any, run: Any, args: argparse.Namespace, folder: Path, bar: Any) -> list[Entry]:
    """Write every figure of `plan` in `args.format` and the animation into `folder`, one
    progress `bar` step each; returns the gallery's entries in order."""
    from ..figures.animation import denoising_animation, mp4_available
    from ..figures.style import save

    images = step_images_once(run, pipe)
    entries = []
    for entry, make in plan(pipe, run, args, images):
        bar.set_postfix_str(entry.name)
        if make is not None:
            fig = make()
            for fmt in args.format:
                save(fig, folder / f"{entry.name}.{fmt}")
                entry.files.append(f"{entry.name}.{fmt}")
        entries.append(entry)
        bar.update()
    bar.set_postfix_str("animation")
    movie = Entry(*ANIMATION)
    for suffix in (".gif", ".mp4") if mp4_available() else (".gif",):
        denoising_animation(run, folder / f"{movie.name}{suffix}", images=images())
        movie.files.append(f"{movie.name}{suffix}")
    after = next(i for i, e in enumerate(entries) if e.name == ANIMATION_AFTER)
    entries.insert(after + 1, movie)
    bar.update()
    return entries
