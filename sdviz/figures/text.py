"""Figure 7 — tokens and embeddings: what the UNet reads from the prompt.

CLIP's tokenizer (Radford et al. 2021) splits the prompt into byte-pair tokens, adds
start and end tokens and pads to a fixed length L (`tokenizer.model_max_length`, 77
for Stable Diffusion). The text encoder turns the L tokens into an L×d matrix — one
contextual vector per token, padding included — that every cross-attention layer of
the UNet attends to (Rombach et al. 2022, Sec. 3.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from ..language import Texts, course_language, drawing
from .style import (
    SIGNED_CMAP,
    WIDE,
    Canvas,
    new_figure,
    require,
    style,
    symmetric_limit,
)

PADDING_ROWS_SHOWN = 2  # padding tokens listed after the real ones in the token table
MAX_TICKS = 24  # at most this many token labels on the embedding matrix

T = Texts(
    __name__,
    {
        "table": ("Tokens (position, token, id)", "标记（位置，标记，ID）"),
        "col.pos": ("pos", "位置"),
        "col.token": ("token", "标记"),
        "col.id": ("id", "ID"),
        "padding_row": ("{token}   (padding)", "{token}   （填充）"),
        "more_padding": ("{n} more padding tokens", "另有 {n} 个填充标记"),
        "pad": ("{token} (pad)", "{token}（填充）"),
        "last_real": ("{i} (last real)", "{i}（最后一个真实标记）"),
        "prompt": (
            "Prompt {prompt!r}: {n} tokens padded to L = {L}, embedded in d = {d}",
            "提示词 {prompt!r}：{n} 个标记，填充到 L = {L}，嵌入维度 d = {d}",
        ),
        "embedding_dimension": ("embedding dimension (0..{last})", "嵌入维度（0..{last}）"),
        "embeddings_first": ("Embeddings of the first {n} tokens", "前 {n} 个标记的嵌入"),
        "dimension": ("dimension", "维度"),
        "dimension_range": ("dimension (0..{last})", "维度（0..{last}）"),
        "token_position": ("token position", "标记位置"),
        "all": ("All {L} × {d} (padding below the line)", "全部 {L} × {d}（线下为填充）"),
        "value": ("value", "值"),
        "per_encoder": (
            "Prompt {prompt!r}: one token list per text encoder ({kinds})",
            "提示词 {prompt!r}：每个文本编码器一份标记列表（{kinds}）",
        ),
        "row": (
            "{name} — {kind}: {n} tokens padded to {L}; ",
            "{name} — {kind}：{n} 个标记，填充到 {L}",
        ),
        "row_pooled": (
            "{name} — {kind}: {n} tokens padded to {L}; only its pooled vector reaches the denoiser",
            "{name} — {kind}：{n} 个标记，填充到 {L}；只有它的池化向量进入去噪网络",
        ),
        "row_rows": (
            "{name} — {kind}: {n} tokens padded to {L}; rows {first}..{last} of the denoiser's "
            "text sequence",
            "{name} — {kind}：{n} 个标记，填充到 {L}；占去噪网络文本序列的第 {first}..{last} 行",
        ),
        "row_shared": (
            "{name} — {kind}: {n} tokens padded to {L}; rows {first}..{last} of the denoiser's "
            "text sequence (channels joined with {others}'s)",
            "{name} — {kind}：{n} 个标记，填充到 {L}；占去噪网络文本序列的第 {first}..{last} 行"
            "（与 {others} 的向量按通道拼接）",
        ),
        "pooled": ("pooled", "池化"),
        "pooled_title": (
            "Pooled vector (1 × {d}): added to t's embedding",
            "池化向量（1 × {d}）：加到 t 的嵌入上",
        ),
        "token_vectors": ("Token vectors of the first {n} tokens", "前 {n} 个标记的向量"),
    },
)


def readable(token: str) -> str:
    """'red</w>' -> 'red' (CLIP marks the end of a word with </w>), '▁red' -> 'red' (T5's
    SentencePiece marks the start of a word with ▁)."""
    return token.replace("</w>", "").removeprefix("▁") or token


TEXT_KEYS = (
    "tokenizer.tokens",
    "tokenizer.input_ids",
    "tokenizer.n_tokens",
    "text_encoder.prompt_embeds",
)


def text_data(run: Mapping[str, Any]) -> dict[str, Any]:
    """tokens (L), input ids (L), n_tokens and the (L, d) embeddings of a Run's text keys."""
    if not isinstance(run, Mapping):
        raise TypeError(
            f"Pass a traced run or sdviz.text.prompt_record(pipe, prompt), got {type(run).__name__}."
        )
    require(run, *TEXT_KEYS, hint="Trace it with sdviz.generate, or use sdviz.text.prompt_record.")
    return {
        "prompt": run.get("pipeline.prompt", ""),
        "tokens": list(run["tokenizer.tokens"]),
        "ids": [int(i) for i in to_numpy(run["tokenizer.input_ids"]).astype(np.int64)],
        "n_tokens": int(run["tokenizer.n_tokens"]),
        "embeds": to_numpy(run["text_encoder.prompt_embeds"]),
    }


