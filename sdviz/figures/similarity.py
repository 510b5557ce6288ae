"""Figure 8 — CLIP similarity: the cosine similarity of every image with every caption.

CLIP (Radford et al. 2021) trains an image encoder and a text encoder so that a
matching image and caption have unit embeddings with a high dot product (cosine
similarity) and mismatched pairs a low one. Stable Diffusion keeps CLIP's text encoder
as its conditioning (Rombach et al. 2022); the matrix shows what that training aligned:
the best caption per image sits on the diagonal when the model is good.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Rectangle

from ..autoencoder import image_hwc
from ..language import Texts, course_language, drawing
from ..probes import ClipEmbeddings
from .style import MATRIX_CMAP, PANEL, expect, figure_of, new_figure, style

ROW_INCHES = 0.8 * PANEL  # height of one image row (and its thumbnail)
CAPTION_WRAP = 22  # characters per caption line under the matrix
# the caption kinds of sdviz.probes.counterfactuals (labels of their own pass unchanged)
CAPTION_KINDS = ("true caption", "relation flipped", "colours swapped")

T = Texts(
    __name__,
    {
        "kind.true caption": ("true caption", "真实描述"),
        "kind.relation flipped": ("relation flipped", "关系颠倒"),
        "kind.colours swapped": ("colours swapped", "颜色互换"),
        "caption": ("caption", "描述"),
        "image": ("image", "图像"),
        "image_n": ("image {i}", "图像 {i}"),
        "title": (
            "CLIP cosine similarity, images × captions (outline: best caption)",
            "CLIP 余弦相似度，图像 × 描述（实线框：最匹配的描述）",
        ),
        "title_truth": (
            "CLIP cosine similarity, images × captions (outline: best caption; "
            "dashed: the true caption)",
            "CLIP 余弦相似度，图像 × 描述（实线框：最匹配的描述；虚线框：真实描述）",
        ),
        "cosine_similarity": ("cosine similarity", "余弦相似度"),
    },
)


def _wrap(text: str, width: int = CAPTION_WRAP) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def clip_similarity(
    embeddings: ClipEmbeddings,
    *,
    truth: Sequence[int] | None = None,
    caption_kinds: Sequence[str] | None = None,
    ax: Axes | None = None,
    lang: str | None = None,
) -> Figure:
    """Images (rows, as thumbnails) × captions (columns): cosine similarity of CLIP embeddings.

    `embeddings` come from `sdviz.probes.clip_embeddings(images, captions, model=clip,
    tokenizer=tok)`, or are built from precomputed vectors with
    `sdviz.probes.ClipEmbeddings(images, captions, image_embeds, text_embeds)` (images
    may be [] there: rows are then numbered). The best caption of each image is outlined.
    `truth` (a column per image) marks each image's true caption with a dashed frame, and
    `caption_kinds` (one per caption) labels the columns, as
    `sdviz.probes.counterfactuals(world, n)` gives both. `lang`: the language of its labels
    ("en", "zh"; default `sdviz.language.course_language`); captions stay as they are.

    Example:
        >>> runs = [sdviz.generate(pipe, p) for p in ["a red circle", "a blue square"]]
        >>> emb = sdviz.probes.clip_embeddings(runs, model=clip, tokenizer=clip_tokenizer)
        >>> fig = sdviz.figures.clip_similarity(emb)
    """
    lang = course_language(lang)
    expect(embeddings, ClipEmbeddings, "sdviz.probes.clip_embeddings(images, captions, ...)")
    sim, captions, pictures = embeddings.similarity, embeddings.captions, embeddings.images
    n, m = sim.shape
    if truth is not None and len(truth) != n:
        raise ValueError(f"truth needs one caption column per image ({n}), got {len(truth)}.")
    if caption_kinds is not None and len(caption_kinds) != m:
        raise ValueError(
            f"caption_kinds needs one label per caption ({m}), got {len(caption_kinds)}."
        )
    labels = [_wrap(c) for c in captions]
    if caption_kinds is not None:
        kinds = [T(f"kind.{k}", lang) if k in CAPTION_KINDS else k for k in caption_kinds]
        labels = [f"[{k}]\n{c}" for k, c in zip(kinds, labels, strict=True)]
    with drawing(lang), style():
        if ax is None:
            fig = new_figure(None, ROW_INCHES * (m + 1.5) + 1.5, ROW_INCHES * n + 2.2)
            ax = fig.add_subplot()
        fig = figure_of(ax)
        im = ax.imshow(sim, cmap=MATRIX_CMAP, interpolation="nearest")
        mid = (sim.max() + sim.min()) / 2
        for i in range(n):
            for j in range(m):
                color = "black" if sim[i, j] > mid else "white"
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", color=color)
            best = int(sim[i].argmax())
            ax.add_patch(
                Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#E69F00", linewidth=3)
            )
            if truth is not None:
                ax.add_patch(
                    Rectangle(
                        (truth[i] - 0.42, i - 0.42),
                        0.84,
                        0.84,
                        fill=False,
                        edgecolor="white",
                        linestyle="--",
                        linewidth=2,
                    )
                )
        ax.set_xticks(range(m), labels, rotation=0)
        ax.set_xlabel(T("caption", lang))
        thumb_points = ROW_INCHES * 72 * 0.9
        ax.set_ylabel(T("image", lang), labelpad=thumb_points + 8 if pictures else 4)
        if pictures:
            ax.set_yticks(range(n), [""] * n)
            for i, picture in enumerate(pictures):
                pic = image_hwc(picture)
                box = AnnotationBbox(
                    OffsetImage(pic, zoom=thumb_points / pic.shape[0]),
                    (-0.5, i),
                    xybox=(-thumb_points / 2 - 6, 0),
                    boxcoords="offset points",
                    frameon=False,
                    annotation_clip=False,
                )
                ax.add_artist(box)
        else:
            ax.set_yticks(range(n), [T("image_n", lang, i=i) for i in range(n)])
        ax.set_title(T("title" if truth is None else "title_truth", lang))
        fig.colorbar(im, ax=ax, label=T("cosine_similarity", lang), shrink=0.8)
    return fig
