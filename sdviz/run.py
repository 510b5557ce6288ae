"""`Run`: the record of one traced Stable Diffusion generation.

A read-only mapping from names (diffusers module paths and stage prefixes such as
"text.", "scheduler.", "step.", "unet.", "attention.", "vae.") to detached CPU
float32 tensors and plain values; the full key list is in sdviz.tracing. It holds
no reference to the pipeline: decoding latents to images (Rombach et al. 2022's VAE
decoder D) takes the pipeline or its VAE as an argument, and the cheap preview is a
linear map from the latent channels to RGB, least-squares fitted on this run's
final latents and image (the latent space of SD is close to a linear colour
space at low resolution).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from .autoencoder import decode

_WHICH = {
    "pred_original_sample": "unet.pred_original_sample",
    "latents": "unet.latents",
}
_SPECIAL = {"<|startoftext|>": "<start>", "<|endoftext|>": "<end>"}


def readable_token(token: str) -> str:
    """'red</w>' -> 'red', '<|startoftext|>' -> '<start>'."""
    return _SPECIAL.get(token, token.replace("</w>", ""))


def fit_preview(latents: torch.Tensor, image: torch.Tensor) -> torch.Tensor | None:
    """Least-squares (c+1, 3) map from latent channels (+bias) to the pooled image.

    None when either holds inf/NaN (an fp16 overflow, say): there is nothing to fit.
    """
    if not (torch.isfinite(latents).all() and torch.isfinite(image).all()):
        return None
    c, h, w = latents.shape
    pooled = F.adaptive_avg_pool2d(image[None], (h, w))[0]  # (3, h, w)
    x = torch.cat([latents.reshape(c, -1), torch.ones(1, h * w)]).T  # (hw, c+1)
    y = pooled.reshape(3, -1).T  # (hw, 3)
    return torch.linalg.lstsq(x.double(), y.double()).solution.float()


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list | dict):
        return f"{type(value).__name__}[{len(value)}]"
    return repr(value)


class Run(Mapping[str, Any]):
    """One traced generation: `run["unet.latents"]`, `run.decode(pipe)`, `run.preview()`."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)
        self._decoded: dict[tuple[str, int], torch.Tensor] = {}

    # -- mapping ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(
                f"{key!r} is not in this run. Recorded keys: {', '.join(self._data)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        width = max((len(k) for k in self._data), default=0)
        lines = [f"  {k:<{width}}  {_describe(v)}" for k, v in self._data.items()]
        head = f"Run({self._data.get('prompt', '')!r}, {self.n_steps} steps, {len(self)} keys)"
        return "\n".join([head] + lines)

    # -- convenience --------------------------------------------------------
    @property
    def n_steps(self) -> int:
        t = self._data.get("step.t")
        return 0 if t is None else int(t.shape[0])

    @property
    def attention_layers(self) -> list[str]:
        """Keys of the per-layer cross-attention maps recorded (opt-in detail)."""
        return [k for k in self._data if k in self._data.get("attention.layers", [])]

    @property
    def words(self) -> list[str]:
        """Readable tokens of the prompt, BOS and EOS included (index = map token)."""
        tokens = self._data.get("text.tokens", [])
        return [readable_token(t) for t in tokens[: self._data.get("text.n_tokens", 0)]]

    def token_index(self, word: str) -> int:
        """Index of the first token of `word` in the prompt (words split into pieces too)."""
        target = word.strip().lower()
        words = [w.lower() for w in self.words]
        for i in range(len(words)):
            joined = ""
            for piece in words[i:]:
                joined += piece
                if joined == target:
                    return i
                if not target.startswith(joined):
                    break
        raise ValueError(f"{word!r} is not a token of this prompt; its tokens are {self.words}.")

    # -- images -------------------------------------------------------------
    def _latents(self, which: str) -> tuple[str, torch.Tensor]:
        name = {v: k for k, v in _WHICH.items()}.get(which, which)  # full keys work too
        if name not in _WHICH:
            raise ValueError(f"which must be one of {sorted(_WHICH)}, got {which!r}.")
        return name, self[_WHICH[name]]

    @staticmethod
    def _indices(steps: int | Sequence[int] | None, n: int) -> list[int]:
        if steps is None:
            return list(range(n))
        try:
            items = [operator.index(steps)]  # one int (numpy and torch ints too)
        except TypeError:
            items = list(steps)
        out = []
        for s in items:
            try:
                s = operator.index(s)
            except TypeError:
                raise TypeError(f"steps must be ints (or None for all), got {s!r}.") from None
            if not -n <= s < n:
                raise IndexError(f"step {s} is out of range for {n} recorded entries.")
            out.append(s % n)
        return out

    def decode(
        self,
        pipe_or_vae: Any,
        which: str = "pred_original_sample",
        steps: int | Sequence[int] | None = None,
        batch_size: int = 4,
    ) -> torch.Tensor:
        """Decode recorded latents with the VAE: (n, 3, H, W) in [0, 1], cached per step."""
        name, latents = self._latents(which)
        idx = self._indices(steps, latents.shape[0])
        holder = pipe_or_vae if hasattr(pipe_or_vae, "vae") else SimpleNamespace(vae=pipe_or_vae)
        todo = [i for i in dict.fromkeys(idx) if (name, i) not in self._decoded]
        if todo:
            images = decode(holder, latents[todo], batch_size=batch_size)  # (n, 3, H, W)
            for i, image in zip(todo, images, strict=True):
                self._decoded[(name, i)] = image
        return torch.stack([self._decoded[(name, i)] for i in idx])

    def preview(
        self, which: str = "pred_original_sample", steps: int | Sequence[int] | None = None
    ) -> torch.Tensor:
        """Cheap linear latent->RGB preview at latent resolution: (n, 3, h, w) in [0, 1]."""
        if "vae.preview_coefficients" not in self._data:
            raise ValueError(
                "this run has no decoded image to fit a preview on (was output_type='latent'?); "
                "use run.decode(pipe) instead."
            )
        _, latents = self._latents(which)
        coef = self._data["vae.preview_coefficients"]  # (c+1, 3)
        x = latents[self._indices(steps, latents.shape[0])]  # (n, c, h, w)
        rgb = torch.einsum("nchw,cd->ndhw", x, coef[:-1]) + coef[-1][None, :, None, None]
        return rgb.clamp(0, 1)


class Trace(Sequence[Run]):
    """The runs recorded inside one `sdviz.trace(...)` block, in call order."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    @property
    def last(self) -> Run:
        if not self.runs:
            raise IndexError(
                "this trace recorded no generation: call the pipeline inside the with-block, "
                "e.g. `with sdviz.trace(pipe) as tr: pipe('a red circle')`."
            )
        return self.runs[-1]

    def __getitem__(self, i):  # type: ignore[override]
        return self.runs[i]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __repr__(self) -> str:
        lines = [f"Trace({len(self.runs)} run{'s' if len(self.runs) != 1 else ''})"]
        for i, run in enumerate(self.runs):
            lines.append(f"  [{i}] {run.get('prompt', '')!r}: {run.n_steps} steps, {len(run)} keys")
        return "\n".join(lines)
