"""The notices and the commands in Chinese (issue 21): `sdviz.tracing.vocabulary_notice` and
`sdviz.text.truncation_notice` (what `sdviz.generate` warns with) in `lang`, or the course's
language (a lesson in lessons/zh/ warns in Chinese); `sdviz trace --lang zh` (a Chinese
filmstrip drawn with no missing glyph, Chinese notes); `sdviz figures --lang zh`'s refusal
and `model_description` in Chinese. English stays as it was, word for word.

The tiny random pipeline built in code (`sdviz.builder.tiny_pipeline`) is every model here;
"closed" is it with a closed vocabulary (a folder's sdviz.json says so, as sdviz-mini's).
"""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import sdviz
from sdviz import language
from sdviz.commands import build_parser, main
from sdviz.commands import trace as trace_command
from sdviz.commands.common import model_description, notes, prompt_notices
from sdviz.figures import image_row
from sdviz.text import truncation_notice
from sdviz.tracing import vocabulary_notice

ROOT = Path(__file__).resolve().parents[1]
ZH_LESSONS = ROOT / "lessons" / "zh"  # its sdviz-lang.txt says "zh", as a Jupyter kernel sees
CJK = re.compile("[\u4e00-\u9fff]")
SHORT = 12  # the tokenizer's model_max_length here: a prompt of a few words is cut off


