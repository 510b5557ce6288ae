"""`python -m sdviz.lab`: the lessons in JupyterLab, with `.py` lessons opening as notebooks.

The lessons are jupytext percent-format scripts. Jupytext's server extension lists
them as notebooks, but a double-click opens JupyterLab's text editor unless the
document manager's default viewer for Python files is "Jupytext Notebook". sdviz
ships that setting as `jupyter_config/labconfig/default_setting_overrides.json`
(JupyterLab reads `labconfig/default_setting_overrides.json` in every Jupyter
config directory), and this command puts that directory on `JUPYTER_CONFIG_PATH`:

    python -m sdviz.lab                 # = jupyter lab lessons/ (when ./lessons exists)
    python -m sdviz.lab --port 8899     # any other `jupyter lab` arguments
    python -m sdviz.lab --help          # what it does, then see `jupyter lab --help`

As root (a container) JupyterLab refuses to start without `--allow-root`; sdviz adds
it, with a note. To get the same settings in your own JupyterLab, run it with
`JUPYTER_CONFIG_PATH=$(python -c "import sdviz.lab; print(sdviz.lab.CONFIG_DIR)")`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "jupyter_config"
LESSONS = Path("lessons")  # served when no folder is named, if the current folder has it
HELP_FLAGS = ("-h", "--help")
ROOT_FLAG = "--allow-root"


def lab_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: os.environ) with sdviz's JupyterLab settings first on
    `JUPYTER_CONFIG_PATH`."""
    env = dict(os.environ if env is None else env)
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(CONFIG_DIR), *paths])
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
    args: Sequence[str], *, root: bool | None = None, lessons: Path = LESSONS
) -> tuple[list[str], list[str]]:
    """The `jupyter lab` command line for sdviz.lab's arguments, and the notes to print.

    `lessons` is added when `args` name no folder and it exists; `--allow-root` when
    running as root (`root`: default, this process's effective user id is 0).
    """
    args = list(args)
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
    return f"""usage: python -m sdviz.lab [FOLDER] [JUPYTER LAB ARGUMENTS ...]

Open sdviz's lessons in JupyterLab, the jupytext .py lessons opening as notebooks
on a double-click: sdviz puts its JupyterLab settings ({CONFIG_DIR}) first on
JUPYTER_CONFIG_PATH for this JupyterLab only; your own Jupyter settings stay as they are.

FOLDER: what to serve; by default the lessons folder of the current folder
({lessons.absolute()}: {found}).
Every other argument goes to `jupyter lab` unchanged (e.g. --port 8899, --no-browser).
As root, {ROOT_FLAG} is added for you, with a note.

JupyterLab's own options: jupyter lab --help
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Print the help, or replace this process by `jupyter lab` with sdviz's settings."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in args):
        print(help_text(), end="")
        return 0
    command, said = lab_command(args)
    for text in said:
        print(f"note: {text}", file=sys.stderr)
    sys.stderr.flush()
    os.execvpe(command[0], command, lab_env())
    return 0  # not reached: exec replaced this process
