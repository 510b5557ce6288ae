"""Images and captions embedded by CLIP (Radford et al. 2021), and their cosine
similarities: the matrix figure 8 draws, whose diagonal lights up when each image sits
closest to its own caption.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..autoencoder import image_hwc, images_to_tensor, to_numpy, to_pil


@dataclass(frozen=True)
class ClipEmbeddings:
    """Images and captions embedded by CLIP (Radford et al. 2021), unit length."""

    images: list[Any]  # what was embedded (drawn as thumbnails; may be empty)
    captions: list[str]
    image_embeds: np.ndarray  # (n, p)
    text_embeds: np.ndarray  # (m, p)

    def __post_init__(self) -> None:
        img, txt = (_unit(x) for x in (self.image_embeds, self.text_embeds))
        if img.shape[1] != txt.shape[1]:
            raise ValueError(
                f"Image and text embeddings differ in width: {img.shape} vs {txt.shape}."
            )
        if len(txt) != len(self.captions) or not all(isinstance(c, str) for c in self.captions):
            raise ValueError(f"Got {len(txt)} text embeddings for captions {self.captions!r}.")
        if self.images and len(self.images) != len(img):
            raise ValueError(f"Got {len(img)} image embeddings for {len(self.images)} images.")
        object.__setattr__(self, "image_embeds", img)
        object.__setattr__(self, "text_embeds", txt)

    @property
    def similarity(self) -> np.ndarray:
        """(n_images, n_captions) cosine similarities."""
        return self.image_embeds @ self.text_embeds.T


def _unit(x: Any) -> np.ndarray:
    x = to_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"Embeddings must be a (count, dim) matrix; got shape {x.shape}.")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _clip_pixels(images: list[Any], model: Any, processor: Any, mean: Any, std: Any):
    """(n, 3, s, s) normalised pixels for the CLIP vision tower."""
    if processor is not None:
        pil = [to_pil(image_hwc(im)) for im in images]
        return processor(images=pil, return_tensors="pt")["pixel_values"]
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    side = int(model.config.vision_config.image_size)
    x = torch.cat([images_to_tensor(im)[0] for im in images])
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
    mean = torch.tensor(OPENAI_CLIP_MEAN if mean is None else mean, dtype=x.dtype)
    std = torch.tensor(OPENAI_CLIP_STD if std is None else std, dtype=x.dtype)
    return (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


@torch.no_grad()
def clip_embeddings(
    images: Collection[Any],
    captions: Collection[str] | None = None,
    *,
    model: Any,
    tokenizer: Any,
    image_processor: Any = None,
    image_mean: Collection[float] | None = None,
    image_std: Collection[float] | None = None,
) -> ClipEmbeddings:
    """Embed `images` (runs, tensors or PIL; runs' prompts are the default captions) and
    `captions` with a transformers `CLIPModel` and its `tokenizer`.

    Images are resized to the vision tower's size and normalised with `image_mean` /
    `image_std` (default: OpenAI CLIP's; sdviz's own CLIP models take pixels in [-1, 1],
    mean = std = 0.5), unless an `image_processor` (e.g. CLIPImageProcessor) is given.
    """
    images = list(images)
    if captions is None:
        if not images or not all(isinstance(r, Mapping) and "pipeline.prompt" in r for r in images):
            raise ValueError("Pass captions (the default captions are the runs' prompts).")
        captions = [r["pipeline.prompt"] for r in images]
    if not images or not captions:
        raise ValueError("Pass at least one image and one caption to embed.")
    pictures = [r["vae.image"] if isinstance(r, Mapping) else r for r in images]
    param = next(model.parameters())
    pixels = _clip_pixels(pictures, model, image_processor, image_mean, image_std)
    tokens = tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt")
    out = model(
        pixel_values=pixels.to(param.device, param.dtype),
        input_ids=tokens["input_ids"].to(param.device),
        attention_mask=tokens["attention_mask"].to(param.device),
    )
    return ClipEmbeddings(pictures, list(captions), out.image_embeds, out.text_embeds)


COUNTERFACTUAL_KINDS = {"relation": "relation flipped", "colours": "colours swapped"}


@dataclass(frozen=True)
class Counterfactuals:
    """Test pictures, each with its own caption and its counterfactuals: captions made of
    the same words that describe another picture (`sdviz.shapes.contrast_captions`)."""

    images: list[Any]  # PIL images
    captions: list[str]  # per image: its caption, then one counterfactual per kind
    kinds: list[str]  # per caption: "true caption", "relation flipped", "colours swapped"
    truth: list[int]  # per image: the column of its true caption

    def true_wins(self, embeddings: ClipEmbeddings) -> dict[str, float]:
        """Per counterfactual kind: the share of images whose true caption scores higher
        than that counterfactual, a tie counting half. 0.5 is what a CLIP that reads only
        the bag of words gets (it scores both alike), 1.0 a CLIP that always reads them."""
        sim = embeddings.similarity  # (images, captions)
        wins: dict[str, list[float]] = {}
        for row, col in enumerate(self.truth):
            for j in range(col + 1, col + 1 + len(COUNTERFACTUAL_KINDS)):
                win = np.sign(sim[row, col] - sim[row, j]) / 2 + 0.5  # 1, 0.5 (tie) or 0
                wins.setdefault(self.kinds[j], []).append(float(win))
        return {kind: float(np.mean(w)) for kind, w in wins.items()}


def counterfactuals(world: Any, n: int, *, start: int = 0, search: int = 2000) -> Counterfactuals:
    """The first `n` samples of a ShapesWorld (from index `start`) that have *every* kind
    of counterfactual — the relation flipped ("left of" <-> "right of", "above" <->
    "below") and two colours swapped — so that each image faces exactly those."""
    from PIL import Image

    from ..shapes import contrast_captions

    images, captions, kinds, truth = [], [], [], []
    for i in range(start, start + search):
        sample = world[i]
        other = contrast_captions(sample.caption)
        if set(other) != set(COUNTERFACTUAL_KINDS):
            continue
        images.append(Image.fromarray(sample.image))
        truth.append(len(captions))
        captions += [sample.caption, *(other[k] for k in COUNTERFACTUAL_KINDS)]
        kinds += ["true caption", *COUNTERFACTUAL_KINDS.values()]
        if len(images) == n:
            return Counterfactuals(images, captions, kinds, truth)
    raise ValueError(
        f"only {len(images)} of {search} samples have every counterfactual "
        f"({', '.join(COUNTERFACTUAL_KINDS.values())}); asked for {n}."
    )
