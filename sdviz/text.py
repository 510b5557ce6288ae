"""Text probes: how a prompt becomes the vectors the UNet attends to.

Stable Diffusion (Rombach et al. 2022) conditions its UNet on the last hidden states of
a CLIP text encoder (Radford et al. 2021): the prompt is split into BPE tokens, wrapped
in start/end tokens, padded (or cut) to the tokenizer's `model_max_length` (77 for SD),
and encoded to one d-dimensional vector per position (768 for SD 1.x, 1024 for 2.x).

    tokenize(pipe, "a red circle")   # ids, token strings, count, what was cut off
    embed(pipe, "a red circle")      # (L, d) float32 on the CPU
"""

from __future__ import annotations

from typing import Any

import torch


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


def truncation_notice(tokenizer: Any, prompt: str) -> str | None:
    """One readable sentence saying what the text encoder will not see; None if it all fits."""
    cut = truncated_tokens(tokenizer, prompt)
    if not cut:
        return None
    limit = tokenizer.model_max_length
    return (
        f"the prompt has {len(_untruncated_ids(tokenizer, prompt))} tokens, more than the text "
        f"encoder's {limit} (start and end tokens included); the last {len(cut)} were cut off "
        f"and do not affect the image: {readable_text(cut)!r}"
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
