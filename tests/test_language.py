"""sdviz.language: the course language, the glossary and every module's Chinese strings.

Every `Texts` table of sdviz.figures and sdviz.widgets is checked against the glossary
(each glossary term of an English template has its one Chinese form in the Chinese
template, no avoided alternate anywhere) and against the fonts (every character of every
Chinese template is in Noto Sans SC or DejaVu Sans, so nothing can be drawn as a box).
Chinese figures are drawn for real: no missing-glyph warning, Chinese text objects, and
English figures' bytes untouched by them.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import string
import sys
import unicodedata

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

import sdviz
from sdviz import language
from sdviz.language import AVOID, GLOSSARY, LANGUAGES, REGISTRY, SHORT_FORMS, Texts

# every module of sdviz (but the training recipe's, which speaks no course language), so
# that every Texts table is registered: probes' tables, figures, widgets, course, commands
for _info in pkgutil.walk_packages(sdviz.__path__, "sdviz."):
    if not _info.name.startswith(("sdviz.training", "sdviz.lab")):
        importlib.import_module(_info.name)

TABLES = sorted(REGISTRY.items())
EN, ZH = LANGUAGES.index("en"), LANGUAGES.index("zh")


def literal(template: str) -> str:
    """A template's text with its {fields} replaced by a separator (a field is no word)."""
    return "\x00".join(text for text, *_ in string.Formatter().parse(template))


def glossary_terms(english: str) -> list[tuple[str, set[str]]]:
    """(the term as written, the Chinese forms that translate it) for each glossary term in
    `english`: whole words, case-insensitive, a plural 's' allowed, the longest term first
    and each character counted once ("latent space" is not also "latent"); code such as
    `images=` or `sdviz.figures` is no word."""
    text = literal(english).lower()
    taken = [False] * len(text)
    found = []
    for key in sorted(GLOSSARY, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w.-]){re.escape(key)}s?(?![\w=-])", text):
            if any(taken[m.start() : m.end()]):
                continue
            taken[m.start() : m.end()] = [True] * (m.end() - m.start())
            word = m.group(0)
            keys = [k for k in (word, word[:-1]) if k in GLOSSARY]  # "steps": 步数 or 步
            forms = {GLOSSARY[k] for k in keys} | {SHORT_FORMS[k] for k in keys if k in SHORT_FORMS}
            found.append((word, forms))
    return found


def test_the_term_matcher_takes_longest_terms_whole_words_and_plurals():
    terms = dict(glossary_terms("Latent space of the noisy latents at step {step}"))
    assert terms == {
        "latent space": {"潜在空间"},
        "noisy latents": {"含噪潜在表示"},
        "step": {"步"},
    }
    assert dict(glossary_terms("Steps"))["steps"] == {"步数", "步"}
    assert glossary_terms("stepsize {noise}") == []  # no word inside a word or a field
    assert glossary_terms("pass images= to sdviz.figures") == []  # code
    assert dict(glossary_terms("VAE-decoded x_t"))["vae-decoded"] == {"经 VAE 解码"}


def test_glossary_and_avoid_list_are_consistent():
    assert all(key == key.lower() and key.strip() == key for key in GLOSSARY)
    assert set(SHORT_FORMS) <= set(GLOSSARY)
    for alternate, term in AVOID.items():
        assert term in GLOSSARY.values() or term in SHORT_FORMS.values(), term
        clashes = [zh for zh in GLOSSARY.values() if alternate in zh]
        assert not clashes, f"avoided {alternate!r} is inside glossary terms {clashes}"
    assert GLOSSARY["token"] == "标记" and "词元" in AVOID  # the seed article's 标记嵌入


@pytest.mark.parametrize("module, texts", TABLES, ids=[name for name, _ in TABLES])
def test_chinese_templates_use_the_glossary(module, texts):
    wrong = []
    for key, templates in texts.table.items():
        zh = templates[ZH]
        for word, forms in glossary_terms(templates[EN]):
            if not any(form in zh for form in forms):
                wrong.append(f"{key}: {word!r} should be {' or '.join(sorted(forms))} in {zh!r}")
        wrong += [
            f"{key}: {alternate!r} in {zh!r}, write {term!r}"
            for alternate, term in AVOID.items()
            if alternate in zh
        ]
    assert not wrong, f"{module}:\n" + "\n".join(wrong)


def _charmap(path) -> set[int]:
    return set(FT2Font(str(path)).get_charmap())


