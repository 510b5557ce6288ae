"""Figure 8 — CLIP similarity: the cosine similarity of every image with every caption.

CLIP (Radford et al. 2021) trains an image encoder and a text encoder so that a
matching image and caption have unit embeddings with a high dot product (cosine
similarity) and mismatched pairs a low one. Stable Diffusion keeps CLIP's text encoder
as its conditioning (Rombach et al. 2022); the matrix shows what that training aligned:
the best caption per image sits on the diagonal when the model is good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Rectangle

from .style import MATRIX_CMAP, PANEL, figure_of, image_hwc, new_figure, style, to_numpy

ROW_INCHES = 0.8 * PANEL  # height of one image row (and its thumbnail)
CAPTION_WRAP = 22  # characters per caption line under the matrix


def _pixels(
    images: list[Any], model: Any, image_processor: Any, mean: Any, std: Any
) -> torch.Tensor:
    """(n, 3, s, s) normalised pixels for the CLIP vision tower."""
    if image_processor is not None:
        from PIL import Image

        pil = [Image.fromarray((image_hwc(im) * 255).round().astype(np.uint8)) for im in images]
        return image_processor(images=pil, return_tensors="pt")["pixel_values"]
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    side = int(model.config.vision_config.image_size)
    x = torch.stack([torch.from_numpy(image_hwc(im)).permute(2, 0, 1) for im in images])
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    mean = torch.tensor(OPENAI_CLIP_MEAN if mean is None else mean, dtype=x.dtype)
    std = torch.tensor(OPENAI_CLIP_STD if std is None else std, dtype=x.dtype)
    return (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


def clip_embeddings(
    images: list[Any],
    captions: list[str],
    model: Any,
    tokenizer: Any,
    image_processor: Any = None,
    image_mean: Any = None,
    image_std: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm CLIP embeddings (n_images, p) and (n_captions, p) from a transformers CLIPModel.

    Images are resized to the vision tower's size and normalised with `image_mean` /
    `image_std` (default: OpenAI CLIP's, from transformers), unless an
    `image_processor` (e.g. CLIPImageProcessor) is given.
    """
    param = next(model.parameters())
    pixels = _pixels(images, model, image_processor, image_mean, image_std)
    pixels = pixels.to(param.device, param.dtype)
    tokens = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(
            pixel_values=pixels,
            input_ids=tokens["input_ids"].to(param.device),
            attention_mask=tokens["attention_mask"].to(param.device),
        )
    return to_numpy(out.image_embeds), to_numpy(out.text_embeds)


def _unit(x: Any) -> np.ndarray:
    x = to_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"Embeddings must be a (count, dim) matrix; got shape {x.shape}.")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
    images: Sequence[Any] | None,
    captions: Sequence[str] | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    image_processor: Any = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    image_embeds: Any = None,
    text_embeds: Any = None,
    ax: Axes | None = None,
) -> Figure:
    """Images (rows, as thumbnails) × captions (columns): cosine similarity of CLIP embeddings.

    Either give a transformers `CLIPModel` with its `tokenizer` (and optionally an
    `image_processor`, or the `image_mean` / `image_std` the model was trained with:
    sdviz's own CLIP models take pixels in [-1, 1], i.e. mean = std = 0.5), or
    precomputed `image_embeds` (n, p) and `text_embeds` (m, p).
    `images` are runs (their image; their prompts are the default captions), tensors
    or PIL images; they are drawn as thumbnails (pass None with embeddings only).
    The best caption of each image is outlined.

    Example:
        >>> runs = [sdviz.generate(pipe, p) for p in ["a red circle", "a blue square"]]
        >>> fig = sdviz.figures.clip_similarity(runs, model=clip, tokenizer=clip_tokenizer)
    """
    images = list(images) if images is not None else []
    if captions is None:
        if not images or not all(isinstance(r, Mapping) and "pipeline.prompt" in r for r in images):
            raise ValueError("Pass captions (the default captions are the runs' prompts).")
        captions = [r["pipeline.prompt"] for r in images]
    captions = list(captions)
    if not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a non-empty list of strings.")
    pictures = [r["vae.image"] if isinstance(r, Mapping) else r for r in images]
    if model is not None:
        if image_embeds is not None or text_embeds is not None:
            raise ValueError("Pass either a CLIP model or precomputed embeddings, not both.")
        if tokenizer is None:
            raise ValueError(
                "A CLIP model needs its tokenizer: clip_similarity(..., tokenizer=tok)."
            )
        if not pictures:
            raise ValueError("Pass the images to embed.")
        img, txt = clip_embeddings(
            pictures, captions, model, tokenizer, image_processor, image_mean, image_std
        )
    elif image_embeds is not None and text_embeds is not None:
        img, txt = to_numpy(image_embeds), to_numpy(text_embeds)
    else:
        raise ValueError(
            "Give a CLIP model (model=, tokenizer=) or both image_embeds= and text_embeds=."
        )
    img, txt = _unit(img), _unit(txt)
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"Image and text embeddings differ in width: {img.shape} vs {txt.shape}.")
    if len(txt) != len(captions):
        raise ValueError(f"Got {len(txt)} text embeddings for {len(captions)} captions.")
    if pictures and len(pictures) != len(img):
        raise ValueError(f"Got {len(img)} image embeddings for {len(pictures)} images.")
    sim = img @ txt.T  # (n_images, n_captions) cosine similarities
    n, m = sim.shape
    with style():
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
        ax.set_xticks(range(m), [_wrap(c) for c in captions], rotation=0)
        ax.set_xlabel("caption")
        thumb_points = ROW_INCHES * 72 * 0.9
        ax.set_ylabel("image", labelpad=thumb_points + 8 if pictures else 4)
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
            ax.set_yticks(range(n), [f"image {i}" for i in range(n)])
        ax.set_title("CLIP cosine similarity, images × captions (outline: best caption)")
        fig.colorbar(im, ax=ax, label="cosine similarity", shrink=0.8)
    return fig
