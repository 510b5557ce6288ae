"""Attention localisation: does a word's cross-attention map find the word's object?

A word's map (sdviz.attention) should put its mass where the word's object is. With
exact masks this is measurable, as in DAAM (Tang et al. 2023, Sec. 3) and the pointing
game (Zhang et al. 2018, "Top-down neural attention by excitation backprop"):

    pointing   the map's maximum lies inside the object's mask
    IoU        the map, min-max scaled to [0, 1] and cut at `threshold` (0.4 as DAAM),
               against the mask: |map >= threshold AND mask| / |map >= threshold OR mask|
    mass       the share of the map's total mass inside the mask
    own>other  more of the map's mass inside its own object than inside the other one

Maps are resized bilinearly to the masks' size first (clamped at 0). `localisation`
scores ShapesWorld's held-out images (exact masks, sdviz.shapes): each image is encoded,
noised to timestep t with one fixed noise draw, and the UNet is run once with the
image's caption under sdviz's capture, keeping every text-attention layer's maps per
head; every colour word and noun of the caption is scored against its object's mask,
per layer, head and timestep, and for the layer averages. `token_shares` splits the
attention of a map stack between the start token, the words and the end + padding
tokens (CLIP's causal text encoder makes the start token a sink: Xiao et al. 2024,
"Efficient streaming language models with attention sinks", see it in language models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..attention import capture_attention, default_aggregate_layers, mean_of_layers
from ..autoencoder import encode, native_size
from ..diffusion import add_noise
from ..shapes import ShapesWorld
from ..text import padded_ids

DEFAULT = "default"  # the capture's own aggregate, kept beside the layers
KINDS = ("noun", "colour")  # the two words of an object, in the order the scores keep them
MEASURES = ("pointing", "iou", "mass", "own>other")


@dataclass(frozen=True)
class LocalisationConfig:
    """How a map is scored against a mask (see the module doc)."""

    threshold: float = 0.4  # on the min-max scaled map, as DAAM's mIoU (Tang et al. 2023)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) maps -> (..., H, W), bilinear, clamped at 0."""
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.clamp_min(0).reshape(*lead, *size)


def scores(
    maps: torch.Tensor,
    own: torch.Tensor,
    other: torch.Tensor | None = None,
    config: LocalisationConfig = LocalisationConfig(),
) -> dict[str, torch.Tensor]:
    """Per-map scores: maps (..., N, h, w), masks (N, H, W) bool -> {measure: (..., N)}.

    "own>other" is NaN where an object has no other object (`other` None or empty).
    """
    m = resize(maps, tuple(own.shape[-2:]))  # (..., N, H, W)
    flat = m.flatten(-2)  # (..., N, HW)
    own_f = own.flatten(-2).float()  # (N, HW)
    total = flat.sum(-1).clamp_min(1e-12)
    peak = flat.argmax(-1, keepdim=True)  # (..., N, 1)
    pointing = torch.gather(own_f.expand_as(flat), -1, peak)[..., 0]
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    on = ((flat - low) / (high - low).clamp_min(1e-12)) >= config.threshold
    inter = (on & own_f.bool()).sum(-1).float()
    union = (on | own_f.bool()).sum(-1).float()
    out = {
        "pointing": pointing,
        "iou": inter / union.clamp_min(1),
        "mass": (flat * own_f).sum(-1) / total,
    }
    beats = torch.full_like(total, float("nan"))
    if other is not None:
        other_f = other.flatten(-2).float()
        has = other_f.sum(-1) > 0  # (N,)
        wins = ((flat * own_f).sum(-1) > (flat * other_f).sum(-1)).float()
        beats = torch.where(has.expand_as(wins), wins, beats)
    out["own>other"] = beats
    return out


def token_shares(maps: torch.Tensor, n_tokens: int) -> dict[str, float]:
    """How attention divides among token groups: maps (..., L, h, w), summing to 1 over L.

    Returns the mean share of the start token, the words (tokens 1 .. n_tokens-2) and the
    end token with the padding after it; the three add up to 1.
    """
    per_token = maps.float().mean((-2, -1)).reshape(-1, maps.shape[-3]).mean(0)  # (L,)
    return {
        "start": float(per_token[0]),
        "words": float(per_token[1 : n_tokens - 1].sum()),
        "end+padding": float(per_token[n_tokens - 1 :].sum()),
    }


