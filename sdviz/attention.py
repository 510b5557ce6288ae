"""Cross-attention capture: which latent pixels read from which prompt token.

In Stable Diffusion's UNet every transformer block has a cross-attention layer
(`attn2`): its queries come from the image features, its keys and values from the
CLIP token embeddings (Rombach et al. 2022, "High-Resolution Image Synthesis with
Latent Diffusion Models", Sec. 3.3). The softmax row of one latent pixel, over the
L prompt tokens, says how much that pixel reads from each token; reshaped per token
these rows are the cross-attention maps of Prompt-to-Prompt (Hertz et al. 2022) and
DAAM (Tang et al. 2023).

`AttentionCapture` wraps the processors of the text-attention layers only (`attn2`,
and `attn1` in `only_cross_attention` blocks), each through its own public
`Attention.set_processor`, and puts the previous processors back by identity. The wrapped processor still computes the layer's output (the default one,
PyTorch's fused attention, never exposes its probabilities), so traced images are
bit-for-bit untraced ones; forward hooks on `to_q`/`to_k` pass the projections on and
softmax(q k^T / sqrt(d)) is recomputed for the recorded batch item only. Maps are
aggregated while they are computed, so memory grows with steps x tokens x latent
size and never with heads x layers:

    q, k of the text-conditioned item -> probs (heads, hw_l, L) -> mean over heads
    -> (L, h_l, w_l) -> bicubic resize to the latent (h, w) -> mean over the layers of
    `default_aggregate_layers` -> clamp at 0, each position's row rescaled to sum to 1

The layer set and the bicubic resize are measured choices (benchmarks/
attention_localisation.py): on sdviz-mini they make the words' maps find their objects
at least as often as DAAM's maps (Tang et al. 2023), which average `attn2` layers resized
bicubically to 96x96; bilinear resizing and the mid block and `attn1` layers blurred the
colour words' maps. Per-layer (and per-head) maps are kept only for the layers a names
filter selects.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .attention_hooks import ProcessorSwap

FLOAT_BYTES = 4  # maps are kept in float32
PROJECTIONS = ("to_q", "to_k")  # watched: the probabilities are recomputed from them


def cross_attention_layers(unet: torch.nn.Module) -> list[str]:
    """Module paths of the UNet's cross-attention layers, in call order of the config."""
    names = []
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        module = unet.get_submodule(name)
        if getattr(module, "is_cross_attention", name.endswith("attn2")):
            names.append(name)
    return names


RESIZE = "bicubic"  # how the aggregate brings a coarser layer's maps to the latent's size


def default_aggregate_layers(unet: torch.nn.Module) -> list[str]:
    """The layers `attention.maps` averages: `attn2` layers outside the mid block, less the
    encoder's (down path's) layers coarser than the latent.

    Measured on sdviz-mini (benchmarks/attention_localisation.py, results of 2026-12-07):
    the mid block (4x4 maps there), the `attn1` layers that `only_cross_attention` blocks
    turn into cross-attention and the encoder's 8x8 layer are the text-attention layers
    whose maps find their words' objects least often; leaving them out is what lets the
    default beat DAAM (Tang et al. 2023), which leaves out the first two. Every
    text-attention layer when none matches (a denoiser that names its layers otherwise).
    """
    names = cross_attention_layers(unet)
    halvings = layer_halvings(unet, names)
    chosen = [
        n
        for n in names
        if n.endswith("attn2")
        and not n.startswith("mid_block")
        and not (n.startswith("down_blocks") and halvings[n] > 0)
    ]
    return chosen or names


