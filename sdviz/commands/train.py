"""`sdviz train`: retrain the embedded sdviz-mini (CLIP, VAE, UNet) from scratch.

The recipe, its arguments and its stages live in `sdviz.training.recipe`; this module
only registers the command.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `sdviz train` on argparse subparsers (`sdviz.training.recipe.add_parser`)."""
    from ..training.recipe import add_parser as add_recipe_parser

    return add_recipe_parser(subparsers)
