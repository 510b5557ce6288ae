"""The `index.html` of `sdviz figures`: every figure with its caption and links to its files,
in English or Chinese (`<html lang="zh-CN">`, the page's own words from `T`)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from ..language import Texts

HTML_LANG = {"en": "en", "zh": "zh-CN"}  # the page's lang attribute (BCP 47)
T = Texts(
    __name__,
    {
        "page_title": ("sdviz figures", "sdviz 图库"),
        "heading": (
            "The Illustrated Stable Diffusion — figures from a real run",
            "图解 Stable Diffusion：来自一次真实运行的图",
        ),
        "title": ("{title}.", "{title}。"),
        "files": ("Files: ", "文件："),
    },
)

STYLE = (
    "body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
    "figure{margin:2em 0;border-bottom:1px solid #ddd;padding-bottom:1em}"
    "img{max-width:100%}figcaption{font-size:1.05em;margin-top:.5em}"
)
SHOWN = (".png", ".svg", ".gif")  # the first of these a figure has is shown inline


@dataclass
class Entry:
    """One gallery item: a figure (or animation) and the files written for it."""

    name: str
    title: str
    caption: str
    files: list[str] = field(default_factory=list)
    note: str = ""


def figure_html(e: Entry, lang: str = "en") -> str:
    """One <figure>: the image (when one was written), title, caption, note and links."""
    esc = html.escape
    shown = next((f for f in e.files if f.endswith(SHOWN)), None)
    parts = [f'<figure id="{esc(e.name)}">']
    if shown:
        parts.append(f'<img src="{esc(shown)}" alt="{esc(e.title)}">')
    caption = f"<b>{T('title', lang, title=esc(e.title))}</b> {esc(e.caption)}"
    if e.note:
        caption += f" <i>{esc(e.note)}</i>"
    if e.files:
        caption += (
            "<br>"
            + T("files", lang)
            + " · ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in e.files)
        )
    parts.append(f"<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts)


def write_index(folder: Path, entries: list[Entry], about: str, *, lang: str = "en") -> Path:
    """Write `folder/index.html` in `lang`: the title, `about` (plain text: the run's
    settings) and every entry in order."""
    parts = [
        "<!doctype html>",
        f'<html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">',
        f"<title>{html.escape(T('page_title', lang))}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>{html.escape(T('heading', lang))}</h1>",
        f"<p>{html.escape(about)}</p>",
        *(figure_html(e, lang) for e in entries),
        "</body></html>\n",
    ]
    path = folder / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
