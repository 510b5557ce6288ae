"""probes: computations outside a generation, each returning tensors or records that figures draw.

A figure in `sdviz.figures` only draws: whatever needs a network (the UNet, the VAE,
CLIP) or a whole generation is computed here, or in the stage module it belongs to
(`sdviz.diffusion`, `sdviz.autoencoder`, `sdviz.text`), and handed to the figure as a
record (a dataclass, a dict or tensors).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .autoencoder import (
    decode,
    encode,
    image_hwc,
    image_input,
    images_to_tensor,
    psnr,
    to_numpy,
    to_pil,
)
from .diffusion import add_noise, alpha_bar, to_epsilon
from .text import embed


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


# -- probes the figures draw ------------------------------------------------------------
# Figure 2 `forward_noising`, 4 `training_example`, 5 `denoising_filmstrip` /
# `denoising_animation`, 8 `clip_similarity`, 11b `guidance_sweep`. Figure 6 draws
# `sdviz.autoencoder.reconstruct`, figure 7 a Run or `sdviz.text.prompt_record`.


@dataclass(frozen=True)
class NoisedImages:
    """One image noised to several training timesteps, in pixel and in latent space."""

    timesteps: list[int]
    alpha_bar: torch.Tensor  # (n,) ᾱ_t
    pixels: torch.Tensor  # (n, 3, H, W): x_t = √ᾱ·x_0 + √(1−ᾱ)·ε on pixels, clipped to [0, 1]
    decoded: torch.Tensor  # (n, 3, H, W) in [0, 1]: the VAE latents noised alike, decoded
    latent_shape: tuple[int, int, int]  # (c, h, w)


@torch.no_grad()
def noised_images(
    pipe: Any, image: Any, timesteps: Collection[int] | None = None, *, seed: int = 0
) -> NoisedImages:
    """Noise `image` (a run, a (3, H, W) tensor in [0, 1] or PIL) to each timestep (default 6).

    One noise draw (from `seed`) serves every t: in pixel space, and in latent space
    (VAE-encoded, noised, decoded).
    """
    ts = check_timesteps(timesteps, pipe, 6)
    x0 = image_input(image, pipe)  # (1, 3, H, W) in [0, 1]
    g = torch.Generator().manual_seed(seed)
    pixel_noise = torch.randn(x0.shape, generator=g)
    z0 = encode(pipe, x0)  # (1, c, h, w)
    latent_noise = torch.randn(z0.shape, generator=g)
    pixels = torch.cat([add_noise(x0 * 2 - 1, t, pipe, noise=pixel_noise) for t in ts])
    latents = torch.cat([add_noise(z0, t, pipe, noise=latent_noise) for t in ts])
    return NoisedImages(
        ts,
        alpha_bar(pipe, ts),
        ((pixels + 1) / 2).clamp(0, 1),
        decode(pipe, latents),
        tuple(z0.shape[1:]),
    )


@dataclass(frozen=True)
class NoisePredictions:
    """One training example (Ho et al. 2020, Alg. 1): z_0 and ε, and per timestep z_t, ε̂."""

    prompt: str
    t: int  # the timestep drawn in full
    timesteps: list[int]  # where the error is measured (t among them)
    alpha_bar: float  # ᾱ at t
    clean: torch.Tensor  # (c, h, w) z_0
    noise: torch.Tensor  # (c, h, w) ε
    noisy: torch.Tensor  # (n, c, h, w) z_t per timestep
    predicted: torch.Tensor  # (n, c, h, w) ε̂ (as ε also for v-prediction models)
    mse: torch.Tensor  # (n,) mean of (ε̂ − ε)² per timestep

    @property
    def index(self) -> int:
        """The position of `t` in `timesteps`."""
        return self.timesteps.index(self.t)


@torch.no_grad()
def predict_noise(pipe: Any, noisy: torch.Tensor, ts: list[int], prompt: str) -> torch.Tensor:
    """The UNet's ε̂ for latents `noisy` (n, c, h, w) at timesteps `ts`, conditioned on
    `prompt`: CPU float32, converted to ε for v-prediction models (Salimans & Ho 2022)."""
    param = next(pipe.unet.parameters())
    emb = embed(pipe, prompt)[None].to(param.device, param.dtype)  # (1, L, d)
    chunks = []
    for start in range(0, len(ts), 4):  # 4 latents per call: bounded memory at SD sizes
        x = noisy[start : start + 4].to(param.device, param.dtype)
        t = torch.tensor(ts[start : start + 4], device=param.device)
        pred = pipe.unet(x, t, encoder_hidden_states=emb.expand(len(x), -1, -1)).sample
        chunks.append(pred.float().cpu())
    kind = pipe.scheduler.config.get("prediction_type", "epsilon")
    return to_epsilon(noisy, torch.cat(chunks), alpha_bar(pipe, ts), kind)


def noise_predictions(
    pipe: Any,
    image: Any,
    t: int | None = None,
    *,
    prompt: str | None = None,
    timesteps: Collection[int] | None = None,
    seed: int = 0,
) -> NoisePredictions:
    """Encode `image`, noise it with one ε (from `seed`) and ask the UNet for ε̂ at each t.

    `image` is a traced run (its image and prompt) or an image with its caption `prompt`;
    `t` the timestep drawn in full (default T/2); `timesteps` where the error is measured
    (default 10 evenly spaced).
    """
    text = image.get("pipeline.prompt") if prompt is None and isinstance(image, Mapping) else prompt
    if text is None:
        raise ValueError("Pass the image's caption: noise_predictions(pipe, image, prompt=...).")
    T = int(pipe.scheduler.config.num_train_timesteps)
    t = check_timesteps(T // 2 if t is None else t, pipe, 1)[0]
    ts = sorted(set(check_timesteps(timesteps, pipe, 10)) | {t})
    z0 = encode(pipe, image_input(image, pipe))[0]  # (c, h, w)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    noisy = torch.stack([add_noise(z0, step, pipe, noise=noise) for step in ts])
    predicted = predict_noise(pipe, noisy, ts, text)
    mse = ((predicted - noise) ** 2).mean(dim=(1, 2, 3))
    abar = float(alpha_bar(pipe, t))
    return NoisePredictions(text, t, ts, abar, z0, noise, noisy, predicted, mse)


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
    from .tracing import generate

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


# -- probes the lessons use ------------------------------------------------------------
# Each returns a record of named values that a lesson prints or hands to a figure.

import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402


def reconstruction_psnr(originals: Sequence[Any], rebuilt: Any) -> list[float]:
    """PSNR in dB (`psnr`) of each rebuilt image against its original.

    `originals`: PIL images, (H, W, 3) arrays or (3, H, W) tensors in [0, 1]; `rebuilt`:
    the VAE's output, (n, 3, H, W) in [0, 1] (`sdviz.decode`) or a list like `originals`.
    """

    originals, rebuilt = list(originals), list(rebuilt)
    if len(originals) != len(rebuilt):
        raise ValueError(f"{len(originals)} originals but {len(rebuilt)} rebuilt images.")
    return [psnr(image_hwc(a), image_hwc(b)) for a, b in zip(originals, rebuilt, strict=True)]


@dataclass(frozen=True)
class UnetTiming:
    """Seconds per UNet call (the median of `repeats`) for each input size (h, w)."""

    sizes: list[tuple[int, int]]
    seconds: np.ndarray  # (len(sizes),)
    repeats: int


def time_unet(
    pipe: Any, sizes: Sequence[int | tuple[int, int]], *, prompt: str = "", repeats: int = 3
) -> UnetTiming:
    """Time one UNet call (batch 1, conditioned on `prompt`) on random inputs of each size.

    The UNet is convolutional (plus attention), so it runs on any size: a latent-sized
    input, or one as large as the image, as a pixel-space model of the same design would
    see. Each size is run once untimed first (allocations, kernel choice); CUDA is
    synchronised around each call.
    """
    import torch

    from .text import embed

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    unet = pipe.unet
    param = next(unet.parameters())
    emb = embed(pipe, prompt)[None].to(param.device, param.dtype)
    channels = int(unet.config.in_channels)
    hw = [(s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in sizes]

    def one_call(x: Any) -> float:
        if param.device.type == "cuda":
            torch.cuda.synchronize(param.device)
        start = time.perf_counter()
        unet(x, 500, encoder_hidden_states=emb)
        if param.device.type == "cuda":
            torch.cuda.synchronize(param.device)
        return time.perf_counter() - start

    medians = []
    with torch.no_grad():
        for h, w in hw:
            x = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(0))
            x = x.to(param.device, param.dtype)
            one_call(x)  # warm-up
            medians.append(float(np.median([one_call(x) for _ in range(repeats)])))
    return UnetTiming(hw, np.array(medians), repeats)


@dataclass(frozen=True)
class ImageToImage:
    """Image-to-image at several strengths: one traced `Run` per strength, and per run the
    first timestep, its ᾱ_t and how many denoising steps ran (of `steps`)."""

    strengths: list[float]
    runs: list[Any]
    steps: int

    @property
    def images(self) -> Any:
        """The results, (n, 3, H, W) in [0, 1]."""
        import torch

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
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    from .pipeline import recommended
    from .tracing import trace

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
    images: Any  # (n, 3, H, W) in [0, 1]


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
    import torch

    from .pipeline import recommended
    from .text import embed

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
