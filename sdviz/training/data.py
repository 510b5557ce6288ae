"""ShapesWorld training data on disk: images, captions and the learned tokenizer.

A training set is generated once (deterministically, from `sdviz.shapes`) and kept
as a `.npz` of uint8 images plus a JSON list of captions, so that every model of the
recipe sees the same data. The tokenizer's BPE vocabulary is learned from
ShapesWorld captions (`sdviz.tokenizer.build_tokenizer`).

The pieces the training loops share live here too: the learning-rate warm-up
(`warmup_lr`), one clipped optimizer step (`descend`) and the loop of the VAE and CLIP
stages (`train_steps`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from transformers import CLIPTokenizer

from ..shapes import ShapesWorld, vocabulary_captions
from ..text import padded_ids
from ..tokenizer import build_tokenizer


class CaptionedImages(NamedTuple):
    """CLIP's training data: the tokenizer, images (n, H, W, 3) uint8 and their captions."""

    tokenizer: CLIPTokenizer
    images: np.ndarray
    captions: list[str]


def _chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, list[str]]:
    size, seed, start, count = args
    return ShapesWorld(size=size, split="train", seed=seed).batch(start, count)


def make_dataset(
    work: Path, count: int, size: int = 64, seed: int = 0, workers: int = 2
) -> tuple[np.ndarray, list[str]]:
    """Generate (or reload) `count` training samples: images (n, H, W, 3) uint8 and captions."""
    path = work / f"shapes_{size}px_{count}_seed{seed}.npz"
    if path.exists():
        data = np.load(path)
        return data["images"], json.loads(path.with_suffix(".json").read_text())
    step = 1000
    jobs = [(size, seed, s, min(step, count - s)) for s in range(0, count, step)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_chunk, jobs))
    else:
        parts = [_chunk(j) for j in jobs]
    images = np.concatenate([p[0] for p in parts])
    captions = [c for p in parts for c in p[1]]
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images)
    path.with_suffix(".json").write_text(json.dumps(captions))
    return images, captions


def make_tokenizer(work: Path, seed: int = 0, model_max_length: int = 77) -> CLIPTokenizer:
    """Learn (or reload) the BPE tokenizer from ShapesWorld captions."""
    folder = work / "tokenizer"
    if (folder / "tokenizer_config.json").exists():
        return CLIPTokenizer.from_pretrained(folder)
    tokenizer = build_tokenizer(vocabulary_captions(seed=seed), model_max_length=model_max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids (n, model_max_length), padded as StableDiffusionPipeline pads prompts."""
    return padded_ids(tokenizer, captions)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1], the range SD's VAE uses."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def warmup_lr(step: int, warmup: int) -> float:
    """Linear learning-rate warm-up factor, then constant."""
    return min(1.0, (step + 1) / max(1, warmup))


def descend(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    params: Iterable[torch.nn.Parameter],
    lr: float | None = None,
) -> None:
    """One optimizer step down `loss`, its gradients clipped to norm 1 (at rate `lr` if given)."""
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def train_steps(
    label: str,
    opt: torch.optim.Optimizer,
    loss_at: Callable[[int], tuple[torch.Tensor, str]],
    steps: int,
    *,
    warmup: int,
    floor: float,
    log: Callable[[str], None] = print,
    deadline: float | None = None,
) -> None:
    """`steps` steps of `opt` down `loss_at(step)`'s loss, the gradients clipped to norm 1.

    The learning rate warms up over `warmup` steps, then falls linearly towards `floor`
    times the optimizer's rate. `loss_at(step)` returns the loss and how the step went in
    words, which is logged, with the speed, every 100 steps and at the last one. Stops
    after the step that passes `deadline` (a `time.time()`), if any.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_lr(s, warmup) * (floor + (1 - floor) * (1 - s / steps))
    )
    t0 = time.time()
    for step in range(steps):
        loss, how = loss_at(step)
        descend(loss, opt, params)
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"{label} step {step}/{steps} {how} {(step + 1) / (time.time() - t0):.2f} it/s")
        if deadline is not None and time.time() > deadline:
            log(f"{label}: deadline reached at step {step + 1}")
            break
