"""VAE probes: images to latents and back.

Latent diffusion (Rombach et al. 2022) runs the diffusion process not on pixels but on
the latents of a KL-regularised autoencoder: the encoder maps an (3, H, W) image to a
(4, H/f, W/f) Gaussian posterior (f = ``pipe.vae_scale_factor``, 8 for SD), whose mean
is multiplied by ``vae.config.scaling_factor`` (0.18215 for SD 1.x) so that latents have
roughly unit variance, the scale the noise schedule assumes. The decoder inverts it.

    z = encode(pipe, images)   # images (n, 3, H, W) in [0, 1] -> (n, 4, H/8, W/8)
    x = decode(pipe, z)        # -> (n, 3, H, W) in [0, 1], float32 on the CPU

An unbatched (3, H, W) image gives an unbatched (4, h, w) latent, and back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _to_tensor(images: Any) -> tuple[torch.Tensor, bool]:
    """Images in any accepted form -> ((n, 3, H, W) float32 in [0, 1], unbatched?)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(images, Image.Image):
        images = np.asarray(images.convert("RGB"))  # (H, W, 3) uint8
        return torch.from_numpy(images.copy()).permute(2, 0, 1)[None].float() / 255, True
    if isinstance(images, Sequence) and images and Image is not None:
        if all(isinstance(im, Image.Image) for im in images):
            return torch.cat([_to_tensor(im)[0] for im in images]), False
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            "images must be a tensor (n, 3, H, W) / (3, H, W), a PIL image or a list of PIL "
            f"images, got {type(images).__name__}."
        )
    unbatched = images.ndim == 3
    x = images[None] if unbatched else images
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"images must be shaped (n, 3, H, W) or (3, H, W) (RGB, channels first), got "
            f"{tuple(images.shape)}."
        )
    if x.dtype == torch.uint8:
        return x.float() / 255, unbatched
    if not x.dtype.is_floating_point:
        raise TypeError(f"images must be float in [0, 1] or uint8, got {x.dtype}.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; for a "
            "[-1, 1] tensor pass (x + 1) / 2, for 0..255 pass x / 255."
        )
    return x.float().clamp(0, 1), unbatched


# diffusers' Stable Diffusion pipelines refuse sizes that are not multiples of 8
# (`check_inputs`: "`height` and `width` have to be divisible by 8"), whatever the VAE.
PIPELINE_SIZE_MULTIPLE = 8


def generation_size_multiple(pipe: Any) -> int:
    """Image sides `pipe(...)` accepts are multiples of this (VAE factor and pipeline check)."""
    return math.lcm(int(pipe.vae_scale_factor), PIPELINE_SIZE_MULTIPLE)


def check_size(name: str, value: Any, multiple: int, why: str) -> int:
    """Raise a teaching error unless `value` is a positive int multiple of `multiple`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int (pixels), got {value!r}.")
    if value % multiple:
        low, high = value // multiple * multiple, (value // multiple + 1) * multiple
        hint = f"{low} or {high}" if low else f"{high}"
        raise ValueError(f"{name}={value} is not a multiple of {multiple} ({why}); use {hint}.")
    return value


def _check_size(pipe: Any, h: int, w: int, what: str) -> None:
    f = int(pipe.vae_scale_factor)
    if h % f or w % f:
        raise ValueError(
            f"{what} height and width must be divisible by the VAE factor {f}, got {h}x{w}; "
            f"crop or resize to {h // f * f or f}x{w // f * f or f}."
        )


def _factors(vae: Any) -> tuple[float, float]:
    shift = getattr(vae.config, "shift_factor", None)
    return float(vae.config.scaling_factor), float(shift or 0.0)


@torch.no_grad()
def encode(
    pipe: Any,
    images: Any,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """Encode images to scaled latents: ``scaling_factor * (posterior mean)``.

    `images`: (n, 3, H, W) or (3, H, W) float in [0, 1] or uint8, a PIL image or a list
    of them; H and W divisible by ``pipe.vae_scale_factor``. ``sample=True`` draws from
    the posterior instead of taking its mean. Returns CPU float32 (n, c, H/f, W/f).
    """
    x, unbatched = _to_tensor(images)
    _check_size(pipe, x.shape[-2], x.shape[-1], "image")
    vae = pipe.vae
    scale, shift = _factors(vae)
    out = []
    for chunk in x.split(batch_size):
        pixels = (chunk * 2 - 1).to(vae.device, vae.dtype)  # the VAE works in [-1, 1]
        dist = vae.encode(pixels).latent_dist
        z = dist.sample(generator) if sample else dist.mean  # (b, c, h, w)
        out.append(((z.float() - shift) * scale).cpu())
    z = torch.cat(out)
    return z[0] if unbatched else z


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Decode scaled latents (n, c, h, w) or (c, h, w) to images in [0, 1], CPU float32."""
    if not isinstance(latents, torch.Tensor) or latents.ndim not in (3, 4):
        raise ValueError(
            "latents must be a (n, c, h, w) or (c, h, w) tensor, got "
            f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}."
        )
    vae = pipe.vae
    channels = vae.config.latent_channels
    if latents.shape[-3] != channels:
        raise ValueError(
            f"latents have {latents.shape[-3]} channels, the VAE expects {channels}: pass "
            "latents (from sdviz.encode or a trace), not images."
        )
    unbatched = latents.ndim == 3
    z = latents[None] if unbatched else latents
    scale, shift = _factors(vae)
    out = []
    for chunk in z.split(batch_size):
        # Unscale where and in the dtype the pipeline does: a CUDA division by a scalar
        # can differ from the CPU's by an ulp, and cuDNN's TF32 convolutions (PyTorch's
        # default on Ampere and later) grow that to ~3e-4 in pixels.
        chunk = chunk.to(vae.device, vae.dtype) / scale
        if shift:
            chunk = chunk + shift
        image = vae.decode(chunk).sample  # (b, 3, H, W) in about [-1, 1]
        out.append((image.float() / 2 + 0.5).clamp(0, 1).cpu())
    images = torch.cat(out)
    return images[0] if unbatched else images
