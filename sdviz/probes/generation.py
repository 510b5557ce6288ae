"""Whole generations a figure or lesson compares: one prompt at several guidance scales
(classifier-free guidance, Ho & Salimans 2022; figure 11b), image-to-image at several
strengths (SDEdit, Meng et al. 2022) and images from mixes of two prompts' embeddings.

sdviz.tracing, sdviz.pipeline and diffusers' img2img pipeline are imported at the first
call: they load diffusers, which `import sdviz.probes` does not need.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..text import embed


def guidance_runs(
    pipe: Any,
    prompt: str,
    scales: Collection[float] = (1.0, 3.0, 7.5, 12.0),
    *,
    seed: int = 0,
    steps: int | None = None,
) -> list[Any]:
    """One traced generation of `prompt` per guidance scale, same seed (figure 11b's runs).

    Attention is not recorded; `steps` defaults to the model's recommendation.
    """
    from ..tracing import generate

    if not scales:
        raise ValueError("Pass at least one guidance scale.")
    bad = [g for g in scales if isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0]
    if bad:
        raise ValueError(f"Guidance scales must be numbers >= 0; got {bad}.")
    options = {} if steps is None else {"steps": steps}
    return [
        generate(pipe, prompt, guidance_scale=float(g), seed=seed, attention=None, **options)
        for g in scales
    ]


@dataclass(frozen=True)
class ImageToImage:
    """Image-to-image at several strengths: one traced `Run` per strength, and per run the
    first timestep, its ᾱ_t and how many denoising steps ran (of `steps`)."""

    strengths: list[float]
    runs: list[Any]
    steps: int

    @property
    def images(self) -> torch.Tensor:
        """The results, (n, 3, H, W) in [0, 1]."""
        return torch.stack([r["vae.image"] for r in self.runs])

    @property
    def first_timestep(self) -> list[int]:
        return [int(r["scheduler.step_timestep"][0]) for r in self.runs]

    @property
    def first_alpha_bar(self) -> list[float]:
        return [float(r["scheduler.step_alpha_bar"][0]) for r in self.runs]

    @property
    def steps_run(self) -> list[int]:
        return [r.n_steps for r in self.runs]


def image_to_image(
    pipe: Any,
    image: Any,
    prompt: str,
    strengths: Sequence[float],
    *,
    steps: int,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> ImageToImage:
    """SDEdit (Meng et al. 2022): noise `image` part-way and denoise it under `prompt`.

    diffusers' `StableDiffusionImg2ImgPipeline`, built from `pipe`'s own components,
    encodes `image` ((3, H, W) in [0, 1], or PIL), noises its latents to the timestep
    `strength` of the way back and runs the remaining steps; each call is traced. The
    same seed for every strength; guidance defaults to the model's recommendation.
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    from ..pipeline import recommended
    from ..tracing import trace

    bad = [s for s in strengths if not 0 < s <= 1]
    if bad or not strengths:
        raise ValueError(f"strengths must be in (0, 1], at least one; got {list(strengths)}.")
    if guidance_scale is None:
        guidance_scale = recommended(pipe).guidance_scale
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    if hasattr(image, "ndim") and image.ndim == 3:
        image = image[None]
    with trace(img2img) as tr:
        for s in strengths:
            img2img(
                prompt,
                image=image,
                strength=float(s),
                num_inference_steps=steps,
                guidance_scale=float(guidance_scale),
                generator=torch.Generator(pipe.device).manual_seed(seed),
                output_type="pt",
            )
    return ImageToImage([float(s) for s in strengths], list(tr.runs), steps)


@dataclass(frozen=True)
class PromptMix:
    """Images generated from mixes of two prompts' token vectors: `weights[i]` of the second."""

    first: str
    second: str
    weights: list[float]
    images: torch.Tensor  # (n, 3, H, W) in [0, 1]


def interpolate_prompts(
    pipe: Any,
    first: str,
    second: str,
    weights: Sequence[float],
    *,
    steps: int,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> PromptMix:
    """Generate from (1 - w)·embed(first) + w·embed(second) for each weight w, same seed.

    The UNet sees only the text encoder's vectors, so a mix no sentence produces is a
    valid input, passed to the pipeline as `prompt_embeds`.
    """
    from ..pipeline import recommended

    if guidance_scale is None:
        guidance_scale = recommended(pipe).guidance_scale
    a, b = embed(pipe, first), embed(pipe, second)
    images = []
    for w in weights:
        out = pipe(
            prompt_embeds=torch.lerp(a, b, float(w))[None].to(pipe.device, pipe.dtype),
            num_inference_steps=steps,
            guidance_scale=float(guidance_scale),
            generator=torch.Generator(pipe.device).manual_seed(seed),
            output_type="pt",
        )
        images.append(out.images[0].float().cpu())
    return PromptMix(first, second, [float(w) for w in weights], torch.stack(images))
