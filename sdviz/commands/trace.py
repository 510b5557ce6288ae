"""`sdviz trace`: one traced generation, written as an image, a filmstrip and a summary.

    sdviz trace --prompt "a red circle to the left of a blue square" --out sdviz-out

Loads a model (the embedded one by default, see `sdviz.load`), traces one generation
with `sdviz.generate` at the model's recommended steps and guidance (or `--steps`,
`--guidance`) and writes ``image.png`` (the final image), ``filmstrip.png`` (the
predicted clean image x0_hat decoded at a few steps: DDIM's view of the denoising, Song
et al. 2021) and ``summary.txt`` (what the run really used, timings, the trace's
contents). `--lang zh` draws the filmstrip's titles in Chinese (with the CJK font, as
`sdviz figures --lang zh`) and says the prompt notes in Chinese; summary.txt stays
English (its rows name the command's flags and the run's keys). Output is written to a
temporary folder first and moved into place at the end, so a failed run leaves nothing
half-written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..language import Texts, course_language
from .common import (
    Settings,
    add_generation_command,
    add_lang_argument,
    cpu_threads,
    model_description,
    notes,
    pixel_size,
    positive_int,
    prompt_notices,
    scheduler_arg,
    settings,
    staged,
)

# transformers logs "Token indices sequence length is longer than ..." once per tokenizer
# when diffusers tokenizes a long prompt untruncated; marked as said under this key, it is
# left out: the truncation note says it once, readably
# filmstrip.png's words: a panel's title ({last}: the run's last step, steps counted from 0;
# {t}: the scheduler's timestep) and the strip's
T = Texts(
    __name__,
    {
        "frame": ("step {i} (of 0…{last})  t={t:g}", "第 {i} 步（共 0…{last} 步）  t={t:g}"),
        "strip": ("x0-hat: {prompt}", "预测的干净图像 x̂0：{prompt}"),
    },
)
KEYS_LINE = (
    "The keys above are the recorded values; the meaning of each key is in sdviz.tracing.keys."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `sdviz trace` on argparse subparsers (sets `func=run_trace`)."""
    p = add_generation_command(
        subparsers,
        "trace",
        out=Path("sdviz-out"),
        help="trace one generation; write image.png, filmstrip.png, summary.txt",
        description="Trace one generation and write the image, an x0-hat filmstrip and a summary.",
    )
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", type=scheduler_arg, default=None, help="e.g. ddim, euler, dpm++")
    p.add_argument("--height", type=pixel_size("height"), default=None, help="image height (px)")
    p.add_argument("--width", type=pixel_size("width"), default=None, help="image width (px)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--frames", type=positive_int, default=6, help="filmstrip panels")
    add_lang_argument(
        p, "filmstrip.png's titles and the notes on stderr", "summary.txt is always English"
    )
    p.set_defaults(func=run_trace)
    return p


def run_trace(args: argparse.Namespace) -> int:
    from ..figures.image_row import filmstrip, filmstrip_steps
    from ..figures.style import save
    from ..pipeline import load
    from ..tracing import generate

    lang = course_language(getattr(args, "lang", None))
    with staged(args.out) as staging:
        times = {}
        t0 = time.perf_counter()
        pipe = load(args.model, device=args.device, dtype=args.dtype, scheduler=args.scheduler)
        times["load"] = time.perf_counter() - t0
        used = settings(args, pipe)
        said = prompt_notices(pipe, args.prompt)
        with (
            cpu_threads(args.threads, pipe) as threads,
            notes(said.unknown[lang], said.too_long[lang], silence=said.every(), lang=lang),
        ):
            t0 = time.perf_counter()
            run = generate(
                pipe,
                args.prompt,
                negative_prompt=args.negative_prompt,
                steps=used.steps,
                guidance_scale=used.guidance,
                seed=args.seed,
                height=args.height,
                width=args.width,
                lang=lang,
            )
            times["generate (traced)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            save_image(run["vae.image"], staging / "image.png")
            steps = filmstrip_steps(run.n_steps, args.frames)
            frames = run.decode(pipe, "pred_original_sample", steps=steps)
            ts = run["scheduler.step_timestep"]
            titles = [T("frame", lang, i=i, last=len(ts) - 1, t=float(ts[i])) for i in steps]
            strip = filmstrip(frames, titles, T("strip", lang, prompt=args.prompt), lang=lang)
            save(strip, staging / "filmstrip.png")
            times["decode + write"] = time.perf_counter() - t0
        text = summary(args, pipe, run, used, threads, times)
        (staging / "summary.txt").write_text(text, encoding="utf-8")
    print(f"wrote {args.out}/image.png, filmstrip.png, summary.txt")
    return 0


def save_image(image: Any, path: Path) -> None:
    """A (3, H, W) tensor in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array).save(path)


def summary(
    args: argparse.Namespace,
    pipe: Any,
    run: Any,
    used: Settings,
    threads: tuple[int, str],
    times: dict[str, float],
) -> str:
    """summary.txt, in English: what the run really used (resolved, with where each value
    came from), the timings, and the run's keys."""
    from ..pipeline import denoiser

    height, width = run["vae.image"].shape[-2:]
    scheduler = type(pipe.scheduler).__name__
    rows = {
        "prompt": args.prompt,
        "negative prompt": args.negative_prompt or "(none)",
        "seed": args.seed,
        "model": model_description(args.model, pipe, "en"),
        "scheduler": f"{scheduler} ("
        + (f"--scheduler {args.scheduler}" if args.scheduler else "the model's own")
        + ")",
        "image": f"{height}×{width} pixels (height×width)",
        "guidance": f"{run['pipeline.guidance_scale']:g}, from {used.guidance_from}",
        "steps": f"{run['pipeline.num_inference_steps']}, from {used.steps_from}",
        "device / dtype": f"{pipe.device} / {denoiser(pipe).dtype}",
        "CPU threads": f"{threads[0]}, from {threads[1]}",
        "filmstrip frames": args.frames,
    }
    lines = ["sdviz trace", ""]
    lines += [f"{k:>16}: {v}" for k, v in rows.items()]
    lines += ["", "timings (s)"]
    lines += [f"{k:>18}: {v:.2f}" for k, v in times.items()]
    lines += ["", run.describe_keys("en"), "", KEYS_LINE, ""]  # summary.txt: English
    return "\n".join(lines)
