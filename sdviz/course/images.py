"""Pictures for a lesson: ShapesWorld samples with their captions (`examples`), and
images side by side as one PIL image (`image_row`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Examples:
    """ShapesWorld samples: `images` (PIL), `captions`, `strip()` to see them in a row."""

    samples: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def images(self) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(s.image) for s in self.samples]

    @property
    def captions(self) -> list[str]:
        return [s.caption for s in self.samples]

    def strip(self) -> Any:
        """The images side by side, as one PIL image."""
        return image_row(self.images)

    def __repr__(self) -> str:
        return "\n".join(f"{i}: {c}" for i, c in enumerate(self.captions))


def examples(world: Any, n: int, *, start: int = 0) -> Examples:
    """The first `n` samples of a ShapesWorld from index `start` (samples picked by what
    their captions say come from probes with a stated rule, such as
    `sdviz.probes.clip.counterfactuals`)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    return Examples(tuple(world[i] for i in range(start, start + n)))


def image_row(images: Any) -> Any:
    """Pictures side by side as one PIL image: a (n, 3, H, W) tensor in [0, 1], or a list
    of (3, H, W) tensors, (H, W, 3) arrays and PIL images of the same height."""
    from PIL import Image

    from ..autoencoder import image_hwc

    items = list(images)
    if not items:
        raise ValueError("image_row needs at least one image.")
    rows = [image_hwc(x) for x in items]
    heights = {r.shape[0] for r in rows}
    if len(heights) > 1:
        raise ValueError(f"the images must have one height; got {sorted(heights)}.")
    return Image.fromarray(np.round(np.hstack(rows) * 255).astype(np.uint8))
