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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .pipeline import denoiser


def _is_pil(x: Any) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def images_to_tensor(images: Any) -> tuple[torch.Tensor, bool]:
    """Images in any accepted form -> ((n, 3, H, W) float32 CPU tensor in [0, 1], unbatched?).

    The one image conversion of sdviz: a PIL image or a list of them; a tensor or array
    (n, 3, H, W) / (3, H, W), or channels last (n, H, W, 3) / (H, W, 3) as numpy holds
    PIL images; float in [0, 1] or uint8. fp16 and CUDA tensors come back float32 on the CPU.
    """
    if _is_pil(images):
        images = np.asarray(images.convert("RGB"))  # (H, W, 3) uint8
    elif isinstance(images, Sequence) and images and all(_is_pil(im) for im in images):
        return torch.cat([images_to_tensor(im)[0] for im in images]), False
    if isinstance(images, np.ndarray):
        images = torch.tensor(images)  # a copy: PIL arrays are read-only
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            "images must be a tensor (n, 3, H, W) / (3, H, W), a PIL image or a list of PIL "
            f"images, got {type(images).__name__}."
        )
    unbatched = images.ndim == 3
    x = images[None] if unbatched else images
    if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:  # channels last
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"images must be shaped (n, 3, H, W) or (3, H, W) (RGB, channels first), got "
            f"{tuple(images.shape)}."
        )
    x = x.detach().cpu()
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


