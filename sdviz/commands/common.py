"""What the `sdviz` commands share: argument types, resolved settings, notes, staged output.

Argument types raise `argparse.ArgumentTypeError`, so a bad value is a usage error
(exit code 2) before any model is loaded. `settings` resolves what a run really used
(the model's recommendation or the user's flag, and where each came from); `notes`
says the prompt notices once on stderr; `staged` writes into a temporary folder beside
`--out` and moves the files into place only when everything worked.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..language import LANGUAGES, Texts, course_language

DEFAULT_PROMPT = "a red circle to the left of a blue square"


# what the commands say in the course's language (model_description: the gallery's index.html)
T = Texts(
    __name__,
    {
        "tiny_family": (
            "{model} (a random tiny pipeline built in code)",
            "{model}（用代码构建、权重随机的微型流水线）",
        ),
        "tiny": (
            "{model} (the random tiny pipeline built in code)",
            "{model}（用代码构建、权重随机的微型流水线）",
        ),
        "embedded": ("embedded sdviz-mini ({where})", "内置的 sdviz-mini（{where}）"),
        "note": ("note: {text}", "注意：{text}"),  # a line on stderr
    },
)


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


def pixel_size(name: str) -> Callable[[str], int]:
    """An argparse type for an image side called `name`: pixels, a multiple of diffusers'
    `sdviz.autoencoder.PIPELINE_SIZE_MULTIPLE` (a model whose VAE needs a larger multiple
    is still checked by `sdviz.generate`)."""

    def parse(text: str) -> int:
        from ..autoencoder import PIPELINE_SIZE_MULTIPLE, check_size

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of pixels, got {text!r}"
            ) from None
        why = "diffusers' Stable Diffusion pipelines take no other sizes"
        try:
            return check_size(name, value, PIPELINE_SIZE_MULTIPLE, why)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def scheduler_arg(text: str) -> str:
    from ..schedulers import canonical_name

    try:
        return canonical_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def prompt_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; describe an image")
    return text


def add_generation_command(
    subparsers: Any, name: str, *, out: Path, help: str, description: str
) -> argparse.ArgumentParser:
    """Add the parser of a command that generates (`sdviz trace`, `sdviz figures`), with
    the options they share: model, prompt, seed, steps, guidance, threads (steps and
    guidance default to what the model recommends) and --out (default `out`)."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("--out", type=Path, default=out, help=f"output folder (default: {out})")
    p.add_argument("--model", default=None, help="folder or hub id (default: embedded model)")
    p.add_argument("--prompt", type=prompt_arg, default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="denoising steps (default: the model's recommendation; 25 for sdviz-mini)",
    )
    p.add_argument(
        "--guidance",
        type=non_negative_float,
        default=None,
        help="classifier-free guidance scale (default: the model's recommendation; 3 for "
        "the embedded sdviz-mini, 7.5 for models that recommend nothing)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: sdviz.threads' choice, 1 for a small model "
        "such as sdviz-mini, or OMP_NUM_THREADS when set)",
    )
    return p


def add_lang_argument(p: argparse.ArgumentParser, what: str, more: str = "") -> None:
    """Add `--lang {en,zh}` to command `p`: the language of `what` (default None, resolved
    by `sdviz.language.course_language`, as the lessons' figures are); `more` ends the help."""
    p.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=None,
        help=f"language of {what}: en or zh (Simplified Chinese); default $SDVIZ_LANG, else "
        f"the word in ./sdviz-lang.txt, else en{'. ' + more if more else ''}",
    )


# -------------------------------------------------------------- what a run used


@dataclass(frozen=True)
class Settings:
    """The steps and guidance a command generates with, and where each came from."""

    steps: int
    steps_from: str
    guidance: float
    guidance_from: str


