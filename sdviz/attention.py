"""Cross-attention capture: which latent pixels read from which prompt token.

In Stable Diffusion's UNet every transformer block has a cross-attention layer
(`attn2`): its queries come from the image features, its keys and values from the
CLIP token embeddings (Rombach et al. 2022, "High-Resolution Image Synthesis with
Latent Diffusion Models", Sec. 3.3). The softmax row of one latent pixel, over the
L prompt tokens, says how much that pixel reads from each token; reshaped per token
these rows are the cross-attention maps of Prompt-to-Prompt (Hertz et al. 2022) and
DAAM (Tang et al. 2023).

`AttentionCapture` puts a recording processor on the `attn2` layers only, through
diffusers' public `unet.set_attn_processor` (given a copy of the full dict, since
diffusers empties the dict it receives), and puts the previous processors back by
identity. Maps are aggregated while they are computed, so memory grows with
steps x tokens x latent size and never with heads x layers:

    probs (batch*heads, hw_l, L) -> text-conditioned item -> mean over heads
    -> (L, h_l, w_l) -> bilinear resize to the latent (h, w) -> mean over layers

Bilinear weights are non-negative and sum to 1, so each pixel's row still sums to 1
over the tokens after resizing. Per-layer (and per-head) maps are kept only for the
layers a names filter selects.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FLOAT_BYTES = 4  # maps are kept in float32


def cross_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Module paths of the UNet's cross-attention layers, in call order of the config."""
    names = []
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        module = unet.get_submodule(name)
        if getattr(module, "is_cross_attention", name.endswith("attn2")):
            names.append(name)
    return names


def select_layers(names: Sequence[str], pattern: str | Sequence[str] | None) -> list[str]:
    """Names matching a filter: a glob (with * ? [) or a substring, or a list of them."""
    if pattern is None:
        return []
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)

    def matches(name: str, p: str) -> bool:
        return fnmatch.fnmatchcase(name, p) if any(c in p for c in "*?[") else p in name

    return [n for n in names if any(matches(n, p) for p in patterns)]


def check_layer_filter(names: Sequence[str], pattern: str | Sequence[str] | None) -> None:
    """Raise a teaching error when a filter is malformed or selects no layer."""
    if pattern is None:
        return
    ok = isinstance(pattern, str) or (
        isinstance(pattern, Sequence) and all(isinstance(p, str) for p in pattern)
    )
    if not ok or (not isinstance(pattern, str) and len(pattern) == 0):
        raise TypeError(
            "attention_layers must be None, a name filter string (substring or glob such "
            f"as 'up_blocks.1*'), or a non-empty list of them; got {pattern!r}."
        )
    if not select_layers(names, pattern):
        shown = "\n  ".join(names[:8]) + ("\n  ..." if len(names) > 8 else "")
        raise ValueError(
            f"attention_layers={pattern!r} matches none of the UNet's {len(names)} "
            f"cross-attention layers:\n  {shown}\nUse a substring such as 'up_blocks' "
            "or a glob such as '*attentions.0*'."
        )


def _halve(n: int, times: int) -> int:
    for _ in range(times):
        n = (n + 1) // 2  # a stride-2 conv with padding 1 rounds up
    return n


def layer_halvings(unet: torch.nn.Module, names: Sequence[str]) -> dict[str, int]:
    """How many times each layer's feature map is halved relative to the latent.

    Read from the UNet's structure: down block i sits after the downsamplers of
    blocks 0..i-1, the mid block after all of them, and up block j mirrors it.
    Unknown paths get 0 (the latent size: an upper bound for memory estimates).
    """
    downs = [getattr(b, "downsamplers", None) is not None for b in unet.down_blocks]
    ups = [getattr(b, "upsamplers", None) is not None for b in unet.up_blocks]
    total = sum(downs)
    out = {}
    for name in names:
        parts = name.split(".")
        if parts[0] == "down_blocks":
            out[name] = sum(downs[: int(parts[1])])
        elif parts[0] == "mid_block":
            out[name] = total
        elif parts[0] == "up_blocks":
            out[name] = total - sum(ups[: int(parts[1])])
        else:
            out[name] = 0
    return out


