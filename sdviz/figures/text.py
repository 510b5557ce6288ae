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
    ax_tok: Any, tokens: list[str], ids: list[int], n: int, shown: int, L: int
) -> None:
    """The first `shown` tokens as a table (position, token, id), padding greyed."""
    ax_tok.axis("off")
    ax_tok.set_title("Tokens (position, token, id)")
    rows = [
        (str(i), tokens[i] + ("   (padding)" if i >= n else ""), str(ids[i])) for i in range(shown)
    ]
    if shown < L:
        rows.append(("…", f"{L - shown} more padding tokens", ""))
    table = ax_tok.table(
        cellText=rows,
        colLabels=["pos", "token", "id"],
        colWidths=[0.15, 0.65, 0.2],
        loc="upper center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, _), cell in table.get_celld().items():
        if 0 < r <= shown and r - 1 >= n:
            cell.set_facecolor("#eeeeee")


def tokens_and_embeddings(run: Mapping[str, Any], *, fig: Canvas | None = None) -> Figure:
    """The padded token list next to the embedding matrix (tokens × dimensions).

    A Run of SDXL, SD3 or Flux gets one row per tokenizer (`encoder_rows`): each token
    list, its encoder's token vectors, and where they sit in the denoiser's sequence.
    `run` is a traced run, or `sdviz.text.prompt_record(pipe, prompt)` (the same keys,
    without a generation).

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> fig = sdviz.figures.tokens_and_embeddings(run)
        >>> fig = sdviz.figures.tokens_and_embeddings(sdviz.text.prompt_record(pipe, "a cat"))
    """
    if isinstance(run, Mapping) and "tokenizer_2.tokens" in run:
        return _every_tokenizer(run, fig)
    data = text_data(run)
    tokens, ids, n, emb = data["tokens"], data["ids"], data["n_tokens"], data["embeds"]
    L, d = emb.shape
    shown = min(L, n + PADDING_ROWS_SHOWN)
    with style():
        fig = new_figure(
            fig,
            3.5 * WIDE,
            max(4.0, 0.3 * shown + 1.6),
            suptitle=f"Prompt {data['prompt']!r}: {n} tokens padded to L = {L}, embedded in d = {d}",
        )
        ax_tok, ax_emb, ax_all = fig.subplots(1, 3, width_ratios=[1.1, 1.6, 1])
        _token_table(ax_tok, tokens, ids, n, shown, L)
        lim = symmetric_limit(emb)
        kw = dict(aspect="auto", cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax_emb.imshow(emb[:shown], **kw)
        if shown > n:
            ax_emb.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ticks = list(range(0, shown, max(1, shown // MAX_TICKS)))
        labels = [readable(tokens[i]) + (" (pad)" if i >= n else "") for i in ticks]
        ax_emb.set_yticks(ticks, labels)
        ax_emb.set_xlabel(f"embedding dimension (0..{d - 1})")
        ax_emb.set_title(f"Embeddings of the first {shown} tokens")
        im = ax_all.imshow(emb, **kw)
        ax_all.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ax_all.set_yticks([0, n - 1, L - 1], ["0", f"{n - 1} (last real)", str(L - 1)])
        ax_all.set_xlabel("dimension")
        ax_all.set_ylabel("token position")
        ax_all.set_title(f"All {L} × {d} (padding below the line)")
        fig.colorbar(im, ax=ax_all, label="value", shrink=0.9)
    return fig


def _every_tokenizer(run: Mapping[str, Any], fig: Canvas | None) -> Figure:
    """One row per tokenizer: its token table, first token vectors, all of them."""
    rows = encoder_rows(run)
    shown = [min(len(r["tokens"]), r["n_tokens"] + PADDING_ROWS_SHOWN) for r in rows]
    heights = [max(3.0, 0.3 * k + 1.4) for k in shown]
    prompt = run.get("pipeline.prompt", "")
    kinds = " + ".join(r["kind"].split(" ")[0] for r in rows)
    with style():
        fig = new_figure(
            fig,
            3.5 * WIDE,
            sum(heights) + 0.8,
            suptitle=f"Prompt {prompt!r}: one token list per text encoder ({kinds})",
        )
        subs = fig.subfigures(len(rows), 1, height_ratios=heights)
        for sub, r, k in zip(np.atleast_1d(subs), rows, shown, strict=True):
            _encoder_row(sub, r, k)
    return fig


def _encoder_row(sub: Any, r: dict[str, Any], shown: int) -> None:
    """A tokenizer's tokens, and what its encoder gives the denoiser."""
    tokens, ids, n, emb = r["tokens"], r["ids"], r["n_tokens"], r["embeds"]
    L = len(tokens)
    place = (
        "only its pooled vector reaches the denoiser"
        if r["pooled_only"]
        else f"rows {r['rows'][0]}..{r['rows'][1] - 1} of the denoiser's text sequence"
        + (f" (channels joined with {', '.join(r['shares'])}'s)" if r["shares"] else "")
        if r["rows"]
        else ""
    )
    sub.suptitle(f"{r['name']} — {r['kind']}: {n} tokens padded to {L}; {place}", fontsize=12)
    ax_tok, ax_emb, ax_all = sub.subplots(1, 3, width_ratios=[1.1, 1.6, 1])
    _token_table(ax_tok, tokens, ids, n, shown, L)
    lim = symmetric_limit(emb)
    kw = dict(aspect="auto", cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
    d = emb.shape[1]
    if r["pooled_only"]:
        ax_emb.imshow(emb, **kw)
        ax_emb.set_yticks([0], ["pooled"])
        ax_emb.set_title(f"Pooled vector (1 × {d}): added to t's embedding")
        ax_emb.set_box_aspect(0.2)
        ax_all.axis("off")
    else:
        ax_emb.imshow(emb[:shown], **kw)
        if shown > n:
            ax_emb.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ticks = list(range(0, shown, max(1, shown // MAX_TICKS)))
        ax_emb.set_yticks(
            ticks, [readable(tokens[i]) + (" (pad)" if i >= n else "") for i in ticks]
        )
        ax_emb.set_title(f"Token vectors of the first {shown} tokens")
        im = ax_all.imshow(emb, **kw)
        ax_all.axhline(n - 0.5, color="black", linewidth=1.5, linestyle="--")
        ax_all.set_yticks([0, n - 1, L - 1], ["0", f"{n - 1} (last real)", str(L - 1)])
        ax_all.set_xlabel("dimension")
        ax_all.set_title(f"All {L} × {d} (padding below the line)")
        sub.colorbar(im, ax=ax_all, label="value", shrink=0.9)
    ax_emb.set_xlabel(f"dimension (0..{d - 1})")
