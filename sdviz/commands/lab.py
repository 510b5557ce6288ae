"""`python -m sdviz.lab`: the lessons in JupyterLab, with `.py` lessons opening as notebooks.

The lessons are jupytext percent-format scripts. Jupytext's server extension lists
them as notebooks, but a double-click opens JupyterLab's text editor unless the
document manager's default viewer for Python files is "Jupytext Notebook". sdviz
ships that setting as `jupyter_config/labconfig/default_setting_overrides.json`
(JupyterLab reads `labconfig/default_setting_overrides.json` in every Jupyter
config directory), and this command puts that directory on `JUPYTER_CONFIG_PATH`:

    python -m sdviz.lab                 # = jupyter lab lessons/ (when ./lessons exists)
    python -m sdviz.lab --lang zh       # the Chinese lessons: jupyter lab lessons/zh/
    python -m sdviz.lab --port 8899     # any other `jupyter lab` arguments
    python -m sdviz.lab --help          # what it does, then see `jupyter lab --help`

`--lang` (en or zh, `sdviz.language.LANGUAGES`) picks the lessons' folder and sets
`SDVIZ_LANG` for the server's kernels, so figures, widgets and tables draw in that
language whatever notebook is opened. Without it the folder follows the course's
language (`SDVIZ_LANG`, else English) and each kernel finds its own: lessons/zh/ holds an
`sdviz-lang.txt` saying "zh", and Jupyter runs a notebook's kernel in its folder.

As root (a container) JupyterLab refuses to start without `--allow-root`; sdviz adds
it, with a note. To get the same settings in your own JupyterLab, run it with
`JUPYTER_CONFIG_PATH=$(python -c "import sdviz.lab; print(sdviz.lab.CONFIG_DIR)")`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..language import LANG_ENV, LANGUAGES, course_language

CONFIG_DIR = Path(__file__).resolve().parents[1] / "jupyter_config"
LESSONS = Path("lessons")  # served when no folder is named, if the current folder has it
LESSON_FOLDERS = {"en": LESSONS, "zh": LESSONS / "zh"}  # the lessons of each language
HELP_FLAGS = ("-h", "--help")
ROOT_FLAG = "--allow-root"
LANG_FLAG = "--lang"


class UsageError(ValueError):
    """A wrong sdviz.lab argument (exit code 2, like argparse's)."""


def take_lang(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """`--lang X` or `--lang=X` taken out of `args`: (X, the other arguments), or (None,
    `args`) without it. X must be one of LANGUAGES."""
    rest, lang = [], None
    items = iter(args)
    for arg in items:
        if arg == LANG_FLAG or arg.startswith(LANG_FLAG + "="):
            value = arg.partition("=")[2] if "=" in arg else next(items, "")
            if value not in LANGUAGES:
                raise UsageError(
                    f"{LANG_FLAG} takes one of {', '.join(LANGUAGES)} (en English, zh "
                    f"Simplified Chinese), got {value or 'nothing'!r}"
                )
            lang = value
        else:
            rest.append(arg)
    return lang, rest


def lab_env(env: Mapping[str, str] | None = None, *, lang: str | None = None) -> dict[str, str]:
    """A copy of `env` (default: os.environ) with sdviz's JupyterLab settings first on
    `JUPYTER_CONFIG_PATH`, and `SDVIZ_LANG` set to `lang` when one is given."""
    env = dict(os.environ if env is None else env)
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(CONFIG_DIR), *paths])
    if lang is not None:
        env[LANG_ENV] = lang
    return env


def names_a_folder(args: Sequence[str]) -> bool:
    """Whether `args` name what to serve: an argument that is not an option, nor the value
    of the option before it (`--port 8899`), unless it is an existing path."""
    previous = ""
    for arg in args:
        is_value = previous.startswith("-") and "=" not in previous
        if not arg.startswith("-") and (not is_value or Path(arg).exists()):
            return True
        previous = arg
    return False


def is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)  # not on Windows
    return geteuid is not None and geteuid() == 0


def lab_command(
    args: Sequence[str],
    *,
    root: bool | None = None,
    lessons: Path | None = None,
    lang: str = "en",
) -> tuple[list[str], list[str]]:
    """The `jupyter lab` command line for sdviz.lab's arguments, and the notes to print.

    `lessons` (default: the lessons folder of `lang`, `LESSON_FOLDERS`) is added when
    `args` name no folder and it exists; `--allow-root` when running as root (`root`:
    default, this process's effective user id is 0).
    """
    args = list(args)
    lessons = LESSON_FOLDERS[lang] if lessons is None else lessons
    said = []
    if not names_a_folder(args) and lessons.is_dir():
        args.append(str(lessons))
    if (is_root() if root is None else root) and not any(
        a == ROOT_FLAG or a.startswith("--ServerApp.allow_root") for a in args
    ):
        args.append(ROOT_FLAG)
        said.append(
            f"running as root, so sdviz passes {ROOT_FLAG} to JupyterLab (it refuses "
            "to start as root otherwise); run as an ordinary user where you can."
        )
    return [sys.executable, "-m", "jupyter", "lab", *args], said


def help_text(lessons: Path = LESSONS) -> str:
    """What `python -m sdviz.lab --help` prints."""
    found = "found" if lessons.is_dir() else "not found here, so JupyterLab serves this folder"
    zh = LESSON_FOLDERS["zh"]
    return f"""usage: python -m sdviz.lab [{LANG_FLAG} {{{",".join(LANGUAGES)}}}] [FOLDER] [JUPYTER LAB ARGUMENTS ...]

Open sdviz's lessons in JupyterLab, the jupytext .py lessons opening as notebooks
on a double-click: sdviz puts its JupyterLab settings ({CONFIG_DIR}) first on
JUPYTER_CONFIG_PATH for this JupyterLab only; your own Jupyter settings stay as they are.

{LANG_FLAG} en|zh: the course's language (zh: Simplified Chinese, 简体中文): serves
{zh} for zh and sets {LANG_ENV} for the kernels, so figures and widgets draw in it.
FOLDER: what to serve; by default the lessons folder of the current folder
({lessons.absolute()}: {found}).
Every other argument goes to `jupyter lab` unchanged (e.g. --port 8899, --no-browser).
As root, {ROOT_FLAG} is added for you, with a note.

JupyterLab's own options: jupyter lab --help
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the help, or replace this process by `jupyter lab` with sdviz's settings."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        chosen, args = take_lang(args)
        lang = course_language(chosen)  # without --lang: $SDVIZ_LANG, else English
    except ValueError as err:
        print(f"usage: python -m sdviz.lab [{LANG_FLAG} LANG] [FOLDER] ...", file=sys.stderr)
        print(f"sdviz.lab: error: {err}", file=sys.stderr)
        return 2
    if any(a in HELP_FLAGS for a in args):
        print(help_text(LESSON_FOLDERS[lang]), end="")
        return 0
    command, said = lab_command(args, lang=lang)
    for text in said:
        print(f"note: {text}", file=sys.stderr)
    sys.stderr.flush()
    os.execvpe(command[0], command, lab_env(lang=chosen))
    return 0  # not reached: exec replaced this process
