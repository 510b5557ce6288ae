"""`Run`: the record of one traced generation, and `Trace`, the runs of one with-block.

A read-only mapping from keys `<component>.<output>` (the key table: sdviz.tracing.keys)
to detached CPU float32 tensors and plain values, with accessors for the questions
lessons ask (`run.word_map("circle", step=-1)`, `run.words`). It holds
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

from ..autoencoder import decode
from ..language import Texts, course_language, pad, text_width
from ..text import readable_token
from .keys import LAYER_PREFIX, MEANINGS, describe

T = Texts(
    __name__,
    {
        "run": (
            "Run({prompt}, {steps} steps, {keys} keys)",
            "Run({prompt}，{steps} 步，{keys} 个键)",
        ),
        "trace_one": ("Trace({runs} run)", "Trace({runs} 次运行)"),
        "trace": ("Trace({runs} runs)", "Trace({runs} 次运行)"),
        "trace_run": (
            "  [{i}] {prompt}: {steps} steps, {keys} keys",
            "  [{i}] {prompt}：{steps} 步，{keys} 个键",
        ),
    },
)

_WHICH = {
    "pred_original_sample": "denoiser.pred_original_sample",
    "latents": "denoiser.latents",
}


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


def linear_preview(latents: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Latents (n, c, h, w) through a (c+1, 3) latent->RGB map (`fit_preview`): (n, 3, h, w)
    in [0, 1], one pixel per latent position."""
    rgb = torch.einsum("nchw,cd->ndhw", latents, coef[:-1]) + coef[-1][None, :, None, None]
    return rgb.clamp(0, 1)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list | dict):
        return f"{type(value).__name__}[{len(value)}]"
    return repr(value)


def _columns(*columns: Sequence[str]) -> list[str]:
    """Rows of left-aligned columns, two spaces apart, each padded by its screen width (a
    Chinese character takes two columns); the last column is not padded."""
    widths = [max(map(text_width, column), default=0) for column in columns[:-1]]
    rows = []
    for *cells, last in zip(*columns, strict=True):
        padded = [pad(c, w) for c, w in zip(cells, widths, strict=True)]
        rows.append("  " + "  ".join([*padded, last]))
    return rows