def word_positions(tokenizer: Any, caption: str, colour: str, shape: str) -> tuple[int, int]:
    """Token positions (noun, colour word) of "colour shape" in `caption` (start token = 0).

    Raises ValueError when the caption does not name that object by "colour shape".
    """
    words = caption.split()
    bare = [w.rstrip(",") for w in words]
    for i in range(len(bare) - 1):
        if bare[i] == colour and bare[i + 1] == shape:
            at = 1 + len(tokenizer.tokenize(" ".join(words[:i])))  # BPE of a word prefix
            return at + len(tokenizer.tokenize(words[i])), at
    raise ValueError(f"{caption!r} names no {colour} {shape}.")


@dataclass
class Localisation:
    """Scores of held-out ShapesWorld images, per layer, head, timestep, word kind, object.

    `per_head[measure]`: (layers, heads, T, kinds, N); `per_layer` the same for the
    head-averaged layer maps, (layers, T, kinds, N); `aggregates[name][measure]` for
    layer averages, (T, kinds, N): "default" (what `attention.maps` holds) and sdviz's
    earlier "all layers, bilinear (old)". N counts the objects.
    """

    layers: list[str]
    timesteps: list[int]
    n_images: int
    per_head: dict[str, torch.Tensor]
    per_layer: dict[str, torch.Tensor]
    aggregates: dict[str, dict[str, torch.Tensor]]
    shares: dict[str, float] = field(default_factory=dict)  # start / words / end+padding
    default_layers: list[str] = field(default_factory=list)  # those "default" averages
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer -> its maps' (h, w)
    config: LocalisationConfig = LocalisationConfig()

    def rate(self, where: Mapping[str, torch.Tensor], measure: str) -> torch.Tensor:
        """Mean over objects (NaN-aware): (..., kinds)."""
        return where[measure].nanmean(-1)


class NamedObject(NamedTuple):
    """One object of a ShapesWorld picture that its caption names unambiguously."""

    noun: int  # token position of its shape word in the caption
    colour: int  # token position of its colour word
    own: torch.Tensor  # (H, W) bool: its pixels
    other: torch.Tensor  # (H, W) bool: the other objects' pixels


def named_objects(
    world: ShapesWorld, tokenizer: Any, count: int, first: int = 0
) -> list[tuple[Any, list[NamedObject]]]:
    """(sample, its NamedObjects) for samples `first` … `first + count - 1` of `world`:
    what a localisation score compares each word's map with.

    Objects named the same as another object in the picture are skipped (their words
    cannot say which one they mean); "other" is the union of the other objects' masks.
    """
    out = []
    for i in range(first, first + count):
        s = world[i]
        names = [(o.colour, o.shape) for o in s.objects]
        items = []
        for j, o in enumerate(s.objects):
            if names.count((o.colour, o.shape)) > 1:
                continue
            noun, colour = word_positions(tokenizer, s.caption, o.colour, o.shape)
            others = [p.mask for k, p in enumerate(s.objects) if k != j]
            other = np.any(others, axis=0) if others else np.zeros_like(o.mask)
            items.append(
                NamedObject(noun, colour, torch.from_numpy(o.mask), torch.from_numpy(other))
            )
        out.append((s, items))
    return out


