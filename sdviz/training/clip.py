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

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from ..builder import text_config
from ..shapes import contrast_captions
from .data import CaptionedImages, to_tensor, tokenize, train_steps


def build_clip(tokenizer: CLIPTokenizer, image_size: int = 64, width: int = 128) -> CLIPModel:
    """Small CLIP: text 2x128 (77 positions, vocab from the tokenizer), ViT 2x64 on 8x8 patches."""
    text = text_config(
        tokenizer,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
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
    data: CaptionedImages,
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    train_length: int = 32,
    seed: int = 0,
    hard_negatives: bool = False,
    warmup: int = 200,
    deadline: float | None = None,
    log=print,
    label: str = "clip",
) -> CLIPModel:
    """Contrastive training of `clip`'s trainable parameters; returns the model in eval mode.

    AdamW with CLIP's symmetric loss, warm-up then linear decay. Starts from `clip`'s
    weights, so it also fine-tunes a trained model: the recipe switches `hard_negatives`
    on for a second run, after plain training (from random weights they did not help
    within the recipe's 1,000 steps). With them, the image-to-text half of the loss also
    ranks each image's counterfactual captions (extra columns); the text-to-image half is
    CLIP's own. Trains the parameters that require gradients (all, unless frozen as
    `finetune_image_tower` does); stops after the step that passes `deadline`. Batches
    are drawn from `seed + 1` (numpy); nothing is drawn from torch's global RNG.
    """
    tokenizer, images, captions = data
    params = [p for p in clip.parameters() if p.requires_grad]
    rng = np.random.default_rng(seed + 1)

    def loss_at(step: int) -> tuple[torch.Tensor, str]:
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
        acc = (logits.argmax(1) == torch.arange(batch)).float().mean().item()
        return loss, f"loss {loss.item():.4f} batch top1 {acc:.3f} (+{len(negatives)} negatives)"

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    clip.train()
    train_steps(label, opt, loss_at, steps, warmup=warmup, floor=0.05, log=log, deadline=deadline)
    return clip.eval()


def finetune_image_tower(
    clip: CLIPModel,
    data: CaptionedImages,
    steps: int,
    batch: int = 64,
    seed: int = 0,
    deadline: float | None = None,
    log=print,
) -> CLIPModel:
    """More contrastive training of the image tower only, the text tower frozen.

    The text tower is the pipeline's text encoder, which the UNet was trained against:
    it must not change. The image tower (used only for CLIP-similarity figures and
    retrieval) can keep learning to match it, e.g. while the UNet trains. `train_clip`
    at rate 5e-4 after 50 warm-up steps; batches are drawn from `seed + 3` (numpy).
    """
    clip.requires_grad_(False)
    clip.vision_model.requires_grad_(True)
    clip.visual_projection.requires_grad_(True)
    return train_clip(
        clip,
        data,
        steps,
        batch,
        lr=5e-4,
        seed=seed + 2,  # train_clip draws from seed + 1
        warmup=50,
        deadline=deadline,
        log=log,
        label="clip image tower",
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
