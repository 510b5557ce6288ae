"""Train CLIP contrastively: `transformers.CLIPModel` on ShapesWorld image-caption pairs.

CLIP (Radford et al. 2021) embeds images and captions in one space and is trained
so that, within a batch, each image's embedding is most similar to its own
caption's (a symmetric cross-entropy over the batch's similarity matrix). Stable
Diffusion then keeps only the text tower: its per-token outputs become the UNet's
cross-attention context. Here both towers are small transformers: a 2-layer,
128-wide text encoder with the 77-token context, and a 2-layer ViT with 8x8 patches.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from .data import to_tensor, tokenize, warmup_lr


def build_clip(tokenizer: CLIPTokenizer, image_size: int = 64, width: int = 128) -> CLIPModel:
    """Small CLIP: text 2x128 (77 positions, vocab from the tokenizer), ViT 2x64 on 8x8 patches."""
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        image_size=image_size,
        patch_size=8,
        hidden_size=width // 2,
        intermediate_size=width,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=width))


def train_clip(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    images: np.ndarray,
    captions: list[str],
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    train_length: int = 32,
    seed: int = 0,
    log=print,
) -> CLIPModel:
    """Contrastive training (CLIPModel's own symmetric loss); returns the model in eval mode."""
    torch.manual_seed(seed + 1)
    params = list(clip.parameters())
    rng = np.random.default_rng(seed + 1)
    return _contrastive_loop(
        clip,
        params,
        tokenizer,
        images,
        captions,
        steps=steps,
        batch=batch,
        lr=lr,
        warmup=200,
        train_length=train_length,
        rng=rng,
        deadline=None,
        log=log,
        label="clip",
    )


def finetune_image_tower(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    images: np.ndarray,
    captions: list[str],
    steps: int,
    batch: int = 64,
    lr: float = 5e-4,
    train_length: int = 32,
    seed: int = 0,
    deadline: float | None = None,
    log=print,
) -> CLIPModel:
    """More contrastive training of the image tower only, the text tower frozen.

    The text tower is the pipeline's text encoder, which the UNet was trained against:
    it must not change. The image tower (used only for CLIP-similarity figures and
    retrieval) can keep learning to match it, e.g. while the UNet trains.
    """
    rng = np.random.default_rng(seed + 3)
    clip.requires_grad_(False)
    params = list(clip.vision_model.parameters()) + list(clip.visual_projection.parameters())
    for p in params:
        p.requires_grad_(True)
    return _contrastive_loop(
        clip,
        params,
        tokenizer,
        images,
        captions,
        steps=steps,
        batch=batch,
        lr=lr,
        warmup=50,
        train_length=train_length,
        rng=rng,
        deadline=deadline,
        log=log,
        label="clip image tower",
    )


def _contrastive_loop(
    clip: CLIPModel,
    params: list[torch.nn.Parameter],
    tokenizer: CLIPTokenizer,
    images: np.ndarray,
    captions: list[str],
    *,
    steps: int,
    batch: int,
    lr: float,
    warmup: int,
    train_length: int,
    rng: np.random.Generator,
    deadline: float | None,
    log,
    label: str,
) -> CLIPModel:
    """AdamW on `params` with CLIP's symmetric loss, warm-up then linear decay."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_lr(s, warmup) * (0.05 + 0.95 * (1 - s / steps))
    )
    clip.train()
    t0 = time.time()
    for step in range(steps):
        idx = rng.integers(len(images), size=batch)
        # Text attention is causal: positions before the padding are the same at any
        # padded length, so training on `train_length` tokens is exact for them and
        # much cheaper than 77 (the tail positions keep their initial embeddings).
        ids = tokenize(tokenizer, [captions[i] for i in idx])[:, :train_length]
        out = clip(input_ids=ids, pixel_values=to_tensor(images[idx]), return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            acc = (out.logits_per_image.argmax(1) == torch.arange(batch)).float().mean().item()
            log(
                f"{label} step {step}/{steps} loss {out.loss.item():.4f} "
                f"batch top1 {acc:.3f} {(step + 1) / (time.time() - t0):.2f} it/s"
            )
        if deadline is not None and time.time() > deadline:
            log(f"{label}: deadline reached at step {step + 1}")
            break
    return clip.eval()
