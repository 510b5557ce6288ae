"""The `sdviz` command line: one module per command, above the library.

    sdviz trace     one traced generation: image.png, filmstrip.png, summary.txt (trace.py)
    sdviz figures   every explanatory figure and an index.html gallery (figures.py)
    sdviz train     retrain the embedded sdviz-mini from scratch (train.py)
    python -m sdviz.lab   JupyterLab on the lessons (lab.py)

`common.py` holds what the commands share: argument types (a bad value is a usage
error, exit code 2, before any model is loaded), the settings a run really used, the
notes printed on stderr and the staged output folder. Nothing in the library imports
this package: the commands use `sdviz`, never the other way round.

Subcommands are registered from `SUBCOMMANDS` ("module:function" strings, imported only
when the parser is built); each function receives argparse's subparsers object, adds its
parser and sets ``func`` (taking the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .common import CommandError

SUBCOMMANDS = [
    "sdviz.commands.trace:add_parser",
    "sdviz.commands.figures:add_parser",
    "sdviz.commands.train:add_parser",
]


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
