"""Open the lessons in JupyterLab, with `.py` lessons opening as notebooks.

The lessons are jupytext percent-format scripts. Jupytext's server extension lists
them as notebooks, but a double-click opens JupyterLab's text editor unless the
document manager's default viewer for Python files is "Jupytext Notebook". sdviz
ships that setting as `jupyter_config/labconfig/default_setting_overrides.json`
(JupyterLab reads `labconfig/default_setting_overrides.json` in every Jupyter
config directory), and this module puts that directory on `JUPYTER_CONFIG_PATH`:

    python -m sdviz.lab                 # = jupyter lab lessons/ (when ./lessons exists)
    python -m sdviz.lab --port 8899     # any other `jupyter lab` arguments

To get the same in your own JupyterLab, run it with
`JUPYTER_CONFIG_PATH=$(python -c "import sdviz.lab; print(sdviz.lab.CONFIG_DIR)")`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"


def lab_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: os.environ) with sdviz's JupyterLab settings first on
    `JUPYTER_CONFIG_PATH`."""
    env = dict(os.environ if env is None else env)
    paths = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(CONFIG_DIR), *paths])
    return env


def main(argv: list[str] | None = None) -> None:
    """Replace this process by `jupyter lab` with sdviz's settings."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(not a.startswith("-") for a in args) and Path("lessons").is_dir():
        args.append("lessons")
    os.execvpe(sys.executable, [sys.executable, "-m", "jupyter", "lab", *args], lab_env())


if __name__ == "__main__":
    main()