# The text encoders of each family in diffusers' order (tokenizer, tokenizer_2, ...)
ENCODER_KINDS = {
    "stable-diffusion": ("CLIP",),
    "stable-diffusion-xl": ("CLIP (CLIP-L)", "CLIP (CLIP-G)"),
    "stable-diffusion-3": ("CLIP (CLIP-L)", "CLIP (CLIP-G)", "T5"),
    "flux": ("CLIP (CLIP-L)", "T5"),
}
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")


def encoder_rows(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per tokenizer of a family Run: name, kind, tokens, ids, n_tokens, the (L, d)
    token vectors its encoder gave the denoiser (Flux's CLIP: its (1, d) pooled vector,
    all the denoiser reads from it) and the rows of the denoiser's sequence they fill."""
    kinds = ENCODER_KINDS.get(str(run.get("pipeline.family", "stable-diffusion")), ())
    sequence = dict(run.get("attention.text_sequence", {}))
    rows = []
    for name, kind in zip(TOKENIZERS, kinds, strict=False):
        if f"{name}.tokens" not in run:
            continue
        embeds_key = name.replace("tokenizer", "text_encoder") + ".prompt_embeds"
        pooled = embeds_key not in run
        require(run, f"{name}.input_ids", f"{name}.n_tokens")
        embeds = to_numpy(run["pipeline.pooled_prompt_embeds" if pooled else embeds_key])
        rows.append(
            {
                "name": name,
                "kind": kind,
                "tokens": list(run[f"{name}.tokens"]),
                "ids": [int(i) for i in to_numpy(run[f"{name}.input_ids"]).astype(np.int64)],
                "n_tokens": int(run[f"{name}.n_tokens"]),
                "embeds": embeds.reshape(1, -1) if pooled else embeds,
                "pooled_only": pooled,
                "rows": sequence.get(name),
            }
        )
    for r in rows:  # SDXL's and SD3's CLIPs fill the same rows, side by side in channels
        r["shares"] = [
            o["name"] for o in rows if o is not r and r["rows"] and o["rows"] == r["rows"]
        ]
    return rows


def _token_table(
    ax_tok: Any, tokens: list[str], ids: list[int], n: int, shown: int, L: int, lang: str
) -> None:
    """The first `shown` tokens as a table (position, token, id), padding greyed."""
    ax_tok.axis("off")
    ax_tok.set_title(T("table", lang))
    rows = [
        (str(i), T("padding_row", lang, token=tokens[i]) if i >= n else tokens[i], str(ids[i]))
        for i in range(shown)
    ]
    if shown < L:
        rows.append(("…", T("more_padding", lang, n=L - shown), ""))
    table = ax_tok.table(
        cellText=rows,
        colLabels=[T(f"col.{c}", lang) for c in ("pos", "token", "id")],
        colWidths=[0.15, 0.65, 0.2],
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, _), cell in table.get_celld().items():
        if 0 < r <= shown and r - 1 >= n:
            cell.set_facecolor("#eeeeee")


def _labels(tokens: list[str], ticks: list[int], n: int, lang: str) -> list[str]:
    """Readable token labels at `ticks`, padding (positions from `n` on) marked."""
    return [
        T("pad", lang, token=readable(tokens[i])) if i >= n else readable(tokens[i]) for i in ticks
    ]


def tokens_and_embeddings(
    run: Mapping[str, Any], *, fig: Canvas | None = None, lang: str | None = None
) -> Figure:
    """The padded token list next to the embedding matrix (tokens × dimensions).

    A Run of SDXL, SD3 or Flux gets one row per tokenizer (`encoder_rows`): each token
    list, its encoder's token vectors, and where they sit in the denoiser's sequence.
    `run` is a traced run, or `sdviz.text.prompt_record(pipe, prompt)` (the same keys,
    without a generation). `lang`: the language of its labels ("en", "zh"; default
    `sdviz.language.course_language`); tokens and prompts stay as they are.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.tokens_and_embeddings(run)
        >>> fig = sdviz.figures.tokens_and_embeddings(sdviz.text.prompt_record(pipe, "a cat"))
    """
    lang = course_language(lang)
    if isinstance(run, Mapping) and "tokenizer_2.tokens" in run:
        return _every_tokenizer(run, fig, lang)
    data = text_data(run)
    tokens, ids, n, emb = data["tokens"], data["ids"], data["n_tokens"], data["embeds"]
    L, d = emb.shape
    shown = min(L, n + PADDING_ROWS_SHOWN)
    title = T("prompt", lang, prompt=data["prompt"], n=n, L=L, d=d)
    with drawing(lang), style():
        fig = new_figure(fig, 3.5 * WIDE, max(4.0, 0.3 * shown + 1.6), suptitle=title)
        ax_tok, ax_emb, ax_all = fig.subplots(1, 3, width_ratios=[1.1, 1.6, 1])
        _token_table(ax_tok, tokens, ids, n, shown, L, lang)
        lim = symmetric_limit(emb)
        kw = dict(aspect="auto", cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax_emb.imshow(emb[:shown], **kw)
        if shown > n:
            ax_emb.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ticks = list(range(0, shown, max(1, shown // MAX_TICKS)))
        ax_emb.set_yticks(ticks, _labels(tokens, ticks, n, lang))
        ax_emb.set_xlabel(T("embedding_dimension", lang, last=d - 1))
        ax_emb.set_title(T("embeddings_first", lang, n=shown))
        _all_vectors(fig, ax_all, emb, n, kw, lang)
        ax_all.set_ylabel(T("token_position", lang))
    return fig


def _all_vectors(fig: Canvas, ax: Any, emb: Any, n: int, kw: dict[str, Any], lang: str) -> None:
    """Every token vector (L, d), padding below a dashed line, with its colorbar."""
    L, d = emb.shape
    im = ax.imshow(emb, **kw)
    ax.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
    ax.set_yticks([0, n - 1, L - 1], ["0", T("last_real", lang, i=n - 1), str(L - 1)])
    ax.set_xlabel(T("dimension", lang))
    ax.set_title(T("all", lang, L=L, d=d))
    fig.colorbar(im, ax=ax, label=T("value", lang), shrink=0.9)


def _every_tokenizer(run: Mapping[str, Any], fig: Canvas | None, lang: str) -> Figure:
    """One row per tokenizer: its token table, first token vectors, all of them."""
    rows = encoder_rows(run)
    shown = [min(len(r["tokens"]), r["n_tokens"] + PADDING_ROWS_SHOWN) for r in rows]
    heights = [max(3.0, 0.3 * k + 1.4) for k in shown]
    prompt = run.get("pipeline.prompt", "")
    kinds = " + ".join(r["kind"].split(" ")[0] for r in rows)
    title = T("per_encoder", lang, prompt=prompt, kinds=kinds)
    with drawing(lang), style():
        fig = new_figure(fig, 3.5 * WIDE, sum(heights) + 0.8, suptitle=title)
        subs = fig.subfigures(len(rows), 1, height_ratios=heights)
        for sub, r, k in zip(np.atleast_1d(subs), rows, shown, strict=True):
            _encoder_row(sub, r, k, lang)
    return fig


def _row_title(r: dict[str, Any], lang: str) -> str:
    """'tokenizer_2 — CLIP (CLIP-G): 5 tokens padded to 77; rows 0..76 of the denoiser's
    text sequence': what a tokenizer's encoder gives the denoiser, and where."""
    head = dict(name=r["name"], kind=r["kind"], n=r["n_tokens"], L=len(r["tokens"]))
    if r["pooled_only"]:
        return T("row_pooled", lang, **head)
    if not r["rows"]:
        return T("row", lang, **head)
    first, last = r["rows"][0], r["rows"][1] - 1
    if r["shares"]:
        others = ", ".join(r["shares"])
        return T("row_shared", lang, **head, first=first, last=last, others=others)
    return T("row_rows", lang, **head, first=first, last=last)


def _encoder_row(sub: Any, r: dict[str, Any], shown: int, lang: str) -> None:
    """A tokenizer's tokens, and what its encoder gives the denoiser."""
    tokens, ids, n, emb = r["tokens"], r["ids"], r["n_tokens"], r["embeds"]
    L = len(tokens)
    sub.suptitle(_row_title(r, lang), fontsize=12)
    ax_tok, ax_emb, ax_all = sub.subplots(1, 3, width_ratios=[1.1, 1.6, 1])
    _token_table(ax_tok, tokens, ids, n, shown, L, lang)
    lim = symmetric_limit(emb)
    kw = dict(aspect="auto", cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
    d = emb.shape[1]
    if r["pooled_only"]:
        ax_emb.imshow(emb, **kw)
        ax_emb.set_yticks([0], [T("pooled", lang)])
        ax_emb.set_title(T("pooled_title", lang, d=d))
        ax_emb.set_box_aspect(0.2)
        ax_all.axis("off")
    else:
        ax_emb.imshow(emb[:shown], **kw)
        if shown > n:
            ax_emb.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ticks = list(range(0, shown, max(1, shown // MAX_TICKS)))
        ax_emb.set_yticks(ticks, _labels(tokens, ticks, n, lang))
        ax_emb.set_title(T("token_vectors", lang, n=shown))
        _all_vectors(sub, ax_all, emb, n, kw, lang)
    ax_emb.set_xlabel(T("dimension_range", lang, last=d - 1))
