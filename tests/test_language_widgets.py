"""The widgets and the figures of attention, guidance, latents, similarity, text, timestep and
unet in Chinese (issue 21): every control label, caption and status line of a `lang="zh"`
widget comes from its module's `Texts`, the figures it draws are Chinese too, and each
Chinese figure is drawn with no missing glyph, its Chinese texts in the CJK font behind
DejaVu Sans, and no English sentence of its module left on it. English widgets keep
their English labels; `lang=None` follows `sdviz.language.course_language`.

test_figures' tiny random pipeline and traced run (built in code) are the fixtures.
"""

# ruff: noqa: F811  (the fixtures imported from test_figures are the tests' arguments)

from __future__ import annotations

import importlib
import re
import string
import warnings
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

import ipywidgets as W
import numpy as np
import pytest
import torch
from matplotlib.text import Text
from test_figures import PROMPT, STEPS, one_thread, pipe, run  # noqa: F401  (fixtures)
from test_unet_figure import only_cross_unet

import sdviz
from sdviz import figures, language, probes
from sdviz.autoencoder import reconstruct, reconstruct_many
from sdviz.figures.style import to_png
from sdviz.language import LANGUAGES, REGISTRY
from sdviz.shapes import ShapesWorld
from sdviz.widgets import AttentionExplorer, DenoisingExplorer, PromptExplorer, tokens_html
from sdviz.widgets import attention as attention_widget
from sdviz.widgets import denoising as denoising_widget
from sdviz.widgets import prompt as prompt_widget

CJK = re.compile("[\u4e00-\u9fff]")
EN, ZH = LANGUAGES.index("en"), LANGUAGES.index("zh")


@pytest.fixture
def english_default(monkeypatch, tmp_path):
    """No $SDVIZ_LANG, no sdviz-lang.txt: lang=None means English."""
    monkeypatch.delenv(language.LANG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)


@contextmanager
def no_missing_glyph():
    """Turn matplotlib's missing-glyph warning (a character drawn as a box) into an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")
        yield


def shown(widget: W.Widget) -> list[str]:
    """Every text a widget tree shows: descriptions, HTML, dropdown labels, button text."""
    found = []
    for name in ("description", "value"):
        value = getattr(widget, name, None)
        if isinstance(value, str) and value and not isinstance(widget, W.Text):
            found.append(value)
    if isinstance(widget, W.Dropdown):
        found += [label for label, _ in widget.options]
    for child in getattr(widget, "children", ()):
        found += shown(child)
    return found


def sentences(module: str) -> dict[str, str]:
    """English template -> Chinese template, for a module's templates without fields."""

    def plain(template: str) -> bool:
        return all(field is None for _, field, _, _ in string.Formatter().parse(template))

    importlib.import_module(module)  # registers its Texts (sdviz.figures imports lazily)
    return {t[EN]: t[ZH] for t in REGISTRY[module].table.values() if plain(t[EN])}


# -- widgets ------------------------------------------------------------------------------


def test_denoising_explorer_in_chinese(pipe, run, english_default):
    T = denoising_widget.T
    with no_missing_glyph():  # the schedule figure is drawn (and rasterised) here
        zh = DenoisingExplorer(run, pipe, lang="zh")
        en = DenoisingExplorer(run, pipe)
    assert zh.lang == "zh" and en.lang == "en"
    assert zh.slider.description == T("step", "zh") == "步"
    assert en.slider.description == T("step", "en") == "step"
    texts, english = shown(zh), shown(en)
    for key in ("xt.preview", "xt.decoded", "x0.decoded", "noise", "per_word"):
        assert f"<b>{T(key, 'zh')}</b>" in texts
        assert f"<b>{T(key, 'en')}</b>" in english and f"<b>{T(key, 'en')}</b>" not in texts
    zh.slider.value = 2
    t = int(run["scheduler.step_timestep"][2])
    assert zh.state.value.startswith(f"第 2 步（共 0…{STEPS - 1}）· t = {t} ·")
    assert "信号" in zh.state.value and "噪声" in zh.state.value
    assert en.state.value.startswith(f"step 0 (of 0…{STEPS - 1}) · t = ")
    # the schedule figure it shows was drawn in Chinese: the same curves, other words
    assert zh.schedule_image.value != en.schedule_image.value
    with no_missing_glyph():
        preview = DenoisingExplorer(run, lang="zh")  # no pipe: linear previews only
    assert f"<b>{T('x0.preview', 'zh')}</b>" in shown(preview)
    assert not any("VAE" in text for text in shown(preview))


