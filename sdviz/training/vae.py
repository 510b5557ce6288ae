"""Train the autoencoder: `diffusers.AutoencoderKL` on ShapesWorld images.

A variational autoencoder (Kingma & Welling 2014) compresses images to latents
where diffusion is cheap (Rombach et al. 2022). Like SD's, it is trained mostly for
reconstruction with a very small KL weight; unlike SD's (f=8, LPIPS + GAN loss), it
uses a factor f=4 (64 px images <-> 4x16x16 latents: x12 compression) and a plain
MSE + L1 loss. It has no mid-block attention, so it first trains fast on random
crops. But its GroupNorm layers normalise over the whole feature map, so a model
trained on crops mis-renders whole images (flat tints turn grey, borders smear):
the decoder is then fine-tuned on whole images, the encoder frozen. After training,
each latent channel is centred and scaled to the same spread (`balance_channels`,
folded into the 1x1 quant convs), and the latent `scaling_factor` is measured on the
data as 1/std (as SD's 0.18215 was).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL

from ..autoencoder import psnr
from ..builder import plain_vae
from .data import to_tensor, train_steps


def build_vae(image_size: int = 64) -> AutoencoderKL:
    """Three levels (16, 32, 64): two downsamplings, f=4, 4 latent channels."""
    return plain_vae(
        (16, 32, 64),
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=image_size,
        mid_block_add_attention=False,
    )


def _crops(gen: np.random.Generator, images: np.ndarray, batch: int, crop: int) -> torch.Tensor:
    """A batch of random crops (batch, 3, crop, crop) in [-1, 1], offsets on the latent grid."""
    idx = gen.integers(len(images), size=batch)
    y, x = gen.integers(0, images.shape[1] - crop + 1, size=2) // 4 * 4
    return to_tensor(images[idx, y : y + crop, x : x + crop])


def _reconstruction_loss(rec: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(rec, x0) + 0.1 * (rec - x0).abs().mean()


def _how(loss: torch.Tensor, rec: torch.Tensor, x0: torch.Tensor) -> str:
    """A step's loss and reconstruction PSNR (images in [-1, 1]), for the log."""
    return f"loss {loss.item():.5f} psnr {psnr(rec, x0, data_range=2.0):.2f} dB"


def train_vae(
    vae: AutoencoderKL,
    images: np.ndarray,
    steps: int,
    batch: int = 32,
    crop: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    log=print,
) -> AutoencoderKL:
    """Train on random crops; returns the model in eval mode.

    Crops are drawn from `seed` (numpy), and the posterior samples from a torch generator
    of `seed`: torch's global RNG is neither reseeded nor advanced.
    """
    gen = np.random.default_rng(seed)
    noise = torch.Generator().manual_seed(seed)  # the posterior samples

    def loss_at(step: int) -> tuple[torch.Tensor, str]:
        x0 = _crops(gen, images, batch, crop)
        post = vae.encode(x0).latent_dist
        rec = vae.decode(post.sample(generator=noise)).sample
        loss = _reconstruction_loss(rec, x0) + kl_weight * post.kl().mean()
        return loss, _how(loss, rec, x0)

    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    train_steps("vae", opt, loss_at, steps, warmup=100, floor=0.1, log=log)
    return vae.eval()


@torch.no_grad()
def encode_all(vae: AutoencoderKL, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means (n, 4, h, w) of all images, unscaled."""
    out = [
        vae.encode(to_tensor(images[i : i + batch])).latent_dist.mode()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


def measure_scaling_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents, so that scaled latents have unit variance (SD: 0.18215)."""
    return float(1.0 / latents.float().std())


def channel_stats(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std, each (c,), of latents (n, c, h, w)."""
    x = latents.float()
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


@torch.no_grad()
def balance_channels(
    vae: AutoencoderKL, mean: torch.Tensor, std: torch.Tensor, target: float
) -> AutoencoderKL:
    """Fold a per-channel normalisation into the VAE's 1x1 `quant_conv`/`post_quant_conv`.

    The encoder's posterior mean z becomes (z - mean) / std * target, channel by channel,
    and the decoder undoes it first, so images round-trip as before. SD's single
    `scaling_factor` then fits every channel: unfolded, this VAE's latents had channel
    stds 0.43-1.45 and means up to 1.06 (scaled), and the diffusion loss and noise
    drowned the weak channels, which carry blue and purple, first. Changes `vae` in place.
    """
    c = vae.config.latent_channels
    if not (vae.config.use_quant_conv and vae.config.use_post_quant_conv):
        raise ValueError("balance_channels needs a VAE with quant_conv and post_quant_conv.")
    if mean.shape != (c,) or std.shape != (c,):
        raise ValueError(
            f"mean and std must have shape ({c},), one value per latent channel; got "
            f"{tuple(mean.shape)} and {tuple(std.shape)}."
        )
    if not bool((std > 0).all()) or not target > 0:
        raise ValueError(f"std and target must be positive; got std {std.tolist()}, {target}.")
    r = (target / std.double()).float()  # (c,) gain per channel
    q, p = vae.quant_conv, vae.post_quant_conv  # (2c, c, 1, 1): [mean; logvar], (c, c, 1, 1)
    p.bias += (p.weight[:, :, 0, 0] @ mean.float().to(p.weight)).to(p.bias)  # before rescaling
    p.weight /= r.to(p.weight)[None, :, None, None]
    q.weight[:c] *= r.to(q.weight)[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mean.to(q.bias)) * r.to(q.bias)
    q.bias[c:] += 2 * torch.log(r).to(q.bias)  # log-variance scales by r^2
    return vae


def finetune_decoder(
    vae: AutoencoderKL,
    images: np.ndarray,
    steps: int,
    batch: int = 16,
    crop: int | None = None,
    lr: float = 3e-4,
    seed: int = 0,
    log=print,
    deadline: float | None = None,
) -> AutoencoderKL:
    """Train the decoder only, the encoder frozen (as SD's "ft-MSE" VAE decoder was).

    On whole images by default (`crop=None`): GroupNorm statistics over a crop differ
    from those over the image the UNet's latents decode to. Latents, and therefore the
    UNet trained on them, stay valid: this can run while the UNet trains. Crops are drawn
    from `seed + 2` (numpy), the posterior samples from a torch generator of `seed`: torch's
    global RNG is neither reseeded nor advanced.
    """
    crop = crop or images.shape[1]
    gen = np.random.default_rng(seed + 2)
    noise = torch.Generator().manual_seed(seed)  # the posterior samples
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)

    def loss_at(step: int) -> tuple[torch.Tensor, str]:
        x0 = _crops(gen, images, batch, crop)
        with torch.no_grad():
            z = vae.encode(x0).latent_dist.sample(generator=noise)
        rec = vae.decode(z).sample
        loss = _reconstruction_loss(rec, x0)
        return loss, _how(loss, rec, x0)

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train_steps(
        "vae decoder", opt, loss_at, steps, warmup=50, floor=0.1, log=log, deadline=deadline
    )
    return vae.eval()
