"""Joint-attention capture: which image tokens read from which prompt token in an MMDiT.

SD3's MMDiT (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis", Sec. 4) has no cross-attention: each block projects the image tokens
and the text tokens with their own weights and runs ONE attention over the joined
sequence, so every query, image or text, attends to every key, image and text. Flux
(Black Forest Labs 2024) has such double-stream blocks too, then single-stream blocks
where text and image tokens are one sequence through shared weights (rotary positions,
text first). The part of those attention rows that plays the role of SD's
cross-attention is the text->image part: image queries over text keys.

`JointAttentionCapture` records it per step, aggregated like sdviz.attention:

    q of the image tokens, k of the text tokens (after the layer's q/k norms and, in
    Flux, its rotary embedding) -> softmax over the TEXT keys only (heads, N_img, L)
    -> mean over heads -> (L, h_p, w_p) on the transformer's patch grid -> mean over
    layers

so each image token's row sums to 1 over the L text tokens, as in SD's maps. What the
full joint softmax (over text AND image keys) gives the text is kept beside it on
request (`text_share`, one more image x image score pass per layer): per image token
the fraction of its attention that lands on text keys (softmax over text+image = maps
x text_share on the text keys). With `image_to_text` the other direction is kept too: text queries over the image keys, softmax over the
image keys, (L, h_p, w_p).

Capture uses public extension points only: each layer's processor is wrapped through
its own `set_processor` (the wrapped processor still computes the layer's output, so
traced images are the untraced ones) and forward hooks on the q/k projections hand
their outputs over (sdviz.attention_hooks.ProcessorSwap); the layer's own `norm_q`/`norm_k` modules and diffusers'
`apply_rotary_emb` then rebuild the queries and keys the attention used. Everything is
put back, by identity, by `restore`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.embeddings import apply_rotary_emb

from .attention import RecordingAttnProcessor, select_layers
from .attention_hooks import ProcessorSwap

FLOAT_BYTES = 4  # maps are kept in float32
_PROJECTIONS = ("to_q", "to_k", "add_q_proj", "add_k_proj")
_CHUNK = 2**24  # image-image scores computed at once for the text share (64 MB in fp32)


def joint_attention_layers(transformer: torch.nn.Module) -> list[str]:
    """Module paths of the attention layers where image tokens meet text tokens.

    Joint layers (SD3's blocks, Flux's double-stream blocks: their own text projections
    `add_k_proj`) and Flux's single-stream layers (`single_transformer_blocks`);
    image-only self-attention (SD3.5's `attn2`) is left out.
    """
    names = []
    for key in transformer.attn_processors:
        name = key.removesuffix(".processor")
        module = transformer.get_submodule(name)
        if getattr(module, "add_k_proj", None) is not None or _is_single(name):
            names.append(name)
    return names


def _is_single(name: str) -> bool:
    return name.startswith("single_transformer_blocks.")


def _heads(q: torch.Tensor, attn) -> torch.Tensor:
    """(N, heads*d) -> (N, heads, d)."""
    return q.reshape(q.shape[0], attn.heads, -1)


def _norm(module, x: torch.Tensor) -> torch.Tensor:
    return x if module is None else module(x)


def joint_queries_keys(
    attn,
    projections: dict[str, torch.Tensor | None],
    item: int,
    n_text: int,
    rope=None,
    text_queries: bool = True,
    image_keys: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """(q_img, k_img, q_txt, k_txt), each (n, heads, d) float32, as the attention used them.

    `projections`: the outputs (batch, n, heads*d) of the layer's "to_q", "to_k" and, for
    a joint layer, "add_q_proj", "add_k_proj" (None in a single-stream layer, whose
    sequence is [text, image]); `item` the batch item; `n_text` the text tokens. The
    layer's own q/k norms are applied, then the rotary embedding of each token's position
    in the whole [text, image] sequence when `rope` (cos, sin) is given (Flux).
    `text_queries=False` skips the text tokens' queries, `image_keys=False` the image
    tokens' keys (None is returned for them).
    """
    q = _heads(projections["to_q"][item], attn)
    k = _heads(projections["to_k"][item], attn)
    q_t, k_t = projections.get("add_q_proj"), projections.get("add_k_proj")
    if q_t is not None and k_t is not None:  # joint: text has its own projections
        k_t = _norm(attn.norm_added_k, _heads(k_t[item], attn))
        k = torch.cat([k_t, _norm(attn.norm_k, k)]) if image_keys else k_t
        q = _norm(attn.norm_q, q)
        q_t = _norm(attn.norm_added_q, _heads(q_t[item], attn)) if text_queries else None
    else:  # single stream: one sequence, text first
        q_t = _norm(attn.norm_q, q[:n_text]) if text_queries else None
        q, k = _norm(attn.norm_q, q[n_text:]), _norm(attn.norm_k, k if image_keys else k[:n_text])
    if rope is not None:  # rotary positions over the whole [text, image] sequence
        cos, sin = rope
        q = apply_rotary_emb(q[None], (cos[n_text:], sin[n_text:]), sequence_dim=1)[0]
        k = apply_rotary_emb(k[None], (cos[: len(k)], sin[: len(k)]), sequence_dim=1)[0]
        if q_t is not None:
            q_t = apply_rotary_emb(q_t[None], (cos[:n_text], sin[:n_text]), sequence_dim=1)[0]
    k = k.float()
    k_img = k[n_text:] if image_keys else None
    return q.float(), k_img, None if q_t is None else q_t.float(), k[:n_text]


class JointAttentionCapture:
    """Aggregates joint attention's text->image part during transformer calls.

    The tracer calls `begin(h_p, w_p, cond_index, n_text)` before each transformer
    forward and `end()` after it; the wrapped processors call `record(...)` in between.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        layers: str | Sequence[str] | None = None,
        heads: bool = False,
        image_to_text: bool = False,
        text_share: bool = False,
    ):
        self.names = joint_attention_layers(transformer)
        if not self.names:
            raise ValueError(
                f"{type(transformer).__name__} has no joint-attention layer (no attention "
                "with text projections add_k_proj and no single-stream block): nothing to record."
            )
        self.detail = set(select_layers(self.names, layers if layers is not None else []))
        if heads and layers is None:
            self.detail = set(self.names)
        self.keep_heads = heads
        self.image_to_text = image_to_text
        self.text_share = text_share
        self.n_heads = {n: int(transformer.get_submodule(n).heads) for n in self.names}
        for name in self.names:
            if getattr(transformer.get_submodule(name), "fused_projections", False):
                raise ValueError(
                    f"{name} uses fused q/k/v projections, whose queries sdviz cannot see; "
                    "call transformer.unfuse_qkv_projections() before tracing."
                )
        self._swap = ProcessorSwap(
            self.names, lambda name, inner: JointRecordingProcessor(name, self, inner), _PROJECTIONS
        )
        self._reset()

    def _reset(self) -> None:
        self._hw: tuple[int, int] | None = None
        self._cond = 0
        self._n_text = 0
        self.rope = None  # Flux's (cos, sin) of the layer being recorded
        self._sum: torch.Tensor | None = None  # (L, N) text->image, summed over layers
        self._share: torch.Tensor | None = None  # (N,) share of attention on text
        self._i2t: torch.Tensor | None = None  # (L, N) image->text
        self._layers: list[str] = []
        self._detail: dict[str, torch.Tensor] = {}

    # -- memory -------------------------------------------------------------
    def estimate_bytes(self, steps: int, tokens: int, h: int, w: int) -> tuple[int, int]:
        """(aggregated maps, per-layer detail) bytes for `steps` calls on an h x w patch grid."""
        per_step = tokens * h * w + (h * w if self.text_share else 0)  # maps (+ text share)
        if self.image_to_text:
            per_step += tokens * h * w
        detail = sum((self.n_heads[n] if self.keep_heads else 1) for n in self.detail)
        return steps * per_step * FLOAT_BYTES, steps * detail * tokens * h * w * FLOAT_BYTES

    # -- install / restore --------------------------------------------------
    def install(self, transformer: torch.nn.Module) -> None:
        """Wrap each joint layer's processor and watch its q/k projections."""
        self._swap.install(transformer)

    def restore(self, transformer: torch.nn.Module) -> None:
        self._swap.restore(transformer)

    # -- per transformer call -----------------------------------------------
    def begin(self, h: int, w: int, cond_index: int, n_text: int) -> None:
        self._reset()
        self._hw, self._cond, self._n_text = (h, w), cond_index, n_text

    def end(self) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], list[str], dict]:
        """(mean map (L, h_p, w_p) or None, per-layer detail, layer names, extras).

        extras, each a mean over layers, when asked for: "text_share" (h_p, w_p),
        "image_to_text" (L, h_p, w_p).
        """
        extras: dict[str, torch.Tensor] = {}
        mean = None
        n = len(self._layers)
        if n:
            h, w = self._hw
            mean = (self._sum / n).reshape(-1, h, w)
            if self._share is not None:
                extras["text_share"] = (self._share / n).reshape(h, w)
            if self._i2t is not None:
                extras["image_to_text"] = (self._i2t / n).reshape(-1, h, w)
        out = (mean, self._detail, self._layers, extras)
        self._reset()
        return out

    def _queries_keys(self, name: str, attn, rope) -> tuple[torch.Tensor, ...] | None:
        stash = {p: self._swap.stash.pop((name, p), None) for p in _PROJECTIONS}
        if self._hw is None or stash["to_q"] is None or stash["to_k"] is None:
            return None  # called outside a traced step
        joint = stash["add_q_proj"] is not None and stash["add_k_proj"] is not None
        if not joint and not _is_single(name):
            return None
        return joint_queries_keys(
            attn,
            stash,
            self._cond,
            self._n_text,
            rope,
            text_queries=self.image_to_text,
            image_keys=self.image_to_text or self.text_share,
        )

    def record(self, name: str, attn, attention_mask: torch.Tensor | None = None) -> None:
        """Softmax of the image queries over the text keys (and the text share) of one layer.

        SD3's and Flux's pipelines pass no attention mask; the rotary embedding of this
        call is `self.rope` (set by the processor).
        """
        parts = self._queries_keys(name, attn, self.rope)
        if parts is None:
            return
        q_img, k_img, q_txt, k_txt = (None if p is None else p.transpose(0, 1) for p in parts)
        scale = getattr(attn, "scale", None) or q_img.shape[-1] ** -0.5
        scores = torch.bmm(q_img, k_txt.transpose(1, 2)).mul_(scale)  # (heads, N, L)
        probs = scores.softmax(-1)
        m = probs.mean(0).T  # (L, N)
        self._sum = m if self._sum is None else self._sum + m
        if self.text_share:  # the text's part of the full softmax over text and image keys
            lse_image = _image_logsumexp(q_img, k_img, scale)  # (heads, N)
            share = torch.sigmoid(scores.logsumexp(-1) - lse_image).mean(0)  # (N,)
            self._share = share if self._share is None else self._share + share
        if self.image_to_text:
            back = torch.bmm(q_txt, k_img.transpose(1, 2)).mul_(scale).softmax(-1).mean(0)
            self._i2t = back if self._i2t is None else self._i2t + back  # (L, N)
        if name in self.detail:
            h, w = self._hw
            per_head = probs.transpose(1, 2).reshape(probs.shape[0], -1, h, w)
            self._detail[name] = per_head.clone() if self.keep_heads else per_head.mean(0)
        self._layers.append(name)


def _image_logsumexp(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """logsumexp over the image keys of each image query: (heads, N), N x N scores in chunks
    of at most `_CHUNK` values (a 64x64 grid's 4096 x 4096 per head is 64 MB)."""
    heads, n, _ = q.shape
    per = max(1, _CHUNK // (n * n))
    return torch.cat(
        [
            torch.bmm(q[i : i + per], k[i : i + per].transpose(1, 2)).mul_(scale).logsumexp(-1)
            for i in range(0, heads, per)
        ]
    )


class JointRecordingProcessor(RecordingAttnProcessor):
    """Runs a joint layer's own processor, then records its text->image probabilities.

    As sdviz.attention's, plus Flux's rotary embedding (`image_rotary_emb`, which
    FluxAttention hands over positionally), passed on and kept for the recording.
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb=None,
        **kwargs,
    ):
        if image_rotary_emb is not None:
            kwargs["image_rotary_emb"] = image_rotary_emb
        self.capture.rope = image_rotary_emb
        return super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs
        )
