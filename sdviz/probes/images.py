"""Images from a run and from the VAE: a run's x_t and x̂0 at chosen steps (figure 5, the
denoising explorer), and how close the VAE's reconstructions come to their originals.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..autoencoder import image_hwc, psnr

STEP_IMAGES = ("latents", "pred_original_sample")  # `Run.decode` names, in StepImages order


@dataclass(frozen=True)
class StepImages:
    """A run's x_t and x̂0 as images at some of its steps (figure 5 and the explorer)."""

    steps: list[int]
    latents: torch.Tensor  # (n, 3, H, W) in [0, 1]: x_t
    pred_original_sample: torch.Tensor  # (n, 3, H, W) in [0, 1]: x̂0
    decoded: bool  # True: VAE-decoded; False: the run's linear latent->RGB preview


def step_images(run: Any, pipe: Any = None, steps: Collection[int] | None = None) -> StepImages:
    """x_t and x̂0 of `run` at `steps` (default all): VAE-decoded with `pipe` (cached by the
    run), else the run's instant linear preview at latent resolution."""
    chosen = list(range(run.n_steps)) if steps is None else [int(s) for s in steps]
    if pipe is None:
        x_t, x0 = (run.preview(which, steps=chosen) for which in STEP_IMAGES)
    else:
        x_t, x0 = (run.decode(pipe, which=which, steps=chosen) for which in STEP_IMAGES)
    return StepImages(chosen, x_t, x0, pipe is not None)


def reconstruction_psnr(originals: Sequence[Any], rebuilt: Any) -> list[float]:
    """PSNR in dB (`psnr`) of each rebuilt image against its original.

    `originals`: PIL images, (H, W, 3) arrays or (3, H, W) tensors in [0, 1]; `rebuilt`:
    the VAE's output, (n, 3, H, W) in [0, 1] (`sdviz.decode`) or a list like `originals`.
    """

    originals, rebuilt = list(originals), list(rebuilt)
    if len(originals) != len(rebuilt):
        raise ValueError(f"{len(originals)} originals but {len(rebuilt)} rebuilt images.")
    return [psnr(image_hwc(a), image_hwc(b)) for a, b in zip(originals, rebuilt, strict=True)]