@pytest.fixture(autouse=True)
def english_default(monkeypatch, tmp_path):
    """No $SDVIZ_LANG, no sdviz-lang.txt, one torch thread: lang=None means English."""
    monkeypatch.delenv(language.LANG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    """The tiny pipeline as if loaded from a folder whose sdviz.json says closed_vocabulary."""
    folder = tmp_path_factory.mktemp("closed")
    (folder / "sdviz.json").write_text(json.dumps({"closed_vocabulary": True}))
    pipe = sdviz.tiny_pipeline(seed=0, model_max_length=SHORT)
    pipe.register_to_config(_name_or_path=str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextmanager
def no_missing_glyph():
    """matplotlib's missing-glyph warning (a character drawn as a box) as an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")
        yield


# -- the notices -------------------------------------------------------------------------


def test_vocabulary_notice_in_both_languages(closed):
    one, two = "a red giraffe", "a red giraffe and zebra"
    # English word for word as before issue 21 ("is" for one word, "are" for several)
    assert (
        vocabulary_notice(closed, one)
        == vocabulary_notice(closed, one, "en")
        == (
            "this model knows only the words of its training captions; 'giraffe' is not among "
            "them, so the tokenizer spells them in letters the model never learned and they "
            "steer the image little or not at all."
        )
    )
    assert vocabulary_notice(closed, two, "en").startswith(
        "this model knows only the words of its training captions; 'giraffe', 'zebra' are not"
    )
    zh = vocabulary_notice(closed, two, "zh")
    assert zh.startswith("这个模型只认识它训练描述中的词；“giraffe”、“zebra” 不在其中")
    assert "分词器" in zh and "图像" in zh and not re.search("[a-z]{3,} [a-z]{3,}", zh)
    assert vocabulary_notice(closed, "a red circle", "zh") is None  # every word known
    assert vocabulary_notice(sdviz.tiny_pipeline(seed=0), one, "zh") is None  # open vocabulary


def test_truncation_notice_in_both_languages(closed):
    tok = closed.tokenizer
    prompt = "a red circle " * 6  # 18 words + start and end: 20 tokens of 12
    n = len(tok(prompt).input_ids)
    assert n > SHORT
    cut = n - SHORT  # the end marker takes the last position
    words = " ".join((["a", "red", "circle"] * 6)[SHORT - 2 :])  # what the encoder never sees
    assert (
        truncation_notice(tok, prompt)
        == truncation_notice(tok, prompt, "en")
        == (
            f"the prompt has {n} tokens, more than the text encoder's {SHORT} (start and end "
            f"tokens included); the last {cut} were cut off and do not affect the image: {words!r}"
        )
    )
    assert truncation_notice(tok, prompt, "zh") == (
        f"提示词有 {n} 个标记，超过了文本编码器的 {SHORT} 个（含起始标记和结束标记）；"
        f"最后 {cut} 个标记被截断，不影响图像：“{words}”"
    )
    assert truncation_notice(tok, "a red circle", "zh") is None


def test_notices_follow_the_course_language(closed, monkeypatch):
    monkeypatch.chdir(ZH_LESSONS)
    assert CJK.search(vocabulary_notice(closed, "a red giraffe"))
    assert CJK.search(truncation_notice(closed.tokenizer, "a red circle " * 6))
    assert not CJK.search(vocabulary_notice(closed, "a red giraffe", "en"))  # the argument wins
    with pytest.raises(ValueError, match="en, zh"):
        vocabulary_notice(closed, "a red giraffe", "fr")


def _warned(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def test_generate_warns_in_chinese_in_a_chinese_lesson_folder(closed, monkeypatch):
    """What a student of lessons/zh/ sees under a cell: the notices in Chinese."""
    prompt = "a red giraffe " + "circle " * SHORT  # an unknown word, and too long
    monkeypatch.chdir(ZH_LESSONS)
    with pytest.warns(UserWarning) as record:
        sdviz.generate(closed, prompt, steps=1, attention=None)
    said = _warned(record)
    assert vocabulary_notice(closed, prompt, "zh") in said
    assert truncation_notice(closed.tokenizer, prompt, "zh") in said
    assert all(CJK.search(text) for text in said), said

    monkeypatch.chdir(ROOT)  # no sdviz-lang.txt: English, as before
    with pytest.warns(UserWarning) as record:
        sdviz.generate(closed, prompt, steps=1, attention=None)
    assert _warned(record) == [
        vocabulary_notice(closed, prompt, "en"),
        truncation_notice(closed.tokenizer, prompt, "en"),
    ]
    with pytest.warns(UserWarning) as record:  # lang= beats the folder
        sdviz.generate(closed, "a red giraffe", steps=1, attention=None, lang="zh")
    assert _warned(record) == [vocabulary_notice(closed, "a red giraffe", "zh")]


def test_prompt_notices_hold_every_language(closed):
    said = prompt_notices(closed, "a red giraffe " + "circle " * SHORT)
    assert set(said.unknown) == set(said.too_long) == set(language.LANGUAGES)
    assert len(set(said.every())) == 2 * len(language.LANGUAGES)  # each one, each language
    assert prompt_notices(closed, "a red circle").every() == []

    # a command says the notes in its --lang and silences generate's warnings in any language
    # (a probe's generate warns in the course's language, English here)
    lines = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with notes(said.unknown["zh"], silence=said.every(), say=lines.append, lang="zh"):
            sdviz.generate(closed, "a red giraffe " + "circle " * SHORT, steps=1, attention=None)
    assert lines == [f"注意：{said.unknown['zh']}"]
    assert not [w for w in record if "giraffe" in str(w.message) or "图像" in str(w.message)]


# -- the commands ------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """The filmstrips `sdviz trace` draws: (figure, titles, title) of each call."""
    calls = []
    real = image_row.filmstrip

    def spy(images, titles, title="", *, lang=None):
        fig = real(images, titles, title, lang=lang)
        calls.append((fig, list(titles), title))
        return fig

    monkeypatch.setattr(image_row, "filmstrip", spy)  # trace imports it when it runs
    return calls


TRACE = ["trace", "--model", "sdviz-tiny", "--steps", "2", "--frames", "2"]


def test_trace_in_chinese_draws_a_chinese_filmstrip(tmp_path, drawn, capfd):
    prompt = "a red circle " * 30  # too long for the text encoder: a note
    out = tmp_path / "zh"
    with no_missing_glyph():
        assert main([*TRACE, "--lang", "zh", "--prompt", prompt, "--out", str(out)]) == 0
    (fig, titles, title), *_ = drawn
    steps = [0, 1]
    assert titles == [
        trace_command.T("frame", "zh", i=i, last=1, t=float(t))
        for i, t in zip(steps, _timesteps(titles), strict=True)
    ]
    assert all(
        t.startswith(f"第 {i} 步（共 0…1 步）  t=") for i, t in zip(steps, titles, strict=True)
    )
    assert title == f"预测的干净图像 x̂0：{prompt}"
    assert "".join(fig.get_suptitle().split()) == "".join(title.split())  # wrapped to fit
    family = language.cjk_family()
    for ax in fig.axes:  # the titles carry the CJK font behind DejaVu Sans
        assert ax.title.get_fontfamily()[:2] == ["DejaVu Sans", family]
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("注意：")]
    tokenizer = sdviz.load("sdviz-tiny").tokenizer
    assert notes == [f"注意：{truncation_notice(tokenizer, prompt, 'zh')}"]
    assert "Warning" not in err and "note: " not in err
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    assert not CJK.search(summary.replace(prompt, ""))  # summary.txt stays English
    assert "model: sdviz-tiny (a random tiny pipeline built in code)" in summary


def _timesteps(titles: list[str]) -> list[str]:
    """The t=... of each title (the scheduler's timesteps of the frames)."""
    return [re.search(r"t=(\S+)$", t).group(1) for t in titles]


def test_trace_in_english_is_as_before(tmp_path, drawn):
    prompt = "a red circle"
    assert main([*TRACE, "--prompt", prompt, "--out", str(tmp_path / "en")]) == 0
    (fig, titles, title), *_ = drawn
    ts = _timesteps(titles)
    assert titles == [f"step {i} (of 0…1)  t={float(t):g}" for i, t in zip([0, 1], ts, strict=True)]
    assert title == f"x0-hat: {prompt}"
    assert not any(CJK.search(t.get_text()) for t in fig.texts + [a.title for a in fig.axes])


def test_trace_lang_defaults_to_the_course_language(tmp_path, drawn, monkeypatch):
    parser = build_parser()
    assert parser.parse_args(["trace"]).lang is None  # resolved when the command runs
    assert parser.parse_args(["trace", "--lang", "zh"]).lang == "zh"
    monkeypatch.setenv(language.LANG_ENV, "zh")
    with no_missing_glyph():
        assert main([*TRACE, "--frames", "1", "--out", str(tmp_path / "run")]) == 0
    (_, titles, title), *_ = drawn
    assert titles[0].startswith("第 1 步") and title.startswith("预测的干净图像 x̂0：")
    summary = (tmp_path / "run" / "summary.txt").read_text(encoding="utf-8")
    assert not CJK.search(summary)  # English even when the course language is Chinese


def test_trace_help_names_lang_and_english_summary(capsys):
    assert main(["trace", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--lang {en,zh}" in text and "summary.txt is always English" in text
    assert main(["trace", "--lang", "fr"]) == 2  # a usage error before any model is loaded


@pytest.fixture(scope="module")
def closed_folder(tmp_path_factory):
    """The tiny pipeline saved as a folder recommending a closed vocabulary (as sdviz-mini)."""
    folder = tmp_path_factory.mktemp("model") / "tiny"
    sdviz.tiny_pipeline(seed=0).save_pretrained(folder)
    advice = {"guidance_scale": 2.0, "num_inference_steps": 2, "closed_vocabulary": True}
    (folder / "sdviz.json").write_text(json.dumps(advice))
    return folder


def test_trace_notes_in_chinese_once_each(closed_folder, tmp_path, capfd, recwarn, drawn):
    prompt = "a red zebra " + "circle " * 80  # an unknown word, and too long
    argv = ["trace", "--model", str(closed_folder), "--frames", "1", "--prompt", prompt]
    assert main([*argv, "--lang", "zh", "--out", str(tmp_path / "run")]) == 0
    err = capfd.readouterr().err
    pipe = sdviz.load(str(closed_folder))
    assert [line for line in err.splitlines() if line.startswith("注意：")] == [
        f"注意：{vocabulary_notice(pipe, prompt, 'zh')}",
        f"注意：{truncation_notice(pipe.tokenizer, prompt, 'zh')}",
    ]
    assert "Warning" not in err and "Token indices" not in err
    assert not [w for w in recwarn if "zebra" in str(w.message)]  # said as notes only


def test_figures_refuses_a_long_prompt_in_chinese(closed_folder, tmp_path, capfd):
    prompt = "a zebra " + "circle " * 80
    argv = ["figures", "--model", str(closed_folder), "--prompt", prompt]
    assert main([*argv, "--lang", "zh", "--out", str(tmp_path / "zh")]) == 1
    err = capfd.readouterr().err
    pipe = sdviz.load(str(closed_folder))
    assert f"注意：{vocabulary_notice(pipe, prompt, 'zh')}" in err
    assert f"{truncation_notice(pipe.tokenizer, prompt, 'zh')}。sdviz figures 要为" in err
    assert "请缩短提示词。" in err and "shorten" not in err
    assert main([*argv, "--out", str(tmp_path / "en")]) == 1
    english = "sdviz figures draws every word of the prompt, so it stops here: shorten the prompt."
    assert f"{truncation_notice(pipe.tokenizer, prompt, 'en')}. {english}" in capfd.readouterr().err
    assert not (tmp_path / "zh").exists() and not (tmp_path / "en").exists()


def test_model_description_in_chinese():
    from sdviz.pipeline import EMBEDDED_MODEL, TINY

    embedded = SimpleNamespace(config={"_name_or_path": str(EMBEDDED_MODEL)})
    built = SimpleNamespace(config={})
    assert model_description(None, embedded) == f"embedded sdviz-mini ({EMBEDDED_MODEL})"
    assert model_description(None, embedded, "zh") == f"内置的 sdviz-mini（{EMBEDDED_MODEL}）"
    assert model_description(None, built) == f"{TINY} (the random tiny pipeline built in code)"
    assert model_description(None, built, "zh") == f"{TINY}（用代码构建、权重随机的微型流水线）"
    flux = model_description("sdviz-tiny-flux", built, "zh")
    assert flux.startswith("sdviz-tiny-flux（") and CJK.search(flux)
    folder = SimpleNamespace(config={"_name_or_path": "/models/mine"})
    assert model_description("/models/mine", folder, "zh") == "/models/mine"  # a path as is
