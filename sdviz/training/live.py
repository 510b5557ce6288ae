"""Short live training runs for the lessons: a noise predictor and a CLIP, with loss histories.

The full recipe (`sdviz train`, recipe.py) trained sdviz-mini in 161.9 minutes of wall
clock on a 2-core CPU (`sdviz/models/sdviz-mini/training_record.json`). A lesson needs a
run a learner can watch in a minute: the same objectives, from random weights, on freshly
generated ShapesWorld data, with the loss recorded at every step.

- `train_noise_predictor(pipe, steps)`: DDPM's simple objective (Ho et al. 2020) — a
  small UNet (`unet.build_unet`) learns to predict the noise mixed into ShapesWorld
  latents (encoded by the pipeline's VAE), given the captions' token vectors (the
  pipeline's frozen text encoder), as Stable Diffusion's UNet is trained (Rombach et al.
  2022).
- `train_small_clip(tokenizer, steps)`: CLIP's symmetric contrastive loss (Radford et al.
  2021) on a small `transformers.CLIPModel` (`clip.build_clip`); also records the
  in-batch top-1 accuracy (how often an image's best caption is its own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..seeding import drawing_from
from ..shapes import ShapesWorld
from .clip import build_clip
from .data import descend, to_tensor, tokenize, warmup_lr
from .unet import build_unet

CLIP_TEXT_POSITIONS = 32  # CLIP's text attention is causal: shorter padding is exact


@dataclass
class LiveRun:
    """A finished short run: the trained `model` (eval mode) and its per-step history."""

    model: torch.nn.Module
    loss: list[float]
    seconds: float
    accuracy: list[float] = field(default_factory=list)  # CLIP: in-batch top-1 per step
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # CLIP: its pixels are in [-1, 1]
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    kind: str = "noise predictor"  # or "clip": what was trained (the figure's labels)
    batch: int = 0  # examples per step (CLIP: a guess picks 1 caption of `batch`)


def _check(steps: int, batch: int, n_images: int) -> None:
    for name, value in (("steps", steps), ("batch", batch), ("n_images", n_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


@torch.no_grad()
def _training_data(pipe: Any, n_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ShapesWorld latents (n, c, h, w) and caption token vectors (n, L, d), float32, CPU."""
    from ..autoencoder import encode

    side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    images, captions = ShapesWorld(size=side, split="train", seed=seed).batch(0, n_images)
    latents = encode(pipe, torch.from_numpy(images).permute(0, 3, 1, 2))  # (n, c, h, w)
    ids = tokenize(pipe.tokenizer, captions)  # (n, L)
    device = pipe.text_encoder.device
    embeds = torch.cat(
        [pipe.text_encoder(chunk.to(device))[0].float().cpu() for chunk in ids.split(64)]
    )  # (n, L, d)
    return latents, embeds


def train_noise_predictor(
    pipe: Any,
    steps: int = 60,
    *,
    batch: int = 16,
    n_images: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> LiveRun:
    """Train a fresh small UNet to predict noise on ShapesWorld latents, for `steps` steps.

    Inputs come from the loaded pipeline: its VAE encodes the images, its frozen text
    encoder embeds the captions, its scheduler's ᾱ_t noises the latents. Returns the
    UNet (float32, on the pipeline's device) and the MSE loss of every step.
    """
    from ..diffusion import add_noise

    _check(steps, batch, n_images)
    latents, embeds = _training_data(pipe, n_images, seed)
    c, h, w = latents.shape[1:]
    with drawing_from(torch.Generator().manual_seed(seed)):  # seeded init, global RNG unused
        unet = build_unet(cross_attention_dim=embeds.shape[-1], sample_size=h)
    if unet.config.in_channels != c:
        raise ValueError(
            f"the small UNet takes {unet.config.in_channels}-channel latents; this VAE makes {c}."
        )
    device = pipe.unet.device
    unet.to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    n_train = int(pipe.scheduler.config.num_train_timesteps)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=gen)
        t = torch.randint(0, n_train, (batch,), generator=gen)
        noise = torch.randn((batch, c, h, w), generator=gen)
        x_t = add_noise(latents[idx], t, pipe.scheduler, noise=noise)  # (batch, c, h, w)
        pred = unet(x_t.to(device), t.to(device), encoder_hidden_states=embeds[idx].to(device))
        loss = torch.nn.functional.mse_loss(pred.sample, noise.to(device))
        descend(loss, opt, unet.parameters(), lr * warmup_lr(step, 20))
        losses.append(loss.item())
    return LiveRun(unet.eval(), losses, time.perf_counter() - start, batch=batch)


def train_small_clip(
    tokenizer: Any,
    steps: int = 300,
    *,
    batch: int = 64,
    n_images: int = 2048,
    image_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
) -> LiveRun:
    """Train a fresh small CLIP on ShapesWorld image-caption pairs (CPU), for `steps` steps.

    `tokenizer` is the pipeline's (`pipe.tokenizer`). Returns the CLIPModel, the
    contrastive loss and the in-batch top-1 accuracy of every step; its image tower
    takes pixels normalised with mean = std = 0.5 (`LiveRun.image_mean/std`).
    """
    _check(steps, batch, n_images)
    images, captions = ShapesWorld(size=image_size, split="train", seed=seed).batch(0, n_images)
    ids = tokenize(tokenizer, captions)[:, :CLIP_TEXT_POSITIONS]  # (n, positions)
    with drawing_from(torch.Generator().manual_seed(seed)):
        clip = build_clip(tokenizer, image_size=image_size).train()
    opt = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    losses, accuracy, start = [], [], time.perf_counter()
    for step in range(steps):
        idx = rng.choice(n_images, size=min(batch, n_images), replace=False)
        out = clip(input_ids=ids[idx], pixel_values=to_tensor(images[idx]), return_loss=True)
        descend(out.loss, opt, clip.parameters(), lr * warmup_lr(step, 20))
        losses.append(out.loss.item())
        best = out.logits_per_image.argmax(1)  # (batch,) best caption per image
        accuracy.append(float((best == torch.arange(len(idx))).float().mean()))
    seconds = time.perf_counter() - start
    return LiveRun(clip.eval(), losses, seconds, accuracy, kind="clip", batch=len(idx))