def test_every_chinese_character_is_in_the_fonts():
    """Glyph coverage: what neither font has would be drawn as a box."""
    covered = _charmap(language.cjk_font_path()) | _charmap(
        font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    )
    strings = [(f"{name}:{key}", t[ZH]) for name, texts in TABLES for key, t in texts.table.items()]
    strings += [(f"GLOSSARY:{key}", zh) for key, zh in GLOSSARY.items()]
    strings += [(f"SHORT_FORMS:{key}", zh) for key, zh in SHORT_FORMS.items()]
    missing = {
        f"{ch!r} U+{ord(ch):04X} {unicodedata.name(ch, '?')} ({where})"
        for where, text in strings
        for ch in literal(text)
        if ord(ch) >= 32 and ord(ch) not in covered
    }
    assert not missing, sorted(missing)
    assert any("\u4e00" <= ch <= "\u9fff" for _, text in strings for ch in text)


def test_texts_check_their_templates():
    t = Texts("tests.language_sample", {"title": ("Step {step} of {n}", "第 {step} 步，共 {n} 步")})
    assert t("title", "zh", step=3, n=5) == "第 3 步，共 5 步"
    assert t("title", "en", step=3, n=5) == "Step 3 of 5"
    assert t("title", "zh", step=3, n=5).english == "Step 3 of 5"  # a Term
    assert type(t("title", "en", step=3, n=5)) is str  # English: plain str, as before
    assert t.get("title", "zh", "?", step=3, n=5) == "第 3 步，共 5 步"
    assert t.get("sdviz-mini", "zh", "sdviz-mini") == "sdviz-mini"  # not in the table: default
    assert language.pad("步数", 6) == "步数  " and language.pad("12", 4, right=True) == "  12"
    assert REGISTRY.pop("tests.language_sample") is t
    with pytest.raises(ValueError, match="different fields"):
        Texts("tests.bad", {"title": ("Step {step}", "第 步")})
    with pytest.raises(ValueError, match="one template per language"):
        Texts("tests.bad", {"title": ("Step",)})
    with pytest.raises(KeyError, match="has no text 'subtitle'"):
        t("subtitle", "en")
    with pytest.raises(ValueError, match="en, zh"):
        t("title", "fr", step=1, n=1)
    assert "tests.bad" not in REGISTRY


def test_course_language_argument_environment_marker_default(monkeypatch, tmp_path):
    monkeypatch.delenv(language.LANG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert language.course_language() == "en"
    (tmp_path / language.LANG_FILE).write_text("zh\n", encoding="utf-8")
    assert language.course_language() == "zh"  # a lessons/zh/ kernel
    assert language.course_language("en") == "en"  # the argument wins
    monkeypatch.setenv(language.LANG_ENV, "en")
    assert language.course_language() == "en"  # the environment beats the marker
    assert language.course_language("zh") == "zh"
    with pytest.raises(ValueError, match="'fr'.*en, zh"):
        language.course_language("fr")
    monkeypatch.setenv(language.LANG_ENV, "chinese")
    with pytest.raises(ValueError, match=language.LANG_ENV):
        language.course_language()
    monkeypatch.delenv(language.LANG_ENV)
    (tmp_path / language.LANG_FILE).write_text("de", encoding="utf-8")
    with pytest.raises(ValueError, match=language.LANG_FILE):
        language.course_language()


def test_the_font_lookup_teaches_when_there_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pylopdf_fonts_zh_cn", None)  # import fails
    monkeypatch.setattr(language, "CJK_FAMILIES", ("No Such CJK Font",))
    with pytest.raises(ModuleNotFoundError, match="pip install pylopdf-fonts-zh-cn"):
        language.cjk_font_path()


def test_drawing_english_changes_nothing_and_chinese_puts_dejavu_first():
    before = dict(matplotlib.rcParams)
    with language.drawing("en"):
        assert dict(matplotlib.rcParams) == before
    with language.drawing("zh"):
        family = matplotlib.rcParams["font.family"]
        assert family[0] == "DejaVu Sans" and family[1] == language.cjk_family()
    assert dict(matplotlib.rcParams) == before


def test_every_converted_module_is_registered():
    for name in ("overview", "schedule", "noising", "denoising", "training", "curves", "style"):
        assert f"sdviz.figures.{name}" in REGISTRY  # filled as the modules are imported
    for name in ("sdviz.probes.unet", "sdviz.course.tables", "sdviz.widgets.prompt"):
        assert name in REGISTRY  # tables and widgets speak the course language too
    assert all(isinstance(t, Texts) and t.module == name for name, t in REGISTRY.items())


def test_wrap_breaks_chinese_by_width_and_english_as_textwrap():
    from textwrap import fill

    from sdviz.figures.style import text_width, wrap

    english = "Denoising 'a red circle left of a blue square': 25 steps, numbered 0…24"
    assert wrap(english, 30) == fill(english, 30)
    chinese = "前向加噪 x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε，在像素空间（3×64×64）和潜在空间（4×8×8）中"
    lines = wrap(chinese, 40).split("\n")
    assert "".join(lines).replace(" ", "") == chinese.replace(" ", "")
    assert len(lines) > 1 and all(text_width(line) <= 40 for line in lines)
    assert not any(line[0] in "，。）" or line[-1] in "（" for line in lines)
    # a line ends after a comma in its last third rather than mid-word (平|均)
    sentence = "每一步的平均注意力图：名词落在它的物体上，颜色词在所有位置上几乎一样平均"
    assert wrap(sentence, 30).split("\n") == [
        "每一步的平均注意力图：",
        "名词落在它的物体上，",
        "颜色词在所有位置上几乎一样平均",
    ]
    assert wrap("第 4 课：去噪（25 步，引导系数 2）", 30) == "第 4 课：去噪（25 步，\n引导系数 2）"


# --- Chinese figures drawn for real (tiny pipeline built in code) ---------------------------


@pytest.fixture(scope="module")
def tiny():
    import torch

    import sdviz
    from sdviz import probes
    from sdviz.builder import tiny_pipeline

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    run = sdviz.generate(pipe, "a red circle", steps=3, seed=0, attention=None)
    noised = probes.noised_images(pipe, run, timesteps=[0, 999])
    example = probes.noise_predictions(pipe, run, t=500, timesteps=[100, 500, 900])
    yield pipe, run, noised, example
    torch.set_num_threads(before)


def _chinese_figures(pipe, run, noised, example) -> dict:
    from sdviz import figures

    return {
        "sdviz.figures.overview": lambda lang: figures.components(pipe, run, lang=lang),
        "sdviz.figures.schedule": lambda lang: figures.noise_schedule(pipe, "euler", lang=lang),
        "sdviz.figures.noising": lambda lang: figures.forward_noising(noised, lang=lang),
        "sdviz.figures.training": lambda lang: figures.training_example(example, lang=lang),
        "sdviz.figures.denoising": lambda lang: figures.denoising_filmstrip(run, lang=lang),
        "sdviz.figures.curves": lambda lang: figures.training_curves(
            [1.0, 0.5], {"a": [0.2, 0.6]}, lang=lang
        ),
    }


def _texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_text().strip()]


