"""Inputs shared by the image-based figures: an image from a run, tensor, array or PIL image.

The VAE of Stable Diffusion (Rombach et al. 2022) downsamples by
`pipe.vae_scale_factor` per side, so an image must have sides divisible by it; PIL
images are resized to the model's native size (`unet.config.sample_size` latents).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .style import to_numpy


def native_size(pipe: Any) -> int:
    """The image side the model was built for: latent sample size × VAE factor."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def image_batch(image: Any, pipe: Any) -> torch.Tensor:
    """A (1, 3, H, W) float32 CPU tensor in [0, 1] from a run (its final image), a tensor
    (3, H, W) / (1, 3, H, W) in [0, 1], an (H, W, 3) array or a PIL image."""
    if isinstance(image, Mapping):
        if "vae.image" not in image:
            raise KeyError("This run has no 'vae.image'; trace a generation with sdviz.generate.")
        image = image["vae.image"]
    if hasattr(image, "convert") and hasattr(image, "resize"):  # PIL
        side = native_size(pipe)
        image = np.asarray(image.convert("RGB").resize((side, side)), dtype=np.float32) / 255.0
    arr = to_numpy(image)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.shape[0] != 3:
        arr = arr.transpose(2, 0, 1)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[:2] != (1, 3):
        raise ValueError(f"Expected one RGB image (3, H, W); got shape {tuple(arr.shape)}.")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError("Image values must lie in [0, 1] (run['vae.image'] does).")
    factor = int(pipe.vae_scale_factor)
    if arr.shape[2] % factor or arr.shape[3] % factor:
        raise ValueError(
            f"Image sides {arr.shape[2]}×{arr.shape[3]} must be divisible by the VAE factor "
            f"{factor}; resize it (the model's native size is {native_size(pipe)})."
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def prompt_of(image: Any, prompt: str | None) -> str | None:
    """The prompt to condition on: `prompt`, else the run's prompt, else None."""
    if prompt is not None:
        return prompt
    return image.get("pipeline.prompt") if isinstance(image, Mapping) else None


def check_timesteps(timesteps: Any, pipe: Any, default_count: int) -> list[int]:
    """Training timesteps in [0, T): given ones validated, else `default_count` evenly spaced."""
    T = int(pipe.scheduler.config.num_train_timesteps)
    if timesteps is None:
        return [int(round(x)) for x in np.linspace(0, T - 1, default_count)]
    items = [timesteps] if isinstance(timesteps, (int, np.integer)) else list(timesteps)
    bad = [t for t in items if not isinstance(t, (int, np.integer)) or not 0 <= t < T]
    if bad or not items:
        raise ValueError(f"Timesteps must be integers in 0..{T - 1} (training steps); got {bad}.")
    return [int(t) for t in items]