def settings(args: argparse.Namespace, pipe: Any) -> Settings:
    """`--steps` / `--guidance` when given, else the loaded model's recommendation."""
    from ..pipeline import recommended

    advice = recommended(pipe)
    steps, guidance = args.steps, args.guidance
    return Settings(
        steps=advice.num_inference_steps if steps is None else steps,
        steps_from=advice.source if steps is None else "--steps",
        guidance=advice.guidance_scale if guidance is None else guidance,
        guidance_from=advice.source if guidance is None else "--guidance",
    )


def model_description(model: str | None, pipe: Any, lang: str | None = None) -> str:
    """What `sdviz.load(model)` loaded, in words: 'embedded sdviz-mini (<folder>)', a
    folder or hub id, or the tiny pipeline built in code; in `lang` (default
    `sdviz.language.course_language`)."""
    from ..pipeline import EMBEDDED_MODEL, TINY, TINY_FAMILIES

    lang = course_language(lang)
    where = pipe.config.get("_name_or_path") or getattr(pipe, "name_or_path", "") or ""
    if model in TINY_FAMILIES:
        return T("tiny_family", lang, model=model)
    if not where or where == TINY:
        return T("tiny", lang, model=TINY)
    if model is None and Path(where).resolve() == EMBEDDED_MODEL.resolve():
        return T("embedded", lang, where=where)
    return str(where)


@contextmanager
def cpu_threads(threads: int | None, pipe: Any) -> Iterator[tuple[int, str]]:
    """Set torch's CPU threads for `pipe` (`sdviz.threads.configure_threads`: `threads`,
    or its default for this UNet's size); yields (count, where it came from); torch's
    previous count is restored on exit (commands also run inside tests and notebooks)."""
    import torch

    from ..builder import count_parameters
    from ..pipeline import denoiser
    from ..threads import configure_threads

    before = torch.get_num_threads()
    parameters = count_parameters(denoiser(pipe))
    try:
        used = configure_threads(threads, unet_parameters=parameters)
        yield used, "--threads" if threads is not None else "sdviz.threads' default"
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------- notes and output


def say_note(line: str) -> None:
    """One line on stderr (a note: 'note: <text>')."""
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class PromptNotices:
    """What `sdviz.generate` warns about a prompt, in every course language (language ->
    sentence, None: nothing to say): the words a closed-vocabulary model never saw
    (`sdviz.tracing.vocabulary_notice`) and what a too-long prompt loses
    (`sdviz.text.truncation_notice`)."""

    unknown: dict[str, str | None]
    too_long: dict[str, str | None]

    def every(self) -> list[str]:
        """Every sentence in every language (the warnings a command silences: the library
        warns in the course's language, which `--lang` may override)."""
        return [n for n in (*self.unknown.values(), *self.too_long.values()) if n]


def prompt_notices(pipe: Any, prompt: str) -> PromptNotices:
    """`PromptNotices` of `prompt` for `pipe`, computed without a generation."""
    from ..text import truncation_notice
    from ..tracing import vocabulary_notice

    return PromptNotices(
        unknown={lang: vocabulary_notice(pipe, prompt, lang) for lang in LANGUAGES},
        too_long={lang: truncation_notice(pipe.tokenizer, prompt, lang) for lang in LANGUAGES},
    )


@contextmanager
def notes(
    *notices: str | None,
    say: Callable[[str], None] = say_note,
    silence: Iterable[str] = (),
    lang: str = "en",
) -> Iterator[None]:
    """Say each notice (None: nothing to say) once as a note ('note: <text>' in `lang`),
    and silence the UserWarning `sdviz.generate` raises with the same text (or one of
    `silence`'s) inside the block (a Python warning would show it again, with a source
    line that means nothing to a command's user)."""
    with warnings.catch_warnings():
        for notice in dict.fromkeys(n for n in notices if n):
            say(T("note", lang, text=notice))
        for text in dict.fromkeys([*(n for n in notices if n), *silence]):
            warnings.filterwarnings("ignore", re.escape(text), UserWarning)
        yield


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


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Write into the yielded temporary folder; on success its files move into `out`, on
    any failure it is removed and `out` is left as it was."""
    staging = staged_output(out)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out)