def test_attention_explorer_in_chinese(run, english_default):
    T = attention_widget.T
    zh, en = AttentionExplorer(run, lang="zh"), AttentionExplorer(run)
    assert (zh.word.description, zh.layer.description, zh.slider.description) == ("词", "层", "步")
    assert (en.word.description, en.layer.description, en.slider.description) == (
        "word",
        "layer",
        "step",
    )
    assert zh.layer.options[0] == (T("average", "zh"), attention_widget.AVERAGE)
    assert en.layer.options[0][0] == "default average (attention.maps)"
    assert [v for _, v in zh.layer.options] == [v for _, v in en.layer.options]
    texts = shown(zh)
    assert f"<b>{T('over_image', 'zh')}</b>" in texts and f"<b>{T('map', 'zh')}</b>" in texts
    zh.word.value = run.token_index("square")
    zh.slider.value = 0
    h, w = zh.current_map().shape
    assert zh.state.value.startswith(f"“square” · 第 1 步（共 {STEPS} 步）· {h}×{w} 注意力图")
    assert "step" not in zh.state.value and "map" not in zh.state.value
    assert en.state.value.startswith("“a” · step ")


def test_prompt_explorer_in_chinese(pipe, english_default):
    T = prompt_widget.T
    zh, en = PromptExplorer(pipe, steps=2, lang="zh"), PromptExplorer(pipe, steps=2)
    assert (zh.text.description, zh.button.description) == ("提示词", "生成")
    assert (en.text.description, en.button.description) == ("prompt", "Generate")
    assert zh.text.value == en.text.value == "a red circle"  # prompts stay English
    n = int(sdviz.tokenize(pipe, "a red circle")["n_tokens"])
    L = pipe.tokenizer.model_max_length
    assert T("count", "zh", n=n, total=L) in zh.tokens.value
    assert f"<b>{n} tokens</b> (with start and end markers) of {L}:" in en.tokens.value
    assert "× 填充" in zh.tokens.value and "× padding" not in zh.tokens.value
    run = zh.generate()
    assert run is not None and zh.button.description == "生成"
    g = float(run["pipeline.guidance_scale"])
    assert zh.status.value.startswith(f"“a red circle”：2 步，随机种子 0，引导系数 {g:g}，")
    assert zh.status.value.endswith(" s")


def test_token_notices_in_chinese():
    tokenized = {
        "tokens": ["<|startoftext|>", "red</w>", "<|endoftext|>", "<|endoftext|>"],
        "input_ids": [0, 5, 1, 1],
        "n_tokens": 3,
        "truncated": ["square"],
    }
    zh = tokens_html(tokenized, "'qwzx' was never seen in training", lang="zh")
    en = tokens_html(tokenized, "'qwzx' was never seen in training", lang="en")
    assert "被截断（超出长度上限）：square" in zh and "cut off (past the limit): square" in en
    assert "模型不认识的词：" in zh and "unknown words: " in en
    assert "+ 1 × 填充 &lt;|endoftext|&gt;（ID 1）" in zh
    assert not CJK.search(en)


def test_prompt_explorer_names_unknown_words_in_chinese(tmp_path, english_default):
    """A closed-vocabulary model (sdviz-mini's sdviz.json): the notice under the tokens and
    the warning of the Generate button are Chinese in a Chinese widget, English otherwise."""
    (tmp_path / "sdviz.json").write_text('{"closed_vocabulary": true}')
    closed = sdviz.tiny_pipeline(seed=0)
    closed.register_to_config(_name_or_path=str(tmp_path))  # as if loaded from that folder
    closed.set_progress_bar_config(disable=True)
    zh = PromptExplorer(closed, "a red giraffe", steps=1, lang="zh")
    en = PromptExplorer(closed, "a red giraffe", steps=1)
    notice = sdviz.tracing.vocabulary_notice(closed, "a red giraffe", "zh")
    assert notice.startswith("这个模型只认识它训练描述中的词；“giraffe”")
    assert prompt_widget.T("unknown", "zh", notice=notice) in zh.tokens.value
    assert "'giraffe' is not among them" in en.tokens.value.replace("&#x27;", "'")
    assert not CJK.search(en.tokens.value)
    with pytest.warns(UserWarning) as record:
        assert zh.generate() is not None
    assert [str(w.message) for w in record if "giraffe" in str(w.message)] == [notice]


