"""Printable tables: named columns of numbers, aligned, with what each means, where a
lesson would otherwise format a list in a comprehension. `table(columns)` builds one;
`attention_layers_table(run)` lists the text-attention layers a run kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _scalar(value: Any) -> Any:
    """A 0-d tensor or numpy number as a Python number; anything else as it is."""
    return value.item() if getattr(value, "ndim", None) == 0 else value


def _cells(values: Any) -> list[Any]:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu()
    if hasattr(values, "tolist"):
        return list(values.tolist()) if np.ndim(values) else [values.tolist()]
    return [_scalar(v) for v in values]


def _format(value: Any, fmt: str | None) -> str:
    if fmt is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, float):
        return format(value, ".3g")
    if hasattr(value, "shape") and not isinstance(value, str):  # a tensor or array: its shape
        return str(tuple(value.shape))
    return str(value)


_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?\s?[%×]?$|^–$|^[-+]?inf$|^nan$")


@dataclass(frozen=True)
class Table:
    """Named columns, printed aligned: numbers right, text left, then the notes."""

    columns: dict[str, list[Any]]
    formats: dict[str, str]
    title: str | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, name: str) -> list[Any]:
        return self.columns[name]

    def __repr__(self) -> str:
        text = {
            name: [_format(v, self.formats.get(name)) for v in values]
            for name, values in self.columns.items()
        }
        numeric = {name: all(map(_NUMBER.match, cells)) for name, cells in text.items()}
        widths = {name: max([len(name), *map(len, cells)]) for name, cells in text.items()}

        def line(cells: Mapping[str, str]) -> str:
            return "  ".join(
                cells[n].rjust(widths[n]) if numeric[n] else cells[n].ljust(widths[n]) for n in text
            ).rstrip()

        out = [self.title] if self.title else []
        out.append(line({n: n for n in text}))
        out += [line({n: text[n][i] for n in text}) for i in range(len(self))]
        return "\n".join(out + list(self.notes))


def table(
    columns: Mapping[str, Iterable[Any]],
    *,
    title: str | None = None,
    formats: Mapping[str, str] | None = None,
    notes: str | Sequence[str] = (),
) -> Table:
    """A printable table of `columns` (header -> values: lists, tensors, arrays, ranges).

    Floats print with 3 significant digits unless `formats` gives the column a format
    spec (".1%", ".2f"); tensors inside a column print as their shape. Say what each
    number means in its header, or in `notes` (lines printed under the table).

        sdviz.course.table({"t": [0, 500], "ᾱ_t (signal variance left)": [1.0, 0.28]})
    """
    cols = {str(name): _cells(values) for name, values in columns.items()}
    lengths = {name: len(values) for name, values in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all columns must have the same length; got {lengths}.")
    unknown = set(formats or {}) - set(cols)
    if unknown:
        raise ValueError(f"formats name columns that do not exist: {sorted(unknown)}.")
    notes = (notes,) if isinstance(notes, str) else tuple(notes)
    return Table(cols, dict(formats or {}), title, notes)


def attention_layers_table(run: Any) -> Table:
    """The text-attention layers whose own maps `run` kept (`attention_layers=` in
    `sdviz.generate`): each layer's module path in the denoiser and its maps' shape."""
    from ..tracing.keys import LAYER_PREFIX

    keys = run.attention_layers
    if not keys:
        raise ValueError(
            "this run kept no layer's own maps: generate it with attention_layers='*' "
            "(every text-attention layer) or a filter such as 'up_blocks'."
        )
    return table(
        {
            "layer (module path)": [k.removeprefix(LAYER_PREFIX) for k in keys],
            "its maps (steps, tokens, h, w)": [tuple(run[k].shape) for k in keys],
        },
        notes="h, w: the layer's own resolution (the average resizes each to the latent's)",
    )


def vocabulary_table(tokenizer: Any) -> Table:
    """What the tokenizer's BPE vocabulary is made of (`sdviz.text.vocabulary`), a row per
    kind of token with an example and what it is for."""
    from ..text import WORD_END, bpe_merges, vocabulary

    v = vocabulary(tokenizer)
    last = "".join(bpe_merges(tokenizer)[-1])  # the last merge learned
    return table(
        {
            "kind of token": [
                "single character",
                "single character ending a word",
                "learned merge",
                "special",
                "all",
            ],
            "count": [v.characters, v.word_end_characters, v.merges, v.special, v.total],
            "example": ["q", f"s{WORD_END}", last, tokenizer.bos_token, ""],
        },
        notes=(
            "every byte is a token, so any text can be tokenized; a merge joins two pieces",
            f"into a new token; {WORD_END} marks a piece that ends a word",
        ),
    )


def bpe_table(tokenizer: Any, word: str) -> Table:
    """The merges BPE applies to `word`, in order (`sdviz.text.bpe_steps`): the pair
    merged, its rank among the learned merges (lower: learned earlier, more frequent) and
    the pieces after it."""
    from ..text import WORD_END, bpe_steps

    steps = bpe_steps(tokenizer, word)
    return table(
        {
            "step": range(len(steps) + 1),
            "merge": ["(letters)", *(" + ".join(s.pair) for s in steps)],
            "rank (0: learned first)": ["", *(s.rank for s in steps)],
            "pieces": [
                " ".join([*word[:-1], word[-1] + WORD_END]),
                *(" ".join(s.pieces) for s in steps),
            ],
        },
        title=f"BPE on {word!r}",
    )


def pieces_table(tokenizer: Any, words: Sequence[str]) -> Table:
    """How `tokenizer` cuts each word: its pieces, how many, and how many merges built them
    (`sdviz.text.bpe_steps`)."""
    from ..text import bpe_steps

    steps = [bpe_steps(tokenizer, w) for w in words]
    pieces = [tokenizer.tokenize(w) for w in words]
    return table(
        {
            "word": list(words),
            "letters": [len(w) for w in words],
            "pieces": [len(p) for p in pieces],
            "merges applied": [len(s) for s in steps],
            "tokens": [" ".join(p) for p in pieces],
        }
    )
