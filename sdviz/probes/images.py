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
from ..language import Texts, course_language

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
# `colour_statistics`' headers and notes in each course language (`sdviz.language`)
T = Texts(
    __name__,
    {
        "images": ("images", "图像"),
        "set": ("{name} ({n}×{h}×{w})", "{name}（{n}×{h}×{w}）"),
        "pale": ("light background", "浅色背景"),
        "coloured": ("coloured", "有颜色"),
        "world": ("in the world's colours", "属于这个世界的颜色"),
        "nearest": ("coloured pixels' nearest colour", "有颜色像素最接近的颜色"),
        "neighbour": ("neighbour difference", "相邻差异"),
        "note_pale": (
            "light background: every channel > {pale} and grey (saturation < {grey}); "
            "coloured: saturation > {colourful}",
            "浅色背景：每个通道 > {pale} 且接近灰色（饱和度 < {grey}）；"
            "有颜色：饱和度 > {colourful}",
        ),
        "note_world": (
            "in the world's colours: light background or within {near} (RGB distance) of a "
            "palette colour; nearest colour: the one most coloured pixels are closest to",
            "属于这个世界的颜色：浅色背景，或与调色板中某个颜色的距离在 {near} 以内（RGB 距离）；"
            "最接近的颜色：多数有颜色像素离它最近的那个颜色",
        ),
        "note_neighbour": (
            "neighbour difference: mean |change| from one pixel to the next (pixel noise ≈ 0.4)",
            "相邻差异：从一个像素到下一个像素的平均 |变化|（像素噪声约为 0.4）",
        ),
    },
)
# how `colour_statistics`' columns print (`sdviz.course.table(..., formats=, notes=)`);
# the English headers name the columns in either language (`sdviz.language.Term`)
COLOUR_FORMATS = {
    "light background": ".0%",
    "coloured": ".0%",
    "in the world's colours": ".0%",
    "neighbour difference": ".3f",
}


def colour_notes(lang: str | None = None) -> tuple[str, ...]:
    """What `colour_statistics`' columns mean, lines to print under its table, in `lang`
    (default: the course language)."""
    lang = course_language(lang)
    return (
        T("note_pale", lang, pale=PALE[0], grey=PALE[1], colourful=COLOURFUL),
        T("note_world", lang, near=NEAR),
        T("note_neighbour", lang),
    )


def colour_statistics(
    images: Mapping[str, Any], palette: Mapping[str, Sequence[int]], lang: str | None = None
) -> dict[str, list[Any]]:
    """Colour statistics of named image sets, as the columns of a table.

    `images`: name -> images in any form `sdviz.autoencoder.images_to_tensor` takes;
    `palette`: colour name -> 8-bit RGB (e.g. `sdviz.shapes.COLOURS`). Per set: the share
    of light-background pixels, of coloured pixels, of pixels that are the palette's
    colours or a light background ("in the world"), the palette colour most of the coloured
    pixels are nearest to (with its share), and the mean difference between neighbouring
    pixels (0 for flat colour; about 0.4 for independent pixel noise). Headers in `lang`
    (default: the course language); `colour_notes` says what they mean.
    """
    lang = course_language(lang)
    names = list(palette)
    colours = torch.tensor([list(palette[n]) for n in names], dtype=torch.float32) / 255  # (k, 3)
    columns: dict[str, list[Any]] = {
        key: [] for key in ("images", "pale", "coloured", "world", "nearest", "neighbour")
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
        n, h, w = len(x), x.shape[-2], x.shape[-1]
        columns["images"].append(T("set", lang, name=name, n=n, h=h, w=w))
        columns["pale"].append(float(pale.float().mean()))
        columns["coloured"].append(float(coloured.float().mean()))
        columns["world"].append(float((pale | (nearest.values < NEAR)).float().mean()))
        share = float(counts[top_colour] / counts.sum().clamp_min(1))
        columns["nearest"].append(f"{names[top_colour]} {share:.0%}")
        columns["neighbour"].append(float(neighbour))
    return {T(key, lang): values for key, values in columns.items()}
