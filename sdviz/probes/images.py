"""Images from a run and from the VAE: a run's x_t and x̂0 at chosen steps (figure 5, the
denoising explorer), how close the VAE's reconstructions come to their originals, and
the colour statistics that tell noise from a picture of ShapesWorld.

x_t is shown two ways. The VAE decode is what the pipeline would output, but a decoder
only knows the images it was trained on: it maps a noisy latent onto that world (Rombach
et al. 2022 train theirs on photographs; sdviz-mini's saw only ShapesWorld). The linear
preview, a least-squares map from latent channels to RGB, keeps noise looking like noise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..autoencoder import images_to_tensor

STEP_IMAGES = ("latents", "pred_original_sample")  # `Run.decode` names, in StepImages order


@dataclass(frozen=True)
class StepImages:
    """A run's x_t and x̂0 as images at some of its steps (figure 5 and the explorer)."""

    steps: list[int]  # step indices, counted from 0 (the first step is 0)
    latents: torch.Tensor  # (n, 3, H, W) in [0, 1]: x_t
    pred_original_sample: torch.Tensor  # (n, 3, H, W) in [0, 1]: x̂0
    decoded: bool  # True: VAE-decoded; False: the run's linear latent->RGB preview
    preview: torch.Tensor | None = None  # (n, 3, h, w): x_t's linear preview, one px per latent


def step_images(run: Any, pipe: Any = None, steps: Collection[int] | None = None) -> StepImages:
    """x_t and x̂0 of `run` at `steps` (default all): VAE-decoded with `pipe` (cached by the
    run), else the run's instant linear preview at latent resolution. `preview` always
    holds x_t's linear preview (None if the run has no image to fit it on)."""
    chosen = list(range(run.n_steps)) if steps is None else [int(s) for s in steps]
    preview = run.preview("latents", steps=chosen) if "vae.preview_coefficients" in run else None
    if pipe is None:
        if preview is None:
            run.preview("latents", steps=chosen)  # raises the Run's explanation
        return StepImages(
            chosen, preview, run.preview(STEP_IMAGES[1], steps=chosen), False, preview
        )
    x_t, x0 = (run.decode(pipe, which=which, steps=chosen) for which in STEP_IMAGES)
    return StepImages(chosen, x_t, x0, True, preview)


PALE = (0.75, 0.15)  # a "light background" pixel: every channel above 0.75, saturation below 0.15
COLOURFUL = 0.35  # a "coloured" pixel: saturation (max - min) / max above this
NEAR = 0.25  # RGB distance (channels in [0, 1]) within which a pixel "is" a palette colour
# how `colour_statistics`' columns print (`sdviz.course.table(..., formats=, notes=)`)
COLOUR_FORMATS = {
    "light background": ".0%",
    "coloured": ".0%",
    "in the world's colours": ".0%",
    "neighbour difference": ".3f",
}
COLOUR_NOTES = (
    f"light background: every channel > {PALE[0]} and grey (saturation < {PALE[1]}); "
    f"coloured: saturation > {COLOURFUL}",
    f"in the world's colours: light background or within {NEAR} (RGB distance) of a palette "
    "colour; nearest colour: the one most coloured pixels are closest to",
    "neighbour difference: mean |change| from one pixel to the next (pixel noise ≈ 0.4)",
)


def colour_statistics(
    images: Mapping[str, Any], palette: Mapping[str, Sequence[int]]
) -> dict[str, list[Any]]:
    """Colour statistics of named image sets, as the columns of a table.

    `images`: name -> images in any form `sdviz.autoencoder.images_to_tensor` takes;
    `palette`: colour name -> 8-bit RGB (e.g. `sdviz.shapes.COLOURS`). Per set: the share
    of light-background pixels, of coloured pixels, of pixels that are the palette's
    colours or a light background ("in the world"), the palette colour most of the coloured
    pixels are nearest to (with its share), and the mean difference between neighbouring
    pixels (0 for flat colour; about 0.4 for independent pixel noise).
    """
    names = list(palette)
    colours = torch.tensor([list(palette[n]) for n in names], dtype=torch.float32) / 255  # (k, 3)
    columns: dict[str, list[Any]] = {
        "images": [],
        "light background": [],
        "coloured": [],
        "in the world's colours": [],
        "coloured pixels' nearest colour": [],
        "neighbour difference": [],
    }
    for name, value in images.items():
        x = images_to_tensor(value)[0].clamp(0, 1)  # (n, 3, H, W)
        rgb = x.permute(0, 2, 3, 1).reshape(-1, 3)  # (pixels, 3)
        top, low = rgb.max(1).values, rgb.min(1).values
        saturation = (top - low) / top.clamp_min(1e-6)
        pale = (low > PALE[0]) & (saturation < PALE[1])
        nearest = torch.cdist(rgb, colours).min(1)  # distance and index of the palette colour
        coloured = saturation > COLOURFUL
        counts = torch.bincount(nearest.indices[coloured], minlength=len(names))
        top_colour = int(counts.argmax())
        neighbour = (
            (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()
        ) / 2
        columns["images"].append(f"{name} ({len(x)}×{x.shape[-2]}×{x.shape[-1]})")
        columns["light background"].append(float(pale.float().mean()))
        columns["coloured"].append(float(coloured.float().mean()))
        columns["in the world's colours"].append(
            float((pale | (nearest.values < NEAR)).float().mean())
        )
        share = float(counts[top_colour] / counts.sum().clamp_min(1))
        columns["coloured pixels' nearest colour"].append(f"{names[top_colour]} {share:.0%}")
        columns["neighbour difference"].append(float(neighbour))
    return columns
