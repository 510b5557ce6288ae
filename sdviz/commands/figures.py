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
from ..language import Texts, course_language
from .common import (
    CommandError,
    add_generation_command,
    add_lang_argument,
    cpu_threads,
    model_description,
    notes,
    prompt_notices,
    settings,
    staged,
)
from .gallery_html import Entry, write_index

DEFAULT_OUT = Path("sdviz-figures")  # --lang zh: sdviz-figures-zh (the same file names)
# the sweep shows no guidance, Stable Diffusion's usual 7.5 and an over-guided 15 next to
# the run's own scale (the model's recommendation unless --guidance)
SWEEP_SCALES = (1.0, 7.5, 15.0)  # extra guidance scales rendered next to the run's own
CLIP_CAPTIONS = ("a green triangle", "a yellow star")  # contrast captions for figure 8
STOPWORDS = {"a", "an", "the", "of", "to", "and", "on", "in", "with", "at", "<start>", "<end>"}
MAX_ATTENTION_WORDS = 6

# the figures in article order; each has a title and a caption in `T` ({word}: the word of
# the drill-down)
FIGURES = (
    "01_components",
    "02_forward_noising",
    "03_noise_schedule",
    "04_training_example",
    "05_denoising_filmstrip",
    "06_latent_space",
    "07_tokens_and_embeddings",
    "08_clip_similarity",
    "09_unet_diagram",
    "09b_timestep_embedding",
    "10_cross_attention",
    "10b_attention_drilldown",
    "11_guidance_terms",
    "11b_guidance_sweep",
    "11c_guidance_benefit",
)
ANIMATION = "05b_denoising_animation"  # the animation of the run, shown after the filmstrip
ANIMATION_AFTER = "05_denoising_filmstrip"
# every title, caption and skip note of the gallery, and its one sentence about the run:
# "<name>.title", "<name>.caption", "<name>.skipped"
T = Texts(
    __name__,
    {
        "01_components.title": ("Components", "组件"),
        "01_components.caption": (
            "The text encoder, the UNet with its scheduler and the VAE decoder, with the loaded model's shapes and parameter counts.",
            "文本编码器、UNet 及其调度器，以及 VAE 解码器，并标出已加载模型的形状和参数量。",
        ),
        "02_forward_noising.title": ("Forward noising", "前向加噪"),
        "02_forward_noising.caption": (
            "The generated image noised to increasing timesteps t: in pixel space (top), and in latent space drawn by a linear latent→RGB preview (middle) and decoded by the VAE (bottom).",
            "把生成的图像加噪到逐渐增大的时间步 t：在像素空间中（上），以及在潜在空间中，用潜在表示→RGB 的线性预览画出（中）和经 VAE 解码（下）。",
        ),
        "03_noise_schedule.title": ("Noise schedule", "噪声调度"),
        "03_noise_schedule.caption": (
            "ᾱ_t, σ_t and the signal-to-noise ratio over the training timesteps. The samplers (the run's, Euler, DPM++) share one curve, the model's training schedule; they differ only in which timesteps they visit (markers).",
            "ᾱ_t、σ_t 和信噪比随训练时间步的变化。各个采样器（本次运行的、Euler、DPM++）共用同一条曲线，即模型训练时的调度；它们只在访问哪些时间步上不同（图中的点）。",
        ),
        "04_training_example.title": ("A training example", "一个训练样例"),
        "04_training_example.caption": (
            "A clean latent, the noise added, the noisy latent at t, the UNet's noise prediction and its error; right: the error over t.",
            "干净的潜在表示、加入的噪声、时间步 t 的含噪潜在表示、UNet 对噪声的预测及其误差；右：误差随 t 的变化。",
        ),
        "05_denoising_filmstrip.title": ("Denoising filmstrip", "去噪胶片"),
        "05_denoising_filmstrip.caption": (
            "x_t as a linear latent→RGB preview (top) and decoded by the VAE (middle), and the predicted clean image x̂0 decoded (bottom), at several steps counted from 0.",
            "x_t 的线性预览（潜在表示→RGB，上）和经 VAE 解码的结果（中），以及解码后的预测的干净图像 x̂0（下），取自从 0 开始计数的若干步。",
        ),
        "05b_denoising_animation.title": ("Denoising animation", "去噪动画"),
        "05b_denoising_animation.caption": (
            "x_t (linear preview and VAE-decoded) and x̂0 decoded at every step of the run.",
            "本次运行每一步的 x_t（线性预览和经 VAE 解码）以及解码后的 x̂0。",
        ),
        "06_latent_space.title": ("Latent space", "潜在空间"),
        "06_latent_space.caption": (
            "The image, its latent channels and the VAE's reconstruction, with the compression ratio.",
            "图像、它的潜在通道和 VAE 的重建，并标出压缩比。",
        ),
        "07_tokens_and_embeddings.title": ("Tokens and embeddings", "标记与嵌入"),
        "07_tokens_and_embeddings.caption": (
            "The prompt's tokens padded to the text encoder's length, and the matrix of token embeddings.",
            "提示词的标记（填充到文本编码器的长度），以及标记嵌入矩阵。",
        ),
        "08_clip_similarity.title": ("CLIP similarity", "CLIP 相似度"),
        "08_clip_similarity.caption": (
            "Cosine similarity between images and captions in CLIP's shared embedding space.",
            "在 CLIP 共享的嵌入空间中，图像与描述之间的余弦相似度。",
        ),
        "08_clip_similarity.skipped": (
            "Skipped: this model ships no CLIP model (a clip/ folder next to it).",
            "已跳过：这个模型没有附带 CLIP 模型（模型旁边的 clip/ 文件夹）。",
        ),
        "09_unet_diagram.title": ("Inside the UNet", "UNet 内部"),
        "09_unet_diagram.caption": (
            "Down, mid and up blocks with their channels and resolutions, the skip connections, where the ResNets, self- and cross-attention layers sit, and where the timestep and the text enter.",
            "下采样块、中间块和上采样块及其通道数与分辨率，跳跃连接，ResNet 块、自注意力层和交叉注意力层所在的位置，以及时间步和文本从哪里进入。",
        ),
        "09b_timestep_embedding.title": ("How the UNet knows t", "UNet 如何知道 t"),
        "09b_timestep_embedding.caption": (
            "The sinusoidal features of t and what the model's MLP makes of them.",
            "t 的正弦特征，以及模型的多层感知机（MLP）把它们变成了什么。",
        ),
        "10_cross_attention.title": ("Cross-attention", "交叉注意力"),
        "10_cross_attention.caption": (
            "Where each word of the prompt attends on the image, averaged over steps, heads and layers.",
            "提示词中的每个词关注图像的哪些位置，对步数、注意力头和层取平均。",
        ),
        "10b_attention_drilldown.title": (
            "Cross-attention per layer and step",
            "逐层、逐步的交叉注意力",
        ),
        "10b_attention_drilldown.caption": (
            "The attention of the word {word} in every cross-attention layer (rows) at several steps (columns).",
            "词 {word} 在每个交叉注意力层（行）、若干步（列）上的注意力。",
        ),
        "11_guidance_terms.title": ("Classifier-free guidance", "无分类器引导"),
        "11_guidance_terms.caption": (
            "The unconditional and text-conditioned noise predictions, their difference and the guided prediction; right: the text's push per step.",
            "无条件的和以文本为条件的噪声预测、两者之差以及引导后的预测；右：文本在每一步带来的推动。",
        ),
        "11_guidance_terms.skipped": (
            "Skipped: the run used no guidance (--guidance 1 or less).",
            "已跳过：本次运行没有使用引导（--guidance 为 1 或更小）。",
        ),
        "11b_guidance_sweep.title": ("Guidance-scale sweep", "引导系数扫描"),
        "11b_guidance_sweep.caption": (
            "The same prompt and seed at several guidance scales.",
            "同一提示词、同一随机种子在几个不同引导系数下的结果。",
        ),
        "11c_guidance_benefit.title": ("Guidance, measured", "引导的实测效果"),
        "11c_guidance_benefit.caption": (
            "What guidance buys and costs on this model, scored from pixels by benchmarks/guidance_sweep.py (the model's guidance.json): prompts followed per task, and how far the drawings stray from the training images, against the guidance scale g; beneath, the prompt at each measured scale.",
            "引导在这个模型上带来的好处和代价，由基准测试 benchmarks/guidance_sweep.py 从像素打分（模型的 guidance.json）：每类任务中遵循提示词的比例，以及画出的图像偏离训练图像多远，横轴是引导系数 g；下方是该提示词在每个测过的引导系数下的图像。",
        ),
        "11c_guidance_benefit.skipped": (
            "Skipped: this model ships no guidance measurements (a guidance.json beside it, written by benchmarks/guidance_sweep.py).",
            "已跳过：这个模型没有附带引导的测量结果（模型旁边由基准测试 benchmarks/guidance_sweep.py 写出的 guidance.json）。",
        ),
        "too_long": (
            "{notice}. sdviz figures draws every word of the prompt, so it stops here: "
            "shorten the prompt.",
            "{notice}。sdviz figures 要为提示词中的每个词作图，所以到此停止：请缩短提示词。",
        ),
        "about": (
            "Model: {model} ({denoiser}, {scheduler}); prompt: “{prompt}”; seed {seed}; {steps} steps (from {steps_from}); guidance {guidance} (from {guidance_from}).",
            "模型：{model}（{denoiser}，{scheduler}）；提示词：“{prompt}”；随机种子 {seed}；{steps} 步（来源：{steps_from}）；引导系数 {guidance}（来源：{guidance_from}）。",
        ),
    },
)  # fmt: skip