@torch.no_grad()
def localisation(
    pipe: Any,
    count: int = 16,
    timesteps: Sequence[int] = (901, 701, 501, 301, 101),
    *,
    first: int = 0,
    seed: int = 0,
    config: LocalisationConfig = LocalisationConfig(),
    compare: Mapping[str, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]] | None = None,
) -> Localisation:
    """Score each noun's and colour word's map on `count` held-out ShapesWorld images.

    Every image is noised to each of `timesteps` (one noise draw per image, from `seed`)
    and denoised once by the UNet with its caption (no guidance: the text branch only).
    `compare` adds aggregates of your own: name -> function from the per-layer maps
    {layer: (N, kinds, heads, h_l, w_l)} to maps (N, kinds, h, w), scored alike.
    """
    size = native_size(pipe)
    world = ShapesWorld(size=size, split="test", seed=seed)
    samples = named_objects(world, pipe.tokenizer, count, first)
    param = next(pipe.unet.parameters())
    gen = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(np.stack([s.image for s, _ in samples])).permute(0, 3, 1, 2)
    z0 = encode(pipe, images)  # (n, c, h, w)
    noise = torch.randn(z0.shape, generator=gen)
    ids = padded_ids(pipe.tokenizer, [s.caption for s, _ in samples]).to(param.device)
    emb = pipe.text_encoder(ids)[0].to(param.dtype)  # (n, L, d)
    n_tokens = [len(pipe.tokenizer(s.caption).input_ids) for s, _ in samples]
    own = torch.stack([it.own for _, items in samples for it in items])  # (N, H, W)
    other = torch.stack([it.other for _, items in samples for it in items])
    owner = [(k, it.noun, it.colour) for k, (_, items) in enumerate(samples) for it in items]
    per_t: list[dict[str, torch.Tensor]] = []  # layer -> (N, kinds, heads, h_l, w_l)
    shares = []
    with capture_attention(pipe.unet, layers="*", heads=True) as cap:
        names = cap.names
        for t in timesteps:
            x = add_noise(z0, int(t), pipe.scheduler, noise=noise)  # (n, c, h, w)
            calls = []
            for k in range(len(samples)):
                cap.begin(*x.shape[-2:], 0)
                pipe.unet(
                    x[k : k + 1].to(param.device, param.dtype),
                    torch.tensor([int(t)], device=param.device),
                    encoder_hidden_states=emb[k : k + 1],
                )
                mean, detail, _ = cap.end()  # (L, h, w); layer -> (heads, L, h_l, w_l)
                calls.append({**detail, DEFAULT: mean[None]})  # the default, as one "head"
                shares.append(token_shares(mean, n_tokens[k]))
            per_t.append(
                {
                    n: torch.stack(
                        [
                            calls[k][n][:, [noun, colour]].transpose(0, 1)
                            for k, noun, colour in owner
                        ]
                    ).float()
                    for n in [*names, DEFAULT]
                }
            )
    rec = _score(per_t, names, list(timesteps), len(samples), own, other, pipe, shares, config)
    for label, fn in (compare or {}).items():
        per = [
            scores(fn({n: d[n] for n in names}).transpose(0, 1), own, other, config) for d in per_t
        ]
        rec.aggregates[label] = {m: torch.stack([p[m] for p in per]) for m in MEASURES}
    return rec


def _score(per_t, names, timesteps, n_images, own, other, pipe, shares, config) -> Localisation:
    latent = max((tuple(m.shape[-2:]) for m in per_t[0].values()), key=lambda s: s[0] * s[1])
    per_head: dict[str, list] = {m: [] for m in MEASURES}
    per_layer: dict[str, list] = {m: [] for m in MEASURES}
    for n in names:
        hs = [scores(d[n].permute(2, 1, 0, 3, 4), own, other, config) for d in per_t]
        ls = [scores(d[n].mean(2).transpose(0, 1), own, other, config) for d in per_t]
        for m in MEASURES:
            per_head[m].append(torch.stack([h[m] for h in hs], 1))  # (heads, T, kinds, N)
            per_layer[m].append(torch.stack([s[m] for s in ls]))  # (T, kinds, N)
    # sdviz's aggregate before 2026-12-07: every text-attention layer, resized bilinearly
    old = [
        scores(mean_of_layers(d, names, latent, head_dim=2).transpose(0, 1), own, other, config)
        for d in per_t
    ]
    new = [scores(d[DEFAULT][:, :, 0].transpose(0, 1), own, other, config) for d in per_t]
    aggregates = {
        label: {m: torch.stack([p[m] for p in per]) for m in MEASURES}
        for label, per in (("all layers, bilinear (old)", old), ("default", new))
    }
    mean_shares = {k: float(np.mean([s[k] for s in shares])) for k in shares[0]}
    return Localisation(
        layers=list(names),
        timesteps=timesteps,
        n_images=n_images,
        per_head={m: torch.stack(v) for m, v in per_head.items()},
        per_layer={m: torch.stack(v) for m, v in per_layer.items()},
        aggregates=aggregates,
        shares=mean_shares,
        config=config,
        default_layers=default_aggregate_layers(pipe.unet),
        sizes={n: tuple(per_t[0][n].shape[-2:]) for n in names},
    )
