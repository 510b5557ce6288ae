"""A printed Run speaks the course language: every key's meaning in Chinese, English unchanged.

The key table (sdviz.tracing.keys) holds each key's meaning in English and Simplified
Chinese; `repr(run)` and `repr(trace)` print them in `sdviz.language.course_language()`,
aligned by screen width (a Chinese character takes two columns).
"""

from __future__ import annotations

import re

import pytest
import torch
from test_language import test_chinese_templates_use_the_glossary as glossary_check

import sdviz
from sdviz import language
from sdviz.language import LANGUAGES, REGISTRY, text_width
from sdviz.tracing import keys, run
from sdviz.tracing.keys import KEYS, MEANINGS, TABLE, describe
from sdviz.tracing.run import Run, Trace

# the English meanings spell symbols in ASCII; the Chinese ones write the symbols
SYMBOLS = {
    "alpha-bar": "ᾱ",
    "abar": "ᾱ",
    "epsilon-hat": "ε̂",
    "x0-hat": "x̂0",
    "v-hat": "v̂",
    "sigma": "σ",
    "mu": "μ",
}
KEY_NAME = re.compile(
    r"(?<![\w.])(?:pipeline|tokenizer(?:_\d)?|text_encoder(?:_\d)?|scheduler|denoiser|attention|vae)"
    r"\.[a-z_]\w*"
)  # a Run key as prose writes it (not sdviz.attention.x)


def code_and_numbers(text: str) -> set[str]:
    """Names written as code (x_t, attention.maps, attention_heads=True) and numbers."""
    for english, symbol in SYMBOLS.items():
        text = re.sub(rf"(?<![\w-]){re.escape(english)}(?![A-Za-z0-9-])", symbol, text)
    return set(re.findall(r"[\w.<>-]*[._=][\w.<>=-]*\w|\d+(?:\.\d+)?", text))


def test_every_key_has_a_chinese_meaning():
    assert set(MEANINGS.table) == set(TABLE)  # one meaning per key, no meaning without key
    for key in KEYS:
        assert key.meaning_zh.strip(), f"{key.name} has no Chinese meaning"
        assert re.search("[\u4e00-\u9fff]", key.meaning_zh), (key.name, key.meaning_zh)
        assert MEANINGS(key.name, "en") == key.meaning
        assert MEANINGS(key.name, "zh") == key.meaning_zh


def test_chinese_meanings_name_only_keys_that_exist_and_keep_the_symbols():
    for key in KEYS:
        named = KEY_NAME.findall(key.meaning_zh)
        assert all(name in TABLE for name in named), (key.name, named)
        english, chinese = code_and_numbers(key.meaning), code_and_numbers(key.meaning_zh)
        assert english == chinese, (key.name, english ^ chinese)


def test_the_check_catches_a_missing_key_or_symbol():
    assert code_and_numbers("x_next - x = (sigma_next - sigma) v") == {"x_next", "σ_next"}
    assert code_and_numbers("(σ_next - σ) v") != code_and_numbers("x_next = (σ_next - σ) v")
    assert KEY_NAME.findall("取 attention.mapz 的平均，见 sdviz.attention.x") == [
        "attention.mapz"  # not in TABLE: the test above would fail on it
    ]


def test_tokenizer_meanings_are_whole_templates_with_the_same_field():
    for _, _, meaning, meaning_zh, _ in keys._TOKEN_KEYS:
        assert language._fields(meaning) == language._fields(meaning_zh) == {"tokenizer"}
        assert meaning.startswith("{tokenizer}") and meaning_zh.startswith("{tokenizer}")
    assert MEANINGS("tokenizer_2.input_ids", "zh").startswith("第二个分词器")
    assert MEANINGS("tokenizer_3.negative_tokens", "zh").startswith("第三个分词器")
    assert not any("{" in k.meaning + k.meaning_zh for k in KEYS)  # every field filled


@pytest.mark.parametrize("module", ["sdviz.tracing.keys", "sdviz.tracing.run"])
def test_the_tables_are_registered_and_use_the_glossary(module):
    assert REGISTRY[module] is (MEANINGS if module.endswith("keys") else run.T)
    glossary_check(module, REGISTRY[module])


def english_text(r: Run) -> str:
    """`repr(run)` as sdviz printed it before the Chinese course: built from the table."""
    names = list(r)
    values = [run._describe(r[name]) for name in names]
    width, vwidth = max(map(len, names)), max(map(len, values))
    prompt = r.get("pipeline.prompt", "")
    lines = [f"Run({prompt!r}, {r.n_steps} steps, {len(r)} keys)"]
    lines += [
        f"  {k:<{width}}  {v:<{vwidth}}  {describe(k).meaning}"
        for k, v in zip(names, values, strict=True)
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tiny_run():
    from sdviz.builder import tiny_pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    with sdviz.trace(pipe, attention_layers="up_blocks.1") as tr:
        pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    yield tr
    torch.set_num_threads(before)


def test_a_real_runs_repr_in_both_languages(tiny_run, monkeypatch, tmp_path):
    r = tiny_run.last
    assert any(keys.is_layer_key(name) for name in r)  # the per-layer row too
    chinese = r.describe_keys("zh")
    lines = chinese.split("\n")
    assert lines[0] == f"Run('a red circle'，2 步，{len(r)} 个键)"
    for name, line in zip(r, lines[1:], strict=True):
        assert line.startswith(f"  {name} ") and line.endswith(MEANINGS(describe(name).name, "zh"))
    assert describe("denoiser.noise_pred").meaning not in chinese
    assert r.describe_keys("en") == english_text(r)  # English byte-identical

    monkeypatch.delenv(language.LANG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert repr(r) == english_text(r)  # no marker: English
    (tmp_path / language.LANG_FILE).write_text("zh\n", encoding="utf-8")
    assert repr(r) == chinese  # a lessons/zh/ kernel
    monkeypatch.setenv(language.LANG_ENV, "en")
    assert repr(r) == english_text(r)


def test_trace_repr_in_both_languages(tiny_run, monkeypatch):
    r = tiny_run.last
    monkeypatch.setenv(language.LANG_ENV, "en")
    assert repr(tiny_run) == f"Trace(1 run)\n  [0] 'a red circle': 2 steps, {len(r)} keys"
    two = Trace()
    two.runs += [r, r]
    assert repr(two).split("\n")[0] == "Trace(2 runs)"
    monkeypatch.setenv(language.LANG_ENV, "zh")
    assert repr(tiny_run) == f"Trace(1 次运行)\n  [0] 'a red circle'：2 步，{len(r)} 个键"
    assert repr(two).split("\n")[0] == "Trace(2 次运行)"


def test_columns_align_by_screen_width():
    r = Run({"pipeline.prompt": "一个红色的圆", "pipeline.seed": 0, "scheduler.name": "DDIM"})
    for lang in LANGUAGES:
        lines = r.describe_keys(lang).split("\n")[1:]
        meanings = [MEANINGS(name, lang) for name in r]
        heads = [line[: -len(m)] for line, m in zip(lines, meanings, strict=True)]
        assert len({text_width(h) for h in heads}) == 1, (lang, lines)  # meanings line up
        assert len({len(h) for h in heads}) > 1  # padded by screen width, not characters
    assert Run({}).describe_keys("zh") == "Run(''，0 步，0 个键)"