def to_numpy(x: Any) -> np.ndarray:
    """A float32 numpy array from a torch tensor (any dtype, any device), PIL image or array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def image_hwc(image: Any) -> np.ndarray:
    """An (H, W, 3) float32 array in [0, 1] from one image in any form
    `sdviz.autoencoder.images_to_tensor` takes: (3, H, W) tensor, (H, W, 3) array, PIL."""
    x, _ = images_to_tensor(image)
    if x.shape[0] != 1:
        raise ValueError(f"Expected one image (3, H, W) or (H, W, 3); got {x.shape[0]} images.")
    return x[0].permute(1, 2, 0).numpy()


def to_pil(rgb: np.ndarray) -> Any:
    """An (H, W, 3) float array in [0, 1] as an 8-bit PIL image."""
    from PIL import Image

    return Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8))


def generation_size_multiple(pipe: Any) -> int:
    """Image sides `pipe(...)` accepts are multiples of this: the VAE factor, times the
    transformer's patch side for SD3, times 2 for Flux's 2x2-packed latents (its image
    processor's factor), and the pipelines' own multiple of 8."""
    processor = getattr(pipe, "image_processor", None)
    factor = int(getattr(getattr(processor, "config", None), "vae_scale_factor", 0) or 0)
    factor = max(factor, int(pipe.vae_scale_factor))
    patch = int(getattr(denoiser(pipe).config, "patch_size", None) or 1)
    return math.lcm(factor * patch, PIPELINE_SIZE_MULTIPLE)


def check_size(name: str, value: Any, multiple: int, why: str) -> int:
    """Raise a teaching error unless `value` is a positive int multiple of `multiple`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int (pixels), got {value!r}.")
    if value % multiple:
        low, high = value // multiple * multiple, (value // multiple + 1) * multiple
        hint = f"{low} or {high}" if low else f"{high}"
        raise ValueError(f"{name}={value} is not a multiple of {multiple} ({why}); use {hint}.")
    return value


def native_size(pipe: Any) -> int:
    """The image side the model was built for: its latent sample size × the VAE factor
    (the pipeline's `default_sample_size` where it has one: SDXL, SD3, Flux)."""
    sample = getattr(pipe, "default_sample_size", None) or denoiser(pipe).config.sample_size
    return int(sample) * int(pipe.vae_scale_factor)


def check_image_size(pipe: Any, height: int, width: int) -> None:
    """Raise a teaching error unless both sides are multiples of the VAE factor."""
    f = int(pipe.vae_scale_factor)
    for name, value in (("image height", height), ("image width", width)):
        check_size(name, int(value), f, f"sides must be divisible by the VAE factor {f}")


def image_input(image: Any, pipe: Any) -> torch.Tensor:
    """One image for the VAE probes: (1, 3, H, W) float32 CPU in [0, 1], sides checked.

    `image` is a traced run (its final image `vae.image`), a PIL image (resized to the
    model's native size) or anything `images_to_tensor` takes, holding one image.
    """
    if isinstance(image, Mapping):
        if "vae.image" not in image:
            raise KeyError("This run has no 'vae.image'; trace a generation with sdviz.generate.")
        image = image["vae.image"]
    if _is_pil(image):
        side = native_size(pipe)
        image = image.convert("RGB").resize((side, side))
    x, _ = images_to_tensor(image)
    if x.shape[0] != 1:
        raise ValueError(f"Expected one RGB image (3, H, W); got {x.shape[0]} images.")
    check_image_size(pipe, x.shape[2], x.shape[3])
    return x


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
    x, unbatched = images_to_tensor(images)
    check_image_size(pipe, x.shape[-2], x.shape[-1])
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


def psnr(a: Any, b: Any, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images (arrays or tensors) of the same shape.

    `data_range` is the span of the values: 1 for images in [0, 1], 2 for [-1, 1].
    Identical images give infinity.
    """
    a, b = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float64) for x in (a, b))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


@dataclass(frozen=True)
class Reconstruction:
    """An image through the VAE and back (figure 6): what the compression keeps."""

    image: torch.Tensor  # (3, H, W) in [0, 1]
    latents: torch.Tensor  # (c, h, w), scaled as the UNet sees them
    reconstruction: torch.Tensor  # (3, H, W) in [0, 1]: decode(encode(image))
    psnr: float  # dB, reconstruction against image


def reconstruct(pipe: Any, image: Any) -> Reconstruction:
    """encode then decode one image (a run, a (3, H, W) tensor in [0, 1] or a PIL image)."""

    x = image_input(image, pipe)[0]  # (3, H, W)
    z = encode(pipe, x)  # (c, h, w)
    rebuilt = decode(pipe, z)  # (3, H, W)
    return Reconstruction(x, z, rebuilt, psnr(x, rebuilt))


@dataclass(frozen=True)
class Reconstructions:
    """Many images through the VAE and back: how reconstruction quality spreads.

    One image's PSNR says little (lesson 5 measured 24.5 to 38.6 dB on ShapesWorld's test
    split); a model card's number is a mean over held-out images. `ranked` picks examples
    at chosen places of the spread, so the pictures shown are representative.
    """

    images: torch.Tensor  # (n, 3, H, W) in [0, 1]
    latents: torch.Tensor  # (n, c, h, w), scaled as the UNet sees them
    reconstructions: torch.Tensor  # (n, 3, H, W) in [0, 1]
    psnr: np.ndarray  # (n,) dB, each reconstruction against its image

    def __len__(self) -> int:
        return len(self.psnr)

    def __getitem__(self, i: int) -> Reconstruction:
        return Reconstruction(
            self.images[i], self.latents[i], self.reconstructions[i], float(self.psnr[i])
        )

    def below(self, db: float) -> int:
        """How many images reconstruct under `db` dB."""
        return int((self.psnr < db).sum())

    def ranked(self, quantiles: Sequence[float]) -> list[int]:
        """Indices of the images at these quantiles of PSNR (0: the worst, 0.5: the median
        image, 1: the best)."""
        bad = [q for q in quantiles if not 0 <= q <= 1]
        if bad:
            raise ValueError(f"quantiles lie in [0, 1] (0 = worst, 1 = best); got {bad}.")
        order = np.argsort(self.psnr, kind="stable")  # worst first
        return [int(order[round(q * (len(order) - 1))]) for q in quantiles]


def reconstruct_many(pipe: Any, images: Any, *, batch_size: int = 8) -> Reconstructions:
    """encode then decode many images (anything `images_to_tensor` takes, several images)
    and score each reconstruction (PSNR, dB). `batch_size` images go through the VAE at a
    time: the VAE's memory grows with it, as with `encode` and `decode`."""
    x, _ = images_to_tensor(images)  # (n, 3, H, W)
    z = encode(pipe, x, batch_size=batch_size)  # (n, c, h, w)
    rebuilt = decode(pipe, z, batch_size=batch_size)  # (n, 3, H, W)
    scores = np.array([psnr(a, b) for a, b in zip(x, rebuilt, strict=True)])
    return Reconstructions(x, z, rebuilt, scores)