def test_chinese_figures_draw_every_glyph_in_chinese(tiny):
    import warnings

    from sdviz.figures.style import to_png

    family = language.cjk_family()
    for module, draw in _chinese_figures(*tiny).items():
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*missing from font")
            fig = draw("zh")
            png = to_png(fig)  # drawn outside the figure function, as Jupyter shows it
        assert png.startswith(b"\x89PNG")
        texts = _texts(fig)
        chinese = [t for t in texts if re.search("[\u4e00-\u9fff]", t.get_text())]
        assert chinese, f"{module}: no Chinese text"
        for t in chinese:  # each Chinese text carries the CJK font behind DejaVu Sans
            assert t.get_fontfamily()[:2] == ["DejaVu Sans", family], (module, t.get_text())
        english = {  # no whole English sentence of this module is left on the figure
            en
            for en, zh in (t[EN : ZH + 1] for t in REGISTRY[module].table.values())
            if en != zh and not _fields_of(en) and " " in en
        }
        left = [t.get_text() for t in texts if t.get_text() in english]
        assert not left, f"{module} draws English in Chinese: {left}"


def _fields_of(template: str) -> set:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def test_a_chinese_figure_shows_its_chinese_templates(tiny):
    from sdviz.figures import schedule

    pipe, *_ = tiny
    fig = sdviz.figures.noise_schedule(pipe, lang="zh")
    assert fig.get_suptitle() == schedule.T("suptitle", "zh") == "训练时间步 t 上的噪声调度"
    titles = [ax.get_title() for ax in fig.axes]
    assert schedule.T("strip_title", "zh") in titles
    assert all(ax.get_xlabel() == "时间步 t" for ax in fig.axes)


def test_english_bytes_do_not_change_after_a_chinese_figure(tiny, monkeypatch, tmp_path):
    from sdviz.figures.style import to_png

    monkeypatch.delenv(language.LANG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no sdviz-lang.txt: lang=None is English

    draws = _chinese_figures(*tiny)
    before = {m: to_png(draws[m]("en")) for m in ("sdviz.figures.curves", "sdviz.figures.overview")}
    for module in before:  # the same figures in Chinese, drawn between the English ones
        to_png(draws[module]("zh"))
    after = {m: to_png(draws[m]("en")) for m in before}
    assert after == before
    assert to_png(draws["sdviz.figures.curves"](None)) == before["sdviz.figures.curves"]


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_chinese_figure_files_are_reproducible(tmp_path, fmt):
    import warnings

    from sdviz.figures import training_curves
    from sdviz.figures.style import save

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")
        files = [
            save(training_curves([1.0, 0.5], {"a": [0.1, 0.9]}, lang="zh"), tmp_path / f"{i}.{fmt}")
            for i in range(2)
        ]
    assert files[0].read_bytes() == files[1].read_bytes()
