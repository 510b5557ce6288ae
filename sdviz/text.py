"""Text probes: how a prompt becomes the vectors the UNet attends to.

Stable Diffusion (Rombach et al. 2022) conditions its UNet on the last hidden states of
a CLIP text encoder (Radford et al. 2021): the prompt is split into BPE tokens, wrapped
in start/end tokens, padded (or cut) to the tokenizer's `model_max_length` (77 for SD),
and encoded to one d-dimensional vector per position (768 for SD 1.x, 1024 for 2.x).

    tokenize(pipe, "a red circle")   # ids, token strings, count, what was cut off
    embed(pipe, "a red circle")      # (L, d) float32 on the CPU

How the tokenizer's pieces come about (byte-pair encoding, Sennrich et al. 2016):

    vocabulary(pipe.tokenizer)       # characters, learned merges, special tokens
    bpe_steps(pipe.tokenizer, "rectangle")   # the word's merges replayed, in rank order
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from .language import Texts, course_language

T = Texts(
    __name__,
    {
        "truncated": (
            "the prompt has {n} tokens, more than the text encoder's {limit} (start and "
            "end tokens included); the last {cut} were cut off and do not affect the "
            "image: {words!r}",
            "提示词有 {n} 个标记，超过了文本编码器的 {limit} 个（含起始标记和结束标记）；"
            "最后 {cut} 个标记被截断，不影响图像：“{words}”",
        ),
    },
)


def check_prompt(prompt: Any, name: str = "prompt") -> str:
    """Return `prompt` if it is a non-empty string; raise a teaching error otherwise."""
    if not isinstance(prompt, str):
        raise TypeError(
            f"{name} must be a string such as 'a red circle', got {type(prompt).__name__}."
        )
    if not prompt.strip():
        raise ValueError(f"{name} is empty; describe an image, e.g. 'a red circle'.")
    return prompt


def truncated_tokens(tokenizer: Any, prompt: str) -> list[str]:
    """The tokens of `prompt` that do not fit in ``tokenizer.model_max_length`` (the text
    encoder never sees them), as token strings; [] when the prompt fits."""
    ids = _untruncated_ids(tokenizer, prompt)  # BOS ... EOS, unpadded
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return []
    return tokenizer.convert_ids_to_tokens(ids[limit - 1 : -1])  # EOS takes the last slot


def _untruncated_ids(tokenizer: Any, prompt: str) -> list[int]:
    # verbose=False: transformers would warn of "indexing errors" for a long prompt, which
    # is wrong here (sdviz measures the overflow on purpose and says so once, readably)
    return tokenizer(prompt, truncation=False, verbose=False).input_ids


_SPECIAL = {"<|startoftext|>": "<start>", "<|endoftext|>": "<end>"}


def readable_token(token: str) -> str:
    """'red</w>' -> 'red', '<|startoftext|>' -> '<start>'."""
    return _SPECIAL.get(token, token.replace("</w>", ""))


def readable_text(tokens: list[str]) -> str:
    """BPE tokens -> the words they spell: ['tri', 'angle</w>', 'a</w>'] -> 'triangle a'."""
    return "".join(t.replace("</w>", " ") for t in tokens).strip()


def truncation_notice(tokenizer: Any, prompt: str, lang: str | None = None) -> str | None:
    """One readable sentence saying what the text encoder will not see, in `lang` (default
    `sdviz.language.course_language`); None if it all fits."""
    cut = truncated_tokens(tokenizer, prompt)
    if not cut:
        return None
    return T(
        "truncated",
        course_language(lang),
        n=len(_untruncated_ids(tokenizer, prompt)),
        limit=tokenizer.model_max_length,
        cut=len(cut),
        words=readable_text(cut),
    )


def unknown_words(tokenizer: Any, prompt: str) -> list[str]:
    """Words of `prompt` that are not one token of the vocabulary (split into pieces).

    For a closed-vocabulary model such as sdviz-mini (its tokenizer holds its training
    captions' words, and letters for anything else) these are words it never learned.
    For SD's 49,408-token vocabulary a split word is normal BPE, not an unknown word.
    """
    vocab = tokenizer.get_vocab()
    words = []
    for word in prompt.lower().split():
        word = word.strip(".,;:!?\"'()")
        if word and word + "</w>" not in vocab and word not in words:
            words.append(word)
    return words


def padded_ids(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Token ids (n, model_max_length) of `texts`, long, padded and cut as
    `StableDiffusionPipeline` pads and cuts a prompt."""
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def tokenize(pipe: Any, prompt: str) -> dict[str, Any]:
    """Tokenize `prompt` exactly as the pipeline does (padded/truncated to max length).

    Returns ``dict(input_ids=(L,) long tensor, tokens=list[str] of length L,
    n_tokens=int, truncated=list[str])``: `n_tokens` counts the real tokens including
    the start and end tokens (before padding), `truncated` lists the tokens cut off.
    """
    check_prompt(prompt)
    tok = pipe.tokenizer
    ids = padded_ids(tok, [prompt])[0]  # (L,)
    n_real = len(_untruncated_ids(tok, prompt))
    return {
        "input_ids": ids.long(),
        "tokens": tok.convert_ids_to_tokens(ids.tolist()),
        "n_tokens": min(n_real, tok.model_max_length),
        "truncated": truncated_tokens(tok, prompt),
    }


@torch.no_grad()
def embed(pipe: Any, prompt: str) -> torch.Tensor:
    """The text encoder's output for `prompt`: (L, d) float32 on the CPU.

    Uses the pipeline's own ``encode_prompt``, so it equals what the UNet receives as
    ``encoder_hidden_states`` for the conditional half of classifier-free guidance.
    """
    check_prompt(prompt)
    embeds, _ = pipe.encode_prompt(
        prompt, pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )  # (1, L, d)
    return embeds[0].detach().float().cpu()


def prompt_record(pipe: Any, prompt: str) -> dict[str, Any]:
    """The text keys of a Run, computed without a generation (what figure 7 draws).

    ``pipeline.prompt``, ``tokenizer.input_ids`` / ``tokens`` / ``n_tokens`` /
    ``truncated`` and ``text_encoder.prompt_embeds`` (L, d), as `sdviz.generate` records
    them: `sdviz.figures.tokens_and_embeddings` takes either.
    """
    tok = tokenize(pipe, prompt)
    return (
        {"pipeline.prompt": prompt}
        | {f"tokenizer.{k}": v for k, v in tok.items()}
        | {"text_encoder.prompt_embeds": embed(pipe, prompt)}
    )


WORD_END = "</w>"  # CLIP's BPE marks the last piece of a word with it


@dataclass(frozen=True)
class Vocabulary:
    """What a CLIP BPE vocabulary is made of (Radford et al. 2021; Sennrich et al. 2016).

    BPE starts from single characters (bytes), each also in a word-final form ("a</w>"),
    and adds one token per learned **merge** of two adjacent pieces; the special tokens
    frame the prompt. `merges` is how much text the vocabulary was learned from shows.
    """

    characters: int  # single characters inside a word
    word_end_characters: int  # single characters ending a word ("a</w>")
    merges: int  # pieces made by learned merges (one per merge)
    special: int  # <|startoftext|>, <|endoftext|>
    total: int  # len(tokenizer)


def vocabulary(tokenizer: Any) -> Vocabulary:
    """Count the kinds of tokens in a CLIP tokenizer's vocabulary (sdviz-mini's or SD's)."""
    vocab = tokenizer.get_vocab()
    specials = set(tokenizer.all_special_tokens)
    special = [t for t in vocab if t in specials]
    ordinary = [t for t in vocab if t not in special]
    word_end = [t for t in ordinary if t.endswith(WORD_END) and len(t) == len(WORD_END) + 1]
    characters = [t for t in ordinary if len(t) == 1]
    rest = len(ordinary) - len(word_end) - len(characters)
    return Vocabulary(len(characters), len(word_end), rest, len(special), len(tokenizer))


_MERGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> merges


def bpe_merges(tokenizer: Any) -> list[tuple[str, str]]:
    """The tokenizer's learned merges, in the order they were learned (their rank); read
    once per tokenizer (SD's 48,894 take about a second)."""
    if tokenizer not in _MERGES:
        _MERGES[tokenizer] = _read_merges(tokenizer)
    return list(_MERGES[tokenizer])  # a copy: the cache stays as read


def _read_merges(tokenizer: Any) -> list[tuple[str, str]]:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{type(tokenizer).__name__} is not a byte-pair-encoding tokenizer.")
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


@dataclass(frozen=True)
class BpeStep:
    """One merge applied to a word: the pair, its rank among the learned merges, and the
    word's pieces after it."""

    pair: tuple[str, str]
    rank: int
    pieces: tuple[str, ...]


def bpe_steps(tokenizer: Any, word: str) -> list[BpeStep]:
    """Replay BPE on one lowercase word (a-z): start from its letters (the last marked
    `</w>`), then apply the learned merge of lowest rank among adjacent pieces, again and
    again, until no adjacent pair has a merge. The last step's pieces are
    `tokenizer.tokenize(word)`; with no merge at all the list is empty."""
    if not word.isascii() or not word.isalpha() or word != word.lower():
        raise ValueError(f"bpe_steps replays one lowercase word of letters a-z; got {word!r}.")
    ranks = {pair: i for i, pair in enumerate(bpe_merges(tokenizer))}
    pieces = [*word[:-1], word[-1] + WORD_END]
    steps = []
    while True:
        pairs = [p for p in zip(pieces, pieces[1:], strict=False) if p in ranks]
        if not pairs:
            return steps
        best = min(pairs, key=ranks.__getitem__)
        merged, i = [], 0
        while i < len(pieces):
            if tuple(pieces[i : i + 2]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
        steps.append(BpeStep(best, ranks[best], tuple(pieces)))