def gallery_entry(name: str, lang: str, note: str = "", **fields: str) -> Entry:
    """The gallery entry of figure `name` in `lang`: its title and caption from `T`."""
    title, caption = T(f"{name}.title", lang), T(f"{name}.caption", lang, **fields)
    return Entry(name, title, caption, note=note)


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
    add_lang_argument(
        p,
        "the figures and index.html",
        "--lang zh writes into sdviz-figures-zh unless --out is given",
    )
    p.set_defaults(out=None)  # --out's default depends on --lang (see `out_folder`)
    p.add_argument(
        "--format",
        type=format_list,
        default=("png",),
        help=f"comma-separated figure formats from {','.join(FORMATS)} (default png)",
    )
    p.set_defaults(func=main)
    return p


def out_folder(out: Path | None, lang: str) -> Path:
    """`--out` if given, else DEFAULT_OUT (sdviz-figures-zh for Chinese: both galleries
    have the same file names, so they live side by side)."""
    if out is not None:
        return out
    return DEFAULT_OUT if lang == "en" else DEFAULT_OUT.with_name(f"{DEFAULT_OUT.name}-{lang}")


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
    decoded step images (`sdviz.probes.step_images`), computed once when first needed.
    `args.lang` (None: the course's language) is the figures' and captions' language."""
    from .. import figures as F
    from .. import probes
    from ..autoencoder import reconstruct
    from ..figures.guidance import uses_guidance
    from ..tracing import generate

    images = images or step_images_once(run, pipe)
    lang = course_language(getattr(args, "lang", None))

    def sweep():
        own = run["pipeline.guidance_scale"]
        scales = [g for g in SWEEP_SCALES if g != own]
        runs = probes.guidance_runs(pipe, args.prompt, scales, seed=args.seed, steps=args.steps)
        runs = sorted(runs + [run], key=lambda r: r["pipeline.guidance_scale"])
        return F.guidance_sweep(runs, lang=lang)

    def benefit():
        own = run["pipeline.guidance_scale"]
        extra = [g for g in measured.scales if g != own]
        runs = probes.guidance_runs(pipe, args.prompt, extra, seed=args.seed, steps=args.steps)
        runs += [run] if own in measured.scales else []
        runs = sorted(runs, key=lambda r: r["pipeline.guidance_scale"])
        return F.guidance_benefit(measured, runs, lang=lang)

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
        return F.clip_similarity(embeddings, lang=lang)

    steps = run.n_steps
    word = run.words[-2] if len(run.words) > 2 else 0
    clip = find_clip(pipe)
    measured = find_measured_guidance(pipe)
    makers = {
        "01_components": lambda: F.components(pipe, run, lang=lang),
        "02_forward_noising": lambda: F.forward_noising(probes.noised_images(pipe, run), lang=lang),
        "03_noise_schedule": lambda: F.noise_schedule(run, "euler", "dpm++", steps=[None, steps, steps], lang=lang),
        "04_training_example": lambda: F.training_example(probes.noise_predictions(pipe, run), lang=lang),
        "05_denoising_filmstrip": lambda: F.denoising_filmstrip(run, images=images(), lang=lang),
        "06_latent_space": lambda: F.latent_space(reconstruct(pipe, run), lang=lang),
        "07_tokens_and_embeddings": lambda: F.tokens_and_embeddings(run, lang=lang),
        "08_clip_similarity": similarity if clip else None,
        "09_unet_diagram": lambda: F.unet_diagram(pipe, latent_size=run["denoiser.latents"].shape[-1], lang=lang),
        "09b_timestep_embedding": lambda: F.timestep_embedding(probes.timestep_embeddings(pipe), lang=lang),
        "10_cross_attention": lambda: F.cross_attention(run, attention_words(run) or None, lang=lang),
        "10b_attention_drilldown": lambda: F.attention_drilldown(run, word, lang=lang),
        "11_guidance_terms": (lambda: F.guidance_terms(run, lang=lang)) if uses_guidance(run) else None,
        "11b_guidance_sweep": sweep,
        "11c_guidance_benefit": benefit if measured else None,
    }  # fmt: skip
    out = []
    for name in FIGURES:
        make = makers[name]
        note = "" if make else T(f"{name}.skipped", lang)
        out.append((gallery_entry(name, lang, note, word=repr(word)), make))
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


def about(args: argparse.Namespace, pipe: Any, used: Any, model: str, lang: str = "en") -> str:
    """The run in one sentence for index.html: the values used and where they came from."""
    from ..pipeline import denoiser

    return T(
        "about", lang, model=model, denoiser=type(denoiser(pipe)).__name__,
        scheduler=type(pipe.scheduler).__name__, prompt=args.prompt, seed=args.seed,
        steps=used.steps, steps_from=used.steps_from, guidance=f"{used.guidance:g}",
        guidance_from=used.guidance_from,
    )  # fmt: skip


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
    from ..tracing import generate

    def say(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    lang = course_language(args.lang)
    args = argparse.Namespace(**{**vars(args), "lang": lang, "out": out_folder(args.out, lang)})
    with staged(args.out) as staging, tqdm(total=PROGRESS_STEPS, desc="sdviz figures") as bar:
        bar.set_postfix_str("loading model")
        pipe = load(args.model)
        check_family(pipe)
        used = settings(args, pipe)
        args = argparse.Namespace(**{**vars(args), "steps": used.steps, "guidance": used.guidance})
        bar.update()
        said = prompt_notices(pipe, args.prompt)
        with (
            cpu_threads(args.threads, pipe),
            notes(said.unknown[lang], say=say, silence=said.every(), lang=lang),
        ):
            if said.too_long[lang]:
                raise CommandError(T("too_long", lang, notice=said.too_long[lang]))
            bar.set_postfix_str("tracing the generation")
            run = generate(
                pipe,
                args.prompt,
                steps=used.steps,
                guidance_scale=used.guidance,
                seed=args.seed,
                attention_layers="attn2",
                lang=lang,
            )
            bar.update()
            entries = draw(pipe, run, args, staging, bar)
        bar.set_postfix_str("index.html")
        model = model_description(args.model, pipe, lang)
        write_index(staging, entries, about(args, pipe, used, model, lang), lang=lang)
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
    lang = course_language(getattr(args, "lang", None))
    movie = gallery_entry(ANIMATION, lang)
    for suffix in (".gif", ".mp4") if mp4_available() else (".gif",):
        denoising_animation(run, folder / f"{movie.name}{suffix}", images=images(), lang=lang)
        movie.files.append(f"{movie.name}{suffix}")
    after = next(i for i, e in enumerate(entries) if e.name == ANIMATION_AFTER)
    entries.insert(after + 1, movie)
    bar.update()
    return entries
