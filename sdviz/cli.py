"""The `sdviz` command line.

    sdviz trace --prompt "a red circle to the left of a blue square" --out sdviz-out

`trace` loads a model (the embedded one by default, see `sdviz.load`), traces one
generation with `sdviz.generate` and writes ``image.png`` (the final image),
``filmstrip.png`` (the predicted clean image x0_hat decoded at a few steps: DDIM's view
of the denoising, Song et al. 2021) and ``summary.txt`` (settings, timings and the
trace's contents). Output is written to a temporary folder first and moved into place
at the end, so a failed run leaves nothing half-written.

Subcommands are registered from `SUBCOMMANDS` ("module:function" strings, imported only
when the parser is built); each function receives argparse's subparsers object, adds its
parser and sets ``func`` (taking the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUBCOMMANDS = [
    "sdviz.cli:add_trace_command",
    "sdviz.figures.gallery:add_parser",
    "sdviz.training.recipe:add_parser",
]

DEFAULT_PROMPT = "a red circle to the left of a blue square"


class CommandError(Exception):
    """A failure to report as ``sdviz <command>: error: ...`` with exit code 1."""


# -------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def scheduler_arg(text: str) -> str:
    from .schedulers import canonical_name

    try:
        return canonical_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def prompt_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; describe an image")
    return text


# -------------------------------------------------------------- output helpers


def staged_output(out: Path) -> Path:
    """A fresh temporary folder next to `out` (same file system, so moves are renames)."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def publish(staging: Path, out: Path) -> None:
    """Move the staged files into `out` (created if missing), replacing same-named files."""
    if not out.exists():
        staging.chmod(0o755)  # mkdtemp made it private
        staging.rename(out)
        return
    for item in staging.iterdir():
        item.replace(out / item.name)
    staging.rmdir()


def filmstrip_steps(n_steps: int, frames: int) -> list[int]:
    """`frames` step indices spread evenly from the first to the last step."""
    frames = min(frames, n_steps)
    if frames == 1:
        return [n_steps - 1]
    return sorted({round(i * (n_steps - 1) / (frames - 1)) for i in range(frames)})


def save_filmstrip(images, titles: Sequence[str], path: Path, title: str = "") -> None:
    """Images (n, 3, H, W) in [0, 1] side by side, with matplotlib's object API only."""
    from matplotlib.figure import Figure

    n = len(images)
    fig = Figure(figsize=(1.9 * n, 2.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, image, text in zip(axes, images, titles, strict=True):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(text, fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)


def save_image(image, path: Path) -> None:
    """A (3, H, W) tensor in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


# -------------------------------------------------------------- sdviz trace


def add_trace_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trace",
        help="trace one generation; write image.png, filmstrip.png, summary.txt",
        description="Trace one generation and write the image, an x0-hat filmstrip and a summary.",
    )
    p.add_argument("--model", default=None, help="folder or hub id (default: embedded model)")
    p.add_argument("--prompt", type=prompt_arg, default=DEFAULT_PROMPT)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=25, help="denoising steps")
    p.add_argument(
        "--guidance",
        type=non_negative_float,
        default=None,
        help="CFG scale (default: 3 for the embedded model, 7.5 otherwise)",
    )
    p.add_argument("--scheduler", type=scheduler_arg, default=None, help="e.g. ddim, euler, dpm++")
    p.add_argument("--height", type=positive_int, default=None)
    p.add_argument("--width", type=positive_int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--frames", type=positive_int, default=6, help="filmstrip panels")
    p.add_argument("--out", type=Path, default=Path("sdviz-out"), help="output folder")
    p.set_defaults(func=run_trace)


def run_trace(args: argparse.Namespace) -> int:
    from .pipeline import load, recommended
    from .tracing import generate

    if args.guidance is None:
        args.guidance = recommended(args.model).guidance_scale

    staging = staged_output(args.out)
    try:
        times = {}
        t0 = time.perf_counter()
        pipe = load(args.model, device=args.device, dtype=args.dtype, scheduler=args.scheduler)
        times["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = generate(
            pipe,
            args.prompt,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            guidance_scale=args.guidance,
            seed=args.seed,
            height=args.height,
            width=args.width,
        )
        times["generate (traced)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        save_image(run["vae.image"], staging / "image.png")
        steps = filmstrip_steps(run["denoiser.pred_original_sample"].shape[0], args.frames)
        frames = run.decode(pipe, "pred_original_sample", steps=steps)
        ts = run["scheduler.step_timestep"]
        titles = [f"step {i + 1}/{len(ts)}  t={float(ts[i]):g}" for i in steps]
        save_filmstrip(frames, titles, staging / "filmstrip.png", f"x0-hat: {args.prompt}")
        times["decode + write"] = time.perf_counter() - t0
        (staging / "summary.txt").write_text(summary(args, pipe, run, times))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, args.out)
    print(f"wrote {args.out}/image.png, filmstrip.png, summary.txt")
    return 0


def summary(args: argparse.Namespace, pipe: Any, run: Any, times: dict[str, float]) -> str:
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    lines = ["sdviz trace", ""]
    lines += [f"{k:>16}: {v}" for k, v in settings.items()]
    lines += [
        f"{'loaded from':>16}: {pipe.config.get('_name_or_path') or '(built in code)'}",
        f"{'scheduler used':>16}: {type(pipe.scheduler).__name__}",
        f"{'device/dtype':>16}: {pipe.device} / {pipe.unet.dtype}",
        "",
        "timings (s)",
    ]
    lines += [f"{k:>16}: {v:.2f}" for k, v in times.items()]
    lines += ["", repr(run), ""]
    return "\n".join(lines)


# -------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdviz", description="The Illustrated Stable Diffusion, runnable."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for spec in SUBCOMMANDS:
        module, _, name = spec.partition(":")
        getattr(importlib.import_module(module), name)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sdviz ...``; returns the exit code (0 ok, 1 failed, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return int(exit_.code or 0)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, TypeError, OSError, ImportError) as err:
        print(f"sdviz {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