def resize_maps(maps: torch.Tensor, size: Sequence[int], mode: str = RESIZE) -> torch.Tensor:
    """(..., h, w) maps -> (..., *size), bilinear or bicubic (PyTorch's, a = -0.75)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    x = F.interpolate(
        maps.reshape(-1, 1, *maps.shape[-2:]), size=tuple(size), mode=mode, align_corners=False
    )
    return x.reshape(*lead, *size)


def mean_of_layers(
    maps: Mapping[str, torch.Tensor],
    names: Sequence[str],
    size: Sequence[int],
    head_dim: int | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """The plain mean of layers' maps (..., h_l, w_l), each resized to `size` (h, w).

    `head_dim`: a dimension of per-head maps to average first. Linear: works on any
    subset of tokens. `aggregate` adds what the default does on top.
    """
    total = None
    for name in names:
        m = maps[name].float()
        m = resize_maps(m.mean(head_dim) if head_dim is not None else m, size, mode)
        total = m if total is None else total + m
    if total is None:
        raise ValueError("mean_of_layers needs at least one layer name.")
    return total / len(names)


def per_pixel_shares(mean: torch.Tensor, token_dim: int = -3) -> torch.Tensor:
    """Clamp at 0 and rescale so that each position's weights over the tokens sum to 1.

    Bicubic resizing overshoots next to a sharp peak (weights a hair below 0); this
    restores what a softmax row is: non-negative shares of one position's attention.
    """
    m = mean.clamp_min(0)
    return m / m.sum(token_dim, keepdim=True).clamp_min(1e-12)


def aggregate(
    maps: Mapping[str, torch.Tensor],
    names: Sequence[str],
    size: Sequence[int],
    head_dim: int | None = None,
) -> torch.Tensor:
    """What `attention.maps` holds, from per-layer maps (..., L, h_l, w_l) of all L tokens:
    coarser layers resized bicubically to `size`, averaged, rows made shares again."""
    return per_pixel_shares(mean_of_layers(maps, names, size, head_dim, RESIZE))


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
        first = names[0].split(".")[0] if names else "up_blocks"
        raise ValueError(
            f"attention_layers={pattern!r} matches none of the denoiser's {len(names)} "
            f"text-attention layers:\n  {shown}\nUse a substring of these names such as "
            f"{first!r}, or a glob such as '{first}.1*'."
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
        aggregate: Sequence[str] | None = None,
    ):
        self.names = cross_attention_layers(unet)
        chosen = default_aggregate_layers(unet) if aggregate is None else list(aggregate)
        unknown = [n for n in chosen if n not in self.names]
        if unknown or not chosen:
            raise ValueError(
                f"aggregate must name some of the UNet's text-attention layers; {unknown or chosen}"
                f" are not among {self.names}."
            )
        self.aggregate = set(chosen)
        self.detail = set(select_layers(self.names, layers if layers is not None else []))
        if heads and layers is None:
            self.detail = set(self.names)  # per-head maps of every layer: the budget decides
        self.keep_heads = heads
        self.halvings = layer_halvings(unet, self.names)
        self.n_heads = {n: int(unet.get_submodule(n).heads) for n in self.names}
        # wraps each layer's processor and stashes its to_q / to_k outputs, undoably
        self._swap = ProcessorSwap(
            self.names, lambda name, inner: RecordingAttnProcessor(name, self, inner), PROJECTIONS
        )
        self._sizes: dict[tuple, tuple[int, int]] = {}
        self._reset()

    def _reset(self) -> None:
        self._hw: tuple[int, int] | None = None
        self._cond = 0
        self._pending: list[tuple] = []  # (name, q (hw_l, C), k (L, C), heads, scale, mask)
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
        """Wrap the attn2 processors and watch their query/key projections.

        The original processor still computes each layer's output, so images are
        bit-for-bit those of an untraced run; forward hooks on `to_q`/`to_k` hand
        the projections to `record`, which recomputes the softmax for one item only.
        """
        # each text-attention layer's own public `set_processor`: cheaper than rebuilding
        # the whole processor dict with `unet.set_attn_processor`, and it touches no other
        self._swap.install(unet)

    def restore(self, unet: torch.nn.Module) -> None:
        """Remove the hooks and put every original processor back, checked by identity."""
        self._swap.restore(unet)

    # -- per UNet call ------------------------------------------------------
    def begin(self, h: int, w: int, cond_index: int) -> None:
        self._reset()
        self._hw, self._cond = (h, w), cond_index

    def end(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], list[str]]:
        """(mean map (L, h, w) or None, per-layer detail, layer names) of this call.

        Layers of the same shape are computed together (one matmul and one softmax per
        resolution), and, bilinear resizing being linear, summed before one resize.
        """
        groups: dict[tuple, list[tuple]] = {}
        for item in self._pending:
            _, q, k, heads, scale, mask = item
            groups.setdefault((q.shape, k.shape, heads, scale, mask is None), []).append(item)
        total, averaged = None, 0
        for items in groups.values():
            probs = self._softmax(items)  # (n, heads, hw_l, L)
            n, heads, n_pixels, n_tokens = probs.shape
            hl, wl = self._layer_hw(items[0][0], n_pixels)
            for j, item in enumerate(items):
                if item[0] in self.detail:
                    per_token = probs[j].transpose(1, 2).reshape(heads, n_tokens, hl, wl)
                    self._detail[item[0]] = (
                        per_token.clone() if self.keep_heads else per_token.mean(0)
                    )
            chosen = [j for j, item in enumerate(items) if item[0] in self.aggregate]
            if not chosen:
                continue
            averaged += len(chosen)
            m = probs[chosen].mean(1).sum(0).T.reshape(n_tokens, hl, wl)  # summed over layers
            m = resize_maps(m, self._hw)  # (L, h, w): resizing is linear, so sum first
            total = m if total is None else total + m
        mean = None if total is None else per_pixel_shares(total / averaged)
        out = (mean, self._detail, self._layers)
        self._reset()
        return out

    @staticmethod
    def _softmax(items: list[tuple]) -> torch.Tensor:
        """softmax(q k^T * scale) for layers of one shape: (n, heads, hw_l, L)."""
        _, q, k, heads, scale, mask = items[0]
        n, (n_pixels, channels), n_tokens = len(items), q.shape, k.shape[0]
        d = channels // heads
        qs = torch.stack([it[1] for it in items]).reshape(n, n_pixels, heads, d)
        ks = torch.stack([it[2] for it in items]).reshape(n, n_tokens, heads, d)
        qs = qs.transpose(1, 2).reshape(n * heads, n_pixels, d).float()  # (n*heads, hw, d)
        ks = ks.permute(0, 2, 3, 1).reshape(n * heads, d, n_tokens).float()  # (n*heads, d, L)
        scores = torch.bmm(qs, ks).mul_(scale)  # (n*heads, hw, L)
        if mask is not None:
            scores += torch.cat([it[5] for it in items]).float()
        return scores.softmax(-1).view(n, heads, n_pixels, n_tokens)

    def _layer_hw(self, name: str, n_pixels: int) -> tuple[int, int]:
        key = (name, n_pixels, self._hw)
        if key in self._sizes:
            return self._sizes[key]
        h, w = self._hw
        for k in [self.halvings.get(name, 0)] + list(range(8)):
            hl, wl = _halve(h, k), _halve(w, k)
            if hl * wl == n_pixels:
                self._sizes[key] = (hl, wl)
                return hl, wl
        raise RuntimeError(
            f"cross-attention layer {name} has {n_pixels} query pixels, which is no "
            f"power-of-two reduction of the {h}x{w} latent"
        )

    def record(self, name: str, attn, attention_mask: torch.Tensor | None) -> None:
        """Keep the recorded item's query and key projections; `end` does the softmax."""
        q = self._swap.stash.pop((name, "to_q"), None)  # (batch, hw_l, heads*d)
        k = self._swap.stash.pop((name, "to_k"), None)  # (batch, L, heads*d)
        if self._hw is None or q is None or k is None:  # UNet called outside a traced step
            return
        self._layers.append(name)
        if name not in self.aggregate and name not in self.detail:
            return  # attends to the text, but nobody asked for its maps: no softmax
        heads, i = attn.heads, self._cond
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[1], q.shape[0])
            mask = mask[i * heads : (i + 1) * heads]  # (heads, 1 or hw, L)
        self._pending.append((name, q[i], k[i], heads, float(attn.scale), mask))


@contextmanager
def capture_attention(
    unet: torch.nn.Module,
    layers: str | Sequence[str] | None = None,
    heads: bool = False,
    aggregate: Sequence[str] | None = None,
) -> Iterator[AttentionCapture]:
    """`AttentionCapture` installed on `unet` for a with-block, restored on exit.

    For probes that call the UNet themselves: `cap.begin(h, w, item)` before a call,
    `cap.end()` after it gives (mean map, per-layer maps, layer names).
    """
    cap = AttentionCapture(unet, layers, heads, aggregate)
    cap.install(unet)
    try:
        yield cap
    finally:
        cap.restore(unet)


class RecordingAttnProcessor:
    """Runs a layer's own attention processor, then records its probabilities.

    The output is exactly the wrapped processor's (PyTorch's fused attention by
    default, which never exposes the probabilities); the probabilities of the
    recorded batch item are recomputed from the same query and key projections.
    """

    def __init__(self, name: str, capture: AttentionCapture, inner):
        self.name = name
        self.capture = capture
        self.inner = inner

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        out = self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )
        self.capture.record(self.name, attn, attention_mask)
        return out
