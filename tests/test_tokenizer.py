"""The locally learned CLIP tokenizer: whole words, unknown words, padding, saving."""

import pytest
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


def test_vocabulary_counts_characters_merges_and_specials():
    from sdviz.text import bpe_merges, vocabulary

    tok = build_tokenizer(["a red circle left of a blue square"])
    v = vocabulary(tok)
    assert v.total == len(tok) == v.characters + v.word_end_characters + v.merges + v.special
    assert v.merges == len(bpe_merges(tok)) > 0 and v.special == 2
    assert v.characters == v.word_end_characters  # every byte, and every byte ending a word


def test_bpe_steps_replay_the_tokenizer():
    from sdviz.text import bpe_steps

    tok = build_tokenizer(["a red triangle", "a small picture"])
    for word in ("triangle", "rectangle", "dodecahedron", "squares", "a"):
        steps = bpe_steps(tok, word)
        letters = [*word[:-1], word[-1] + "</w>"]
        assert (list(steps[-1].pieces) if steps else letters) == tok.tokenize(word), word
    assert bpe_steps(tok, "triangle")[-1].pieces == ("triangle</w>",)  # a corpus word: one
    assert len(tok.tokenize("rectangle")) < len("rectangle")  # known pieces, not letters
    assert not bpe_steps(tok, "zzz")  # no merge applies: letters
    with pytest.raises(ValueError, match="lowercase word"):
        bpe_steps(tok, "Two words")


def test_tables_show_the_vocabulary_and_the_merges():
    from sdviz.course.tables import bpe_table, pieces_table, vocabulary_table

    tok = build_tokenizer(["a red triangle", "a small picture"])
    assert vocabulary_table(tok)["count"][-1] == len(tok)
    merges = bpe_table(tok, "triangle")
    assert merges["pieces"][0] == "t r i a n g l e</w>" and merges["pieces"][-1] == "triangle</w>"
    pieces = pieces_table(tok, ["triangle", "dodecahedron"])
    assert pieces["pieces"] == [1, len(tok.tokenize("dodecahedron"))]
