"""Small pieces shared by the widgets: word choices, tagged image updates, captions."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

STATE_PREFIX = "sdviz-state-"


def word_choices(run: Any) -> list[tuple[str, int]]:
    """(readable word, token index) for the prompt's real tokens, BOS/EOS and padding left out."""
    words = run.words  # BOS, the prompt's tokens, EOS
    return [(w, i) for i, w in enumerate(words) if 0 < i < len(words) - 1]


def resolve_words(run: Any, words: list[str] | None) -> list[tuple[str, int]]:
    """The chosen words (default: all real tokens), validated against the prompt."""
    choices = word_choices(run)
    if words is None:
        return choices
    known = {w: i for w, i in reversed(choices)}  # first occurrence wins
    missing = [w for w in words if w not in known]
    if missing:
        raise ValueError(
            f"{missing} not among the prompt's tokens {[w for w, _ in choices]}; "
            "pass words from that list (or words=None for all of them)."
        )
    return [(w, known[w]) for w in words]


def image_widget(*classes: str, width: int | None = None) -> W.Image:
    """An empty PNG `ipywidgets.Image` carrying CSS classes (stable hooks for browser tests)."""
    img = W.Image(format="png", layout=W.Layout(width=f"{width}px") if width else W.Layout())
    for cls in classes:
        img.add_class(cls)
    return img


def set_tagged(widget: W.DOMWidget, state: str, **values: Any) -> None:
    """Set `values` and the CSS class `sdviz-state-<state>` in ONE sync message.

    A browser sees the new picture and the class that names it together, so a test can
    wait for `img.sdviz-state-5` instead of guessing whether a redraw is final.
    """
    classes = tuple(c for c in widget._dom_classes if not c.startswith(STATE_PREFIX))
    with widget.hold_sync():
        for name, value in values.items():
            setattr(widget, name, value)
        widget._dom_classes = (*classes, f"{STATE_PREFIX}{state}")


def labelled(title: str, child: W.Widget) -> W.VBox:
    """A small caption above a widget."""
    return W.VBox([W.HTML(f"<b>{title}</b>"), child], layout=W.Layout(align_items="center"))
