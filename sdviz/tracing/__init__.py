"""Trace a diffusion generation: `with sdviz.trace(pipe) as tr: pipe(...)`.

Stable Diffusion (Rombach et al. 2022; SDXL, Podell et al. 2023; SD3, Esser et al. 2024;
and Flux.1, Black Forest Labs 2024, alike) turns a prompt into CLIP token embeddings,
denoises random latents x_T with a UNet guided by those embeddings under a scheduler
(DDPM, Ho et al. 2020; DDIM, Song et al. 2021; classifier-free guidance, Ho &
Salimans 2022), and decodes the final latents with a VAE. A trace records every stage
of each `pipe(...)` call made inside it into a `Run`, in three steps, one module each:

    hooks.py    hooks in: forward (pre-)hooks with removable handles on the text encoder,
                denoiser and VAE, attention processors on the text-attention layers
                (sdviz.attention); all removed on exit, also when the generation raises
    record.py   what the hooks saw -> a `Run`, named by the key table
    run.py      `Run` (a read-only mapping with accessors) and `Trace` (the runs)

`keys.py` is the key table: every key a Run can hold, its shape and meaning.
`generate` is the one-call form: it checks its inputs, traces one image and records
what only the caller knows (the prompt as typed, the seed, what was cut off).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..autoencoder import check_size, generation_size_multiple, native_size
from ..language import Texts, course_language
from ..pipeline import recommended
from ..text import check_prompt, truncated_tokens, truncation_notice, unknown_words
from .hooks import TraceBudgetError, Tracer
from .keys import KEYS, describe, expected_keys
from .run import Run, Trace

__all__ = [
    "trace",
    "generate",
    "Trace",
    "Run",
    "TraceBudgetError",
    "KEYS",
    "describe",
    "expected_keys",
    "vocabulary_notice",
]


def trace(
    pipe: Any,
    *,
    attention: str | None = "aggregate",
    attention_layers: str | Sequence[str] | None = None,
    attention_heads: bool = False,
    budget_mb: float = 1024.0,
    image_to_text: bool = False,
    text_share: bool = False,
) -> Tracer:
    """Record every stage of the `pipe(...)` calls made inside a with-block.

    `attention="aggregate"` keeps per-step per-token cross-attention maps averaged
    over heads and layers; `attention_layers` (substring, glob or list of them over
    diffusers module paths such as "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    keeps those layers' own maps too, per head with `attention_heads=True` (every
    layer's heads when no filter is given). A capture whose estimated memory exceeds
    `budget_mb` (MiB) raises `TraceBudgetError` at the first denoiser call, before any
    denoising. Each `pipe(...)` call becomes one `Run` of the returned `Trace`.

    Families: Stable Diffusion 1.x/2.x and SDXL (a UNet's cross-attention), SD3/3.5 and
    Flux.1 (a transformer's joint attention: sdviz.joint_attention; the maps are the image
    tokens' attention over the text tokens, softmax over the text only, on the
    transformer's patch grid). `image_to_text=True` also keeps, for SD3 and Flux, the
    other direction: where each text token's query reads in the image; `text_share=True`
    how much of each image token's whole attention (text and image keys) goes to the
    text (one more image x image score pass per layer: about half the attention's work).
    Guidance-distilled Flux runs no unconditional branch (`denoiser.guidance` holds the
    embedded scale); Flux's true CFG (true_cfg_scale > 1 with a negative prompt) is
    recorded as a split, its scale solved from the scheduler's own updates.

    Example:
        >>> with sdviz.trace(pipe, attention_layers="up_blocks.1") as tr:
        ...     pipe("a red circle", num_inference_steps=20)
        >>> tr.last["attention.maps"].shape      # (steps, tokens, h, w)

    Recorded: the first image of a batch (`num_images_per_prompt` > 1 or a list of
    prompts: item 0). Without a VAE decode (`output_type="latent"`, or a tiled decode)
    "denoiser.latents" has S entries and there is no "vae.image". The denoiser called
    outside a pipeline inside the block (a probe) is recorded as a run of its own. A raw
    trace sees token ids after truncation: "tokenizer.truncated" is None when the prompt
    filled every position (words may have been cut; `generate` knows which).
    """
    return Tracer(
        pipe,
        attention,
        attention_layers,
        attention_heads,
        budget_mb,
        image_to_text=image_to_text,
        text_share=text_share,
    )


# the notice generate warns with for a closed-vocabulary model ({words}: the unknown words,
# each written by "word" and joined by "separator")
T = Texts(
    __name__,
    {
        "unknown.one": (
            "this model knows only the words of its training captions; {words} is not among "
            "them, so the tokenizer spells them in letters the model never learned and they "
            "steer the image little or not at all.",
            "这个模型只认识它训练描述中的词；{words} 不在其中，所以分词器把它拆成模型从未"
            "学过的字母来拼写，它对图像几乎没有影响。",
        ),
        "unknown.many": (
            "this model knows only the words of its training captions; {words} are not among "
            "them, so the tokenizer spells them in letters the model never learned and they "
            "steer the image little or not at all.",
            "这个模型只认识它训练描述中的词；{words} 不在其中，所以分词器把它们拆成模型从未"
            "学过的字母来拼写，它们对图像几乎没有影响。",
        ),
        "word": ("{word!r}", "“{word}”"),
        "separator": (", ", "、"),
    },
)


def vocabulary_notice(pipe: Any, prompt: str, lang: str | None = None) -> str | None:
    """For a closed-vocabulary model (sdviz-mini), a sentence naming the words it never
    saw, in `lang` (default `sdviz.language.course_language`); None when it knows them all."""
    if not recommended(pipe).closed_vocabulary:
        return None
    unknown = unknown_words(pipe.tokenizer, prompt)
    if not unknown:
        return None
    lang = course_language(lang)
    words = T("separator", lang).join(T("word", lang, word=w) for w in unknown)
    return T("unknown.one" if len(unknown) == 1 else "unknown.many", lang, words=words)


# the libraries' own lines about a prompt that is too long: diffusers' list of cut words
# (raw BPE pieces) and transformers' "... will result in indexing errors" (wrong here: the
# pipeline truncates before the text encoder sees the ids)
_LIBRARY_TRUNCATION_LINES = ("was truncated because", "will result in indexing errors")


class _DropLibraryTruncationLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in _LIBRARY_TRUNCATION_LINES)


@contextmanager
def _one_truncation_message(notice: str | None) -> Iterator[None]:
    """Say a cut prompt once, readably: the libraries' own log lines are held back meanwhile."""
    if notice is None:
        yield
        return
    warnings.warn(notice, UserWarning, stacklevel=4)
    # diffusers and transformers log through the handler on their root loggers; child
    # loggers' records reach it by propagation, so a filter on those handlers (removed in
    # `finally`) is enough
    drop = _DropLibraryTruncationLines()
    handlers = [
        h for name in ("diffusers", "transformers") for h in logging.getLogger(name).handlers
    ]
    for h in handlers:
        h.addFilter(drop)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)


def _check_number(name: str, value: Any, low: float, hint: str, integer: bool = False) -> None:
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        raise ValueError(f"{name} must be {hint}, got {value!r}.")


def _check_inputs(
    pipe: Any,
    prompt: str,
    negative_prompt: str | None,
    steps: int | None,
    guidance_scale: float | None,
    seed: int | None,
    height: int | None,
    width: int | None,
) -> tuple[int, float, int, int]:
    """generate's inputs checked, and resolved from the model's recommendations."""
    check_prompt(prompt)
    if negative_prompt is not None:
        check_prompt(negative_prompt, "negative_prompt")
    advice = recommended(pipe)
    steps = advice.num_inference_steps if steps is None else steps
    guidance_scale = advice.guidance_scale if guidance_scale is None else guidance_scale
    _check_number("steps", steps, 1, "an int >= 1 (denoising steps)", integer=True)
    _check_number(
        "guidance_scale",
        guidance_scale,
        0,
        f"a number >= 0 (1 = no guidance; this model recommends {advice.guidance_scale:g})",
    )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None (random), got {seed!r}.")
    multiple = generation_size_multiple(pipe)
    default = native_size(pipe)
    why = "the VAE's downsampling and the pipeline's own check"
    height = check_size("height", default if height is None else height, multiple, why)
    width = check_size("width", default if width is None else width, multiple, why)
    return steps, guidance_scale, height, width


def generate(
    pipe: Any,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = 0,
    height: int | None = None,
    width: int | None = None,
    attention: str | None = "aggregate",
    attention_layers: str | Sequence[str] | None = None,
    attention_heads: bool = False,
    budget_mb: float = 1024.0,
    image_to_text: bool = False,
    text_share: bool = False,
    lang: str | None = None,
) -> Run:
    """Generate one image with `pipe` and return its traced `Run` (inputs checked first).

    `steps` and `guidance_scale` default to what the model recommends
    (`sdviz.pipeline.recommended`: its folder's sdviz.json; for models that say nothing,
    their pipeline class's defaults, 25 steps and 7.5 for SD 1.x/2.x; 2.0 for the embedded
    sdviz-mini, measured: its guidance.json). A prompt with words a closed-vocabulary model
    never saw (`vocabulary_notice`) or too long for the text encoder (`truncation_notice`)
    is said once as a UserWarning in `lang` (default `sdviz.language.course_language`: a
    lesson in lessons/zh/ warns in Chinese).
    """
    lang = course_language(lang)
    steps, guidance_scale, height, width = _check_inputs(
        pipe, prompt, negative_prompt, steps, guidance_scale, seed, height, width
    )
    notice = vocabulary_notice(pipe, prompt, lang)
    if notice:
        warnings.warn(notice, UserWarning, stacklevel=2)
    known = {
        "pipeline.prompt": prompt,
        "pipeline.negative_prompt": negative_prompt,
        "pipeline.seed": seed,
        "tokenizer.truncated": truncated_tokens(pipe.tokenizer, prompt),
    }
    tracer = Tracer(
        pipe,
        attention,
        attention_layers,
        attention_heads,
        budget_mb,
        known,
        image_to_text,
        text_share,
    )
    generator = None if seed is None else torch.Generator(pipe.device).manual_seed(seed)
    with _one_truncation_message(truncation_notice(pipe.tokenizer, prompt, lang)), tracer as tr:
        pipe(
            prompt,
            negative_prompt=negative_prompt,
            num_inference_steps=steps,
            guidance_scale=float(guidance_scale),
            height=height,
            width=width,
            generator=generator,
            output_type="pt",
            **recommended(pipe).call_arguments(),
        )
    return tr.last
