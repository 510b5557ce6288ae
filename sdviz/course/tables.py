"""Printable tables: named columns of numbers, aligned, with what each means, where a
lesson would otherwise format a list in a comprehension. `table(columns)` builds one;
`attention_layers_table(run)` lists the text-attention layers a run kept. The headers
and notes sdviz writes itself are in the course's language (`sdviz.language`: `lang=None`
is $SDVIZ_LANG, else the lesson folder's `sdviz-lang.txt`, else English); columns are
aligned by their width on screen, a Chinese character counting two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..language import Term, Texts, course_language, pad, text_width

T = Texts(
    __name__,
    {
        "layer": ("layer (module path)", "层（模块路径）"),
        "maps": ("its maps (steps, tokens, h, w)", "它的注意力图（步数, 标记, h, w）"),
        "maps_note": (
            "h, w: the layer's own resolution (the average resizes each to the latent's)",
            "h, w：该层自己的分辨率（求平均时每张图都缩放到潜在表示的大小）",
        ),
        "kind": ("kind of token", "标记种类"),
        "character": ("single character", "单个字符"),
        "character_end": ("single character ending a word", "结束一个词的单个字符"),
        "learned_merge": ("learned merge", "学到的合并"),
        "special": ("special", "特殊标记"),
        "all": ("all", "全部"),
        "count": ("count", "数量"),
        "example": ("example", "示例"),
        "vocabulary_note_1": (
            "every byte is a token, so any text can be tokenized; a merge joins two pieces",
            "每个字节都是一个标记，所以任何文本都能切分成标记；一次合并把两个片段",
        ),
        "vocabulary_note_2": (
            "into a new token; {end} marks a piece that ends a word",
            "拼成一个新的标记；{end} 表示这个片段是一个词的结尾",
        ),
        "step": ("step", "步"),
        "merge": ("merge", "合并"),
        "letters_row": ("(letters)", "（字母）"),
        "rank": ("rank (0: learned first)", "排名（0：最先学到）"),
        "pieces": ("pieces", "片段"),
        "bpe_title": ("BPE on {word}", "对 {word} 做 BPE"),
        "word": ("word", "词"),
        "letters": ("letters", "字母数"),
        "piece_count": ("pieces", "片段数"),
        "merges_applied": ("merges applied", "应用的合并次数"),
        "tokens": ("tokens", "标记"),
    },
)


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
        widths = {name: max(map(text_width, [name, *cells])) for name, cells in text.items()}

        def line(cells: Mapping[str, str]) -> str:
            return "  ".join(pad(cells[n], widths[n], numeric[n]) for n in text).rstrip()

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
    spec (".1%", ".2f"), naming it by its header (or, for a header sdviz wrote in the
    course language, by its English one); tensors inside a column print as their shape.
    Say what each number means in its header, or in `notes` (lines printed under the
    table).

        sdviz.course.table({"t": [0, 500], "ᾱ_t (signal variance left)": [1.0, 0.28]})
    """
    cols = {str(name): _cells(values) for name, values in columns.items()}
    lengths = {name: len(values) for name, values in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all columns must have the same length; got {lengths}.")
    # a header sdviz wrote in another language (a Term) is also found by its English
    english = {name.english: str(name) for name in columns if isinstance(name, Term)}
    formats = {english.get(name, name): fmt for name, fmt in (formats or {}).items()}
    unknown = set(formats) - set(cols)
    if unknown:
        raise ValueError(
            f"formats name columns that do not exist: {sorted(unknown)}; the columns are "
            f"{list(cols)}."
        )
    notes = (notes,) if isinstance(notes, str) else tuple(notes)
    return Table(cols, formats, title, notes)


def attention_layers_table(run: Any, *, lang: str | None = None) -> Table:
    """The text-attention layers whose own maps `run` kept (`attention_layers=` in
    `sdviz.generate`): each layer's module path in the denoiser and its maps' shape."""
    from ..tracing.keys import LAYER_PREFIX

    lang = course_language(lang)
    keys = run.attention_layers
    if not keys:
        raise ValueError(
            "this run kept no layer's own maps: generate it with attention_layers='*' "
            "(every text-attention layer) or a filter such as 'up_blocks'."
        )
    return table(
        {
            T("layer", lang): [k.removeprefix(LAYER_PREFIX) for k in keys],
            T("maps", lang): [tuple(run[k].shape) for k in keys],  # (steps, tokens, h, w)
        },
        notes=T("maps_note", lang),
    )


def vocabulary_table(tokenizer: Any, *, lang: str | None = None) -> Table:
    """What the tokenizer's BPE vocabulary is made of (`sdviz.text.vocabulary`), a row per
    kind of token with an example and what it is for."""
    from ..text import WORD_END, bpe_merges, vocabulary

    lang = course_language(lang)
    v = vocabulary(tokenizer)
    last = "".join(bpe_merges(tokenizer)[-1])  # the last merge learned
    kinds = ("character", "character_end", "learned_merge", "special", "all")
    return table(
        {
            T("kind", lang): [T(k, lang) for k in kinds],
            T("count", lang): [v.characters, v.word_end_characters, v.merges, v.special, v.total],
            T("example", lang): ["q", f"s{WORD_END}", last, tokenizer.bos_token, ""],
        },
        notes=(T("vocabulary_note_1", lang), T("vocabulary_note_2", lang, end=WORD_END)),
    )


def bpe_table(tokenizer: Any, word: str, *, lang: str | None = None) -> Table:
    """The merges BPE applies to `word`, in order (`sdviz.text.bpe_steps`): the pair
    merged, its rank among the learned merges (lower: learned earlier, more frequent) and
    the pieces after it."""
    from ..text import WORD_END, bpe_steps

    lang = course_language(lang)
    steps = bpe_steps(tokenizer, word)
    return table(
        {
            T("step", lang): range(len(steps) + 1),
            T("merge", lang): [T("letters_row", lang), *(" + ".join(s.pair) for s in steps)],
            T("rank", lang): ["", *(s.rank for s in steps)],
            T("pieces", lang): [
                " ".join([*word[:-1], word[-1] + WORD_END]),
                *(" ".join(s.pieces) for s in steps),
            ],
        },
        title=T("bpe_title", lang, word=repr(word)),
    )


def pieces_table(tokenizer: Any, words: Sequence[str], *, lang: str | None = None) -> Table:
    """How `tokenizer` cuts each word: its pieces, how many, and how many merges built them
    (`sdviz.text.bpe_steps`)."""
    from ..text import bpe_steps

    lang = course_language(lang)
    steps = [bpe_steps(tokenizer, w) for w in words]
    pieces = [tokenizer.tokenize(w) for w in words]
    return table(
        {
            T("word", lang): list(words),
            T("letters", lang): [len(w) for w in words],
            T("piece_count", lang): [len(p) for p in pieces],
            T("merges_applied", lang): [len(s) for s in steps],
            T("tokens", lang): [" ".join(p) for p in pieces],
        }
    )