def test_lang_none_follows_the_course_language(pipe, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(language.LANG_ENV, "zh")
    assert PromptExplorer(pipe).button.description == "生成"
    monkeypatch.delenv(language.LANG_ENV)
    (tmp_path / language.LANG_FILE).write_text("zh\n")
    assert PromptExplorer(pipe).button.description == "生成"
    (tmp_path / language.LANG_FILE).unlink()
    assert PromptExplorer(pipe).button.description == "Generate"
    with pytest.raises(ValueError, match="zh"):
        PromptExplorer(pipe, lang="fr")


# -- the figures of this part, in Chinese -------------------------------------------------


def _flux_like(run) -> dict:
    """A two-tokenizer text record as Flux's: CLIP gives only its pooled vector, T5 rows."""
    n, d = int(run["tokenizer.n_tokens"]), run["text_encoder.prompt_embeds"].shape[-1]
    tokens = ["▁a", "▁red", "▁circle", "</s>", "<pad>", "<pad>", "<pad>", "<pad>"]
    return {
        "pipeline.prompt": "a red circle",
        "pipeline.family": "flux",
        "tokenizer.tokens": run["tokenizer.tokens"],
        "tokenizer.input_ids": run["tokenizer.input_ids"],
        "tokenizer.n_tokens": n,
        "pipeline.pooled_prompt_embeds": torch.randn(d, generator=torch.Generator().manual_seed(0)),
        "tokenizer_2.tokens": tokens,
        "tokenizer_2.input_ids": torch.arange(len(tokens)),
        "tokenizer_2.n_tokens": 4,
        "text_encoder_2.prompt_embeds": torch.randn(len(tokens), 16),
        "attention.text_sequence": {"tokenizer_2": (0, len(tokens))},
    }


@pytest.fixture(scope="module")
def drawings(pipe, run):
    """module -> figures drawn from cheap records, as functions of lang."""
    plain = sdviz.generate(pipe, PROMPT, steps=2, seed=1, guidance_scale=1.0, attention=None)
    rec = probes.localisation(pipe, count=1, timesteps=(500,))
    measured = probes.measured_guidance()
    images, _ = ShapesWorld(size=64, split="test").batch(0, 6)
    many = reconstruct_many(pipe, images)
    one = reconstruct(pipe, run)
    kinds = ["true caption", "relation flipped", "colours swapped"]
    rng = np.random.default_rng(0)
    emb = probes.ClipEmbeddings(
        list(images[:2]), [PROMPT, "a blue square", "a green star"], rng.normal(size=(2, 8)),
        rng.normal(size=(3, 8)),
    )  # fmt: skip
    steps = probes.timestep_embeddings(pipe)
    structure = probes.unet_structure(only_cross_unet(), 8)
    shares = {"this run": {"start": 0.6, "words": 0.3, "end+padding": 0.1}}
    return {
        "sdviz.figures.attention": [
            lambda lang: figures.cross_attention(run, ["red", "square"], lang=lang),
            lambda lang: figures.attention_drilldown(run, "circle", steps=[0, 2], lang=lang),
            lambda lang: figures.attention_localisation(rec, lang=lang),
            lambda lang: figures.attention_shares(shares, lang=lang),
        ],
        "sdviz.figures.guidance": [
            lambda lang: figures.guidance_terms(run, lang=lang),
            lambda lang: figures.guidance_sweep([plain, run], lang=lang),
            lambda lang: figures.guidance_benefit(measured, [plain, run], lang=lang),
        ],
        "sdviz.figures.latents": [
            lambda lang: figures.latent_space(one, lang=lang),
            lambda lang: figures.reconstruction_quality(many, lang=lang),
        ],
        "sdviz.figures.similarity": [
            lambda lang: figures.clip_similarity(emb, truth=[0, 1], caption_kinds=kinds, lang=lang),
        ],
        "sdviz.figures.text": [
            lambda lang: figures.tokens_and_embeddings(run, lang=lang),
            lambda lang: figures.tokens_and_embeddings(_flux_like(run), lang=lang),
        ],
        "sdviz.figures.timestep": [lambda lang: figures.timestep_embedding(steps, lang=lang)],
        "sdviz.figures.unet": [lambda lang: figures.unet_diagram(structure, lang=lang)],
    }


MODULES = ["attention", "guidance", "latents", "similarity", "text", "timestep", "unet"]


@pytest.mark.parametrize("name", MODULES)
def test_chinese_figures_draw_every_glyph_in_chinese(drawings, name, english_default):
    module = f"sdviz.figures.{name}"
    family = language.cjk_family()
    english_sentences = {en for en, zh in sentences(module).items() if en != zh and " " in en}
    chinese_sentences = {zh for en, zh in sentences(module).items() if en != zh}
    for draw in drawings[module]:
        with no_missing_glyph():
            fig = draw("zh")
            png = to_png(fig)  # rendered outside the figure function, as Jupyter shows it
        assert png.startswith(b"\x89PNG")
        texts = [t for t in fig.findobj(Text) if t.get_text().strip()]
        chinese = [t for t in texts if CJK.search(t.get_text())]
        assert chinese, f"{module}: no Chinese text"
        for t in chinese:  # DejaVu Sans first (Latin, digits, Greek), then the CJK font
            assert t.get_fontfamily()[:2] == ["DejaVu Sans", family], t.get_text()
            assert "$" not in t.get_text(), f"mathtext cannot draw CJK: {t.get_text()!r}"
        left = [t.get_text() for t in texts if t.get_text() in english_sentences]
        assert not left, f"{module} draws English in Chinese: {left}"
        english = [t.get_text() for t in draw(None).findobj(Text)]  # lang=None: English here
        assert not any(CJK.search(text) for text in english)
        assert not chinese_sentences & set(english)