class Run(Mapping[str, Any]):
    """One traced generation: `run["denoiser.latents"]`, `run.decode(pipe)`, `run.preview()`."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)
        self._decoded: dict[tuple[str, int], torch.Tensor] = {}

    # -- mapping ------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            if LAYER_PREFIX + key in self._data:
                raise KeyError(
                    f"{key!r} is a layer; its maps are under {LAYER_PREFIX + key!r}."
                ) from None
            try:
                why = f" ({describe(key).meaning}; held by runs where: {describe(key).when})"
            except KeyError:
                why = " (no such key in sdviz.tracing.keys.KEYS)"
            raise KeyError(
                f"{key!r} is not in this run{why}. Recorded keys: {', '.join(self._data)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return self.describe_keys()

    def describe_keys(self, lang: str | None = None) -> str:
        """What `print(run)` shows: a line per key, its value's shape and its meaning, in
        `lang` (default: the course language, sdviz.language.course_language)."""
        lang = course_language(lang)
        keys = list(self._data)
        values = [_describe(v) for v in self._data.values()]
        head = T(
            "run",
            lang,
            prompt=repr(self._data.get("pipeline.prompt", "")),
            steps=self.n_steps,
            keys=len(self),
        )
        return "\n".join(
            [head] + _columns(keys, values, [MEANINGS(describe(k).name, lang) for k in keys])
        )

    # -- convenience --------------------------------------------------------
    @property
    def n_steps(self) -> int:
        t = self._data.get("scheduler.step_timestep")
        return 0 if t is None else int(t.shape[0])

    @property
    def attention_layers(self) -> list[str]:
        """Keys of the per-layer attention maps recorded (opt-in detail): "attention.<path>"."""
        layers = self._data.get("attention.layers", [])
        return [LAYER_PREFIX + name for name in layers if LAYER_PREFIX + name in self._data]

    def _map_tokenizer(self, tokenizer: str | None) -> tuple[str, int]:
        """(tokenizer, first map row) of the tokens a word is looked up in."""
        sequence = self._data.get("attention.text_sequence") or {"tokenizer": (0, 0)}
        name = next(iter(sequence)) if tokenizer is None else tokenizer
        if name not in sequence:
            raise KeyError(
                f"tokenizer {name!r} feeds no rows of the attention maps; this run's text "
                f"sequence is {sequence} (rows: (start, stop))."
            )
        return name, sequence[name][0]

    def words_of(self, tokenizer: str | None = None) -> list[str]:
        """Readable tokens of the prompt as `tokenizer` split it, start and end included.

        Default: the tokenizer whose tokens the attention maps' rows start with (CLIP;
        Flux: T5, `tokenizer_2`).
        """
        name, _ = self._map_tokenizer(tokenizer)
        tokens = self._data.get(f"{name}.tokens", [])
        n = self._data.get(f"{name}.n_tokens", 0)
        return [readable_token(t).removeprefix("\u2581") or "\u2581" for t in tokens[:n]]

    @property
    def words(self) -> list[str]:
        """Readable tokens of the prompt, BOS and EOS included (index = map token)."""
        return self.words_of()

    def token_index(self, word: str, tokenizer: str | None = None) -> int:
        """Map row of the first token of `word` (words split into pieces too).

        `tokenizer` picks whose tokens (SD3: "tokenizer" for CLIP's rows, "tokenizer_3"
        for T5's, which follow CLIP's); the default is the first of the maps' rows.
        """
        name, start = self._map_tokenizer(tokenizer)
        target = word.strip().lower()
        words = [w.lower() for w in self.words_of(name)]
        for i in range(len(words)):
            joined = ""
            for piece in words[i:]:
                joined += piece
                if joined == target:
                    return start + i
                if not target.startswith(joined):
                    break
        raise ValueError(
            f"{word!r} is not a token of this prompt; its tokens ({name}) are {words}."
        )

    def word_map(
        self,
        word: str | int,
        step: int | None = None,
        layer: str | None = None,
        tokenizer: str | None = None,
    ) -> torch.Tensor:
        """One token's attention map: (h, w) at `step`, or averaged over steps when None.

        `word` is a prompt word (its first token) or a token index; `layer` a recorded
        layer's module path (or its "attention.<path>" key) instead of the layer mean.
        Per-head layers are averaged over heads. `tokenizer` as in `token_index`.
        """
        if layer is None:
            maps = self["attention.maps"]  # (S, L, h, w)
        else:
            key = layer if layer.startswith(LAYER_PREFIX) else LAYER_PREFIX + layer
            if key not in self._data:
                raise KeyError(
                    f"layer {layer!r} was not recorded; recorded layers: {self.attention_layers}"
                    " (trace with attention_layers=... to keep a layer's own maps)."
                )
            maps = self[key]
            maps = maps.mean(1) if maps.ndim == 5 else maps  # (S, L, h_l, w_l)
        index = word if isinstance(word, int) else self.token_index(word, tokenizer)
        if not -maps.shape[1] <= index < maps.shape[1]:
            raise IndexError(f"token {index} is out of range for {maps.shape[1]} tokens.")
        if step is None:
            return maps[:, index].mean(0)
        return maps[self._indices(step, maps.shape[0])[0], index]

    def token_shares(self, step: int | None = None) -> torch.Tensor:
        """How the image's attention divides among the tokens: (L,), summing to 1.

        The mean over latent positions of `attention.maps` at `step` (averaged over steps
        when None): entry i is the share of attention that token i receives.
        """
        maps = self["attention.maps"]  # (S, L, h, w)
        shares = maps.mean((2, 3))  # (S, L)
        if step is None:
            return shares.mean(0)
        return shares[self._indices(step, shares.shape[0])[0]]

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
        return linear_preview(latents[self._indices(steps, latents.shape[0])], coef)


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
        lang = course_language()
        n = len(self.runs)
        lines = [T("trace_one" if n == 1 else "trace", lang, runs=n)]
        for i, run in enumerate(self.runs):
            prompt = repr(run.get("pipeline.prompt", ""))
            lines.append(T("trace_run", lang, i=i, prompt=prompt, steps=run.n_steps, keys=len(run)))
        return "\n".join(lines)
