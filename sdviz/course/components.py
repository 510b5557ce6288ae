"""A pipeline's components: `components_table` lists each one's class and parameter
count (of one pipeline or several side by side), `pipeline_with` builds the same pipeline
with some replaced (say a freshly trained UNet). The table's own headers and note are in
the course's language (`sdviz.language`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..builder import count_parameters
from ..language import Texts, course_language
from .tables import Table, table

T = Texts(
    __name__,
    {
        "component": ("component", "组件"),
        "class": ("class", "类"),
        "parameters": ("parameters", "参数"),
        "note": (
            "–: not a network, nothing learned (a vocabulary, a formula)",
            "–：不是网络，没有学到的参数（比如一个词表、一个公式）",
        ),
    },
)


def components_table(
    pipe: Any, *others: Any, labels: Sequence[str] | None = None, lang: str | None = None
) -> Table:
    """Each component of `pipe`: its class and parameter count (and those of `others`).

    Parts with no parameters (the tokenizer's vocabulary, the scheduler's formula) show
    "–". `labels` names the pipelines' parameter columns ("parameters" for one).
    """
    lang = course_language(lang)
    pipes = (pipe, *others)
    labels = list(labels or [T("parameters", lang)] * len(pipes))
    if len(labels) != len(pipes):
        raise ValueError(f"{len(pipes)} pipelines need {len(pipes)} labels, got {labels}.")
    names = [name for name, part in pipe.components.items() if part is not None]
    columns: dict[str, list[Any]] = {
        T("component", lang): names,
        T("class", lang): [type(getattr(pipe, n)).__name__ for n in names],
    }
    for label, p in zip(labels, pipes, strict=True):
        parts = [getattr(p, n, None) for n in names]
        columns[label] = [
            f"{count_parameters(m):,}" if hasattr(m, "parameters") else "–" for m in parts
        ]
    return table(columns, notes=T("note", lang))


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
