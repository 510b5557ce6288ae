"""The locally learned CLIP tokenizer: whole words, unknown words, padding, saving."""

from transformers import CLIPTokenizer

from sdviz.tokenizer import build_tokenizer, learn_bpe


def test_known_words_are_single_tokens_and_unknown_words_split():
    tok = build_tokenizer(["a red circle left of a blue square", "a red star"])
    ids = tok("a red circle zebra").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert tokens[1:4] == ["a</w>", "red</w>", "circle</w>"]
    # "zebra" was never seen: it still tokenizes, into several pieces, and decodes back
    assert len(tokens) - 5 > 1
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a red circle zebra"


def test_padding_and_truncation_to_model_max_length(tmp_path):
    tok = build_tokenizer(["one two three"], model_max_length=8)
    enc = tok(
        "one two three one two three one two three",
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
    )
    assert len(enc.input_ids) == 8
    assert enc.input_ids[-1] == tok.eos_token_id
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("one two").input_ids == tok("one two").input_ids
    assert len(again) == len(tok) > 3


def test_learn_bpe_is_deterministic():
    texts = ["the cat sat on the mat", "a cat and a hat"]
    assert learn_bpe(texts) == learn_bpe(list(texts))
