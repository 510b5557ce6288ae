"""A pipeline's components: `components_table` lists each one's class and parameter
count (of one pipeline or several side by side), `pipeline_with` builds the same pipeline
with some replaced (say a freshly trained UNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..builder import count_parameters
from .tables import Table, table


def components_table(pipe: Any, *others: Any, labels: Sequence[str] | None = None) -> Table:
    """Each component of `pipe`: its class and parameter count (and those of `others`).

    Parts with no parameters (the tokenizer's vocabulary, the scheduler's formula) show
    "–". `labels` names the pipelines' parameter columns ("parameters" for one).
    """
    pipes = (pipe, *others)
    labels = list(labels or ["parameters"] * len(pipes))
    if len(labels) != len(pipes):
        raise ValueError(f"{len(pipes)} pipelines need {len(pipes)} labels, got {labels}.")
    names = [name for name, part in pipe.components.items() if part is not None]
    columns: dict[str, list[Any]] = {
        "component": names,
        "class": [type(getattr(pipe, n)).__name__ for n in names],
    }
    for label, p in zip(labels, pipes, strict=True):
        parts = [getattr(p, n, None) for n in names]
        columns[label] = [
            f"{count_parameters(m):,}" if hasattr(m, "parameters") else "–" for m in parts
        ]
    return table(columns, notes="–: not a network, nothing learned (a vocabulary, a formula)")


def pipeline_with(pipe: Any, **components: Any) -> Any:
    """A pipeline of `pipe`'s class sharing its components, except those given (say a
    freshly trained `unet=`). Nothing is copied and `pipe` is left as it was."""
    import inspect

    unknown = sorted(set(components) - set(pipe.components))
    if unknown:
        raise ValueError(f"{unknown} are not components of this pipeline: {list(pipe.components)}.")
    parts = {**pipe.components, **components}
    if "requires_safety_checker" in inspect.signature(type(pipe)).parameters:
        parts["requires_safety_checker"] = False  # sdviz's pipelines carry no safety checker
    new = type(pipe)(**parts)
    new.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return new