class AttentionCapture:
    """Aggregates cross-attention probabilities during UNet calls (see module doc).

    The tracer calls `begin(h, w, cond_index)` before each UNet forward and `end()`
    after it; recording processors call `record(...)` in between.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        layers: str | Sequence[str] | None = None,
        heads: bool = False,
    ):
        self.names = cross_attention_layers(unet)
        self.detail = set(select_layers(self.names, layers if layers is not None else []))
        if heads and layers is None:
            self.detail = set(self.names)  # per-head maps of every layer: the budget decides
        self.keep_heads = heads
        self.halvings = layer_halvings(unet, self.names)
        self.n_heads = {n: int(unet.get_submodule(n).heads) for n in self.names}
        self._saved: dict | None = None
        self._reset()

    def _reset(self) -> None:
        self._hw: tuple[int, int] | None = None
        self._cond = 0
        self._sum: torch.Tensor | None = None
        self._layers: list[str] = []
        self._detail: dict[str, torch.Tensor] = {}

    # -- memory -------------------------------------------------------------
    def layer_size(self, name: str, h: int, w: int) -> tuple[int, int]:
        k = self.halvings.get(name, 0)
        return _halve(h, k), _halve(w, k)

    def estimate_bytes(self, steps: int, tokens: int, h: int, w: int) -> tuple[int, int]:
        """(aggregated maps, per-layer detail) bytes for a run of `steps` UNet calls."""
        agg = steps * tokens * h * w * FLOAT_BYTES
        detail = 0
        for n in self.detail:
            hl, wl = self.layer_size(n, h, w)
            detail += (self.n_heads[n] if self.keep_heads else 1) * tokens * hl * wl
        return agg, steps * detail * FLOAT_BYTES

    # -- install / restore --------------------------------------------------
    def install(self, unet: torch.nn.Module) -> None:
        """Replace the attn2 processors; `restore` puts the saved ones back."""
        self._saved = dict(unet.attn_processors)
        new = dict(self._saved)
        for name in self.names:
            new[name + ".processor"] = RecordingAttnProcessor(name, self)
        unet.set_attn_processor(dict(new))  # diffusers empties the dict it is given

    def restore(self, unet: torch.nn.Module) -> None:
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        unet.set_attn_processor(dict(saved))
        now = unet.attn_processors
        changed = [k for k in saved if now.get(k) is not saved[k]]
        if changed:
            raise RuntimeError(f"sdviz could not restore attention processors: {changed[:3]}")

    # -- per UNet call ------------------------------------------------------
    def begin(self, h: int, w: int, cond_index: int) -> None:
        self._reset()
        self._hw, self._cond = (h, w), cond_index

    def end(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], list[str]]:
        """(mean map (L, h, w) or None, per-layer detail, layer names) of this call."""
        mean = None if self._sum is None else self._sum / len(self._layers)
        out = (mean, self._detail, self._layers)
        self._reset()
        return out

    def _layer_hw(self, name: str, n_pixels: int) -> tuple[int, int]:
        h, w = self._hw
        for k in [self.halvings.get(name, 0)] + list(range(8)):
            hl, wl = _halve(h, k), _halve(w, k)
            if hl * wl == n_pixels:
                return hl, wl
        raise RuntimeError(
            f"cross-attention layer {name} has {n_pixels} query pixels, which is no "
            f"power-of-two reduction of the {h}x{w} latent"
        )

    def record(self, name: str, probs: torch.Tensor, batch: int, heads: int) -> None:
        """Take the probabilities (batch*heads, hw_l, L) of one layer call."""
        if self._hw is None:  # UNet called outside a traced step
            return
        n_pixels, n_tokens = probs.shape[1], probs.shape[2]
        hl, wl = self._layer_hw(name, n_pixels)
        p = probs.view(batch, heads, n_pixels, n_tokens)[self._cond].float()  # (heads, hw, L)
        per_token = p.transpose(1, 2).reshape(heads, n_tokens, hl, wl)  # (heads, L, hl, wl)
        mean = per_token.mean(0)  # (L, hl, wl)
        if name in self.detail:
            self._detail[name] = per_token.clone() if self.keep_heads else mean.clone()
        if (hl, wl) != self._hw:
            mean = F.interpolate(mean[None], size=self._hw, mode="bilinear", align_corners=False)[0]
        self._sum = mean if self._sum is None else self._sum + mean
        self._layers.append(name)


class RecordingAttnProcessor:
    """Attention with its probabilities in view, recorded into an `AttentionCapture`.

    The math is the classic one (softmax(QK^T * scale) V through the layer's own
    `get_attention_scores`), which gives the same images as PyTorch's fused
    scaled-dot-product attention up to float rounding.
    """

    def __init__(self, name: str, capture: AttentionCapture):
        self.name = name
        self.capture = capture

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape4 = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape4 is not None:  # (batch, channels, h, w) -> (batch, hw, channels)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch, n_keys = context.shape[0], context.shape[1]
        mask = attn.prepare_attention_mask(attention_mask, n_keys, batch)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (batch*heads, hw, d)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (batch*heads, L, d)
        value = attn.head_to_batch_dim(attn.to_v(context))  # (batch*heads, L, d)
        probs = attn.get_attention_scores(query, key, mask)  # (batch*heads, hw, L)
        self.capture.record(self.name, probs, batch, attn.heads)

        out = attn.batch_to_head_dim(torch.bmm(probs, value))  # (batch, hw, heads*d)
        out = attn.to_out[1](attn.to_out[0](out))  # projection, dropout
        if shape4 is not None:
            out = out.transpose(1, 2).reshape(shape4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
