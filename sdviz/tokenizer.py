"""Build a CLIP tokenizer from a list of captions, with nothing downloaded.

Stable Diffusion reads prompts through CLIP's byte-pair-encoding (BPE) tokenizer
(Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; BPE from Sennrich et al. 2016). Its vocabulary is learned from text:
start from single bytes and repeatedly merge the most frequent adjacent pair.
This module learns such a vocabulary from a caption corpus and returns a real
`transformers.CLIPTokenizer` with SD's special tokens and 77-token context, so
known words are one token each and unknown words still tokenize into pieces.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
WORD_END = "</w>"
# CLIP splits text into letters, digits and punctuation runs before BPE.
_PRETOKENIZE = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


def bytes_to_unicode() -> dict[int, str]:
    """Map each byte to a printable unicode character, as GPT-2/CLIP BPE does.

    Printable latin-1 bytes map to themselves; the others are shifted above 255
    so that no byte maps to whitespace or a control character.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _words(texts: Iterable[str]) -> Counter:
    byte_char = bytes_to_unicode()
    counts: Counter = Counter()
    for text in texts:
        for word in _PRETOKENIZE.findall(text.lower()):
            counts["".join(byte_char[b] for b in word.encode("utf-8"))] += 1
    return counts


def learn_bpe(texts: Iterable[str], max_merges: int = 10_000) -> list[tuple[str, str]]:
    """Learn BPE merges from `texts` until every word is one symbol (or `max_merges`).

    Ties between equally frequent pairs are broken alphabetically, so the result
    is deterministic for a given corpus.
    """
    words = {tuple(w[:-1]) + (w[-1] + WORD_END,): n for w, n in _words(texts).items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for symbols, n in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        new_words = {}
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            new_words[tuple(out)] = n
        words = new_words
    return merges


def build_tokenizer(
    texts: Iterable[str], model_max_length: int = 77, max_merges: int = 10_000
) -> CLIPTokenizer:
    """Return a `CLIPTokenizer` whose BPE vocabulary is learned from `texts`.

    The vocabulary holds every byte (so any text tokenizes), every byte as a word
    end, the learned merges, then SD's `<|startoftext|>` and `<|endoftext|>`
    (which also pads, as in SD 1.x).
    """
    merges = learn_bpe(texts, max_merges=max_merges)
    chars = list(bytes_to_unicode().values())
    symbols = chars + [c + WORD_END for c in chars] + [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for s in symbols + [BOS, EOS]:
        vocab.setdefault(s, len(vocab))
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
    )
