"""Train CLIP contrastively: `transformers.CLIPModel` on ShapesWorld image-caption pairs.

CLIP (Radford et al. 2021) embeds images and captions in one space and is trained
so that, within a batch, each image's embedding is most similar to its own
caption's (a symmetric cross-entropy over the batch's similarity matrix). Stable
Diffusion then keeps only the text tower: its per-token outputs become the UNet's
cross-attention context. Here both towers are small transformers: a 2-layer,
128-wide text encoder with the 77-token context, and a 2-layer ViT with 8x8 patches.

A batch of random captions almost never holds two that differ only in "left" and
"right", so plain contrastive training lets the text tower ignore relations, and the
UNet then cannot place objects. With `hard_negatives`, each image is also scored
against counterfactual captions of its own (`sdviz.shapes.contrast_captions`: the
relation flipped, two colours swapped), as NegCLIP does (Yuksekgonul et al. 2023).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from ..shapes import contrast_captions
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
    hard_negatives: bool = False,
    warmup: int = 200,
    log=print,
) -> CLIPModel:
    """Contrastive training of both towers; returns the model in eval mode.

    Starts from `clip`'s weights, so it also fine-tunes a trained model: the recipe
    switches `hard_negatives` on for a second run, after plain training (from random
    weights they did not help within the recipe's 1,000 steps). Batches are drawn from
    `seed + 1` (numpy); nothing is drawn from torch's global RNG.
    """
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
        warmup=warmup,
        train_length=train_length,
        rng=rng,
        deadline=None,
        log=log,
        label="clip",
        hard_negatives=hard_negatives,
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
    hard_negatives: bool = False,
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
        hard_negatives=hard_negatives,
    )


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss; columns past the batch are extra captions (hard negatives).

    `logits_per_image` is (batch, batch + negatives): image i's caption is column i.
    Images rank all the captions; each of the batch's captions ranks the batch's images.
    """
    batch = logits_per_image.shape[0]
    if logits_per_image.ndim != 2 or logits_per_image.shape[1] < batch:
        raise ValueError(
            f"logits_per_image must be (batch, batch + negatives), got "
            f"{tuple(logits_per_image.shape)}."
        )
    target = torch.arange(batch, device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, target)
    text_to_image = F.cross_entropy(logits_per_image[:, :batch].T, target)
    return (image_to_text + text_to_image) / 2


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
    hard_negatives: bool,
) -> CLIPModel:
    """AdamW on `params` with CLIP's symmetric loss, warm-up then linear decay.

    With `hard_negatives`, the image-to-text half of the loss also ranks each image's
    counterfactual captions (extra columns); the text-to-image half is CLIP's own.
    """
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
        texts = [captions[i] for i in idx]
        negatives = (
            [n for t in texts for n in contrast_captions(t).values()] if hard_negatives else []
        )
        ids = tokenize(tokenizer, texts + negatives)[:, :train_length]
        out = clip(input_ids=ids, pixel_values=to_tensor(images[idx]))
        logits = out.logits_per_image  # (batch, batch + negatives)
        loss = contrastive_loss(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            acc = (logits.argmax(1) == torch.arange(batch)).float().mean().item()
            log(
                f"{label} step {step}/{steps} loss {loss.item():.4f} batch top1 {acc:.3f} "
                f"(+{len(negatives)} negatives) {(step + 1) / (time.time() - t0):.2f} it/s"
            )
        if deadline is not None and time.time() > deadline:
            log(f"{label}: deadline reached at step {step + 1}")
            break
    return clip.eval()
