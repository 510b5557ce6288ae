"""The Chinese lessons (`lessons/zh/`, issue 21): twins of the English ones, kept in step.

Every English lesson `lessons/NN_name.py` has a twin `lessons/zh/NN_name.py` and every
twin an English lesson. A twin has the same cells in the same order: each code cell
byte-identical to the English one (the code, its comments and the English labels it
prints stay as they are; a test can then guarantee both run the same thing), each
markdown cell a translation of the English one (so it holds Chinese, and never one of
`sdviz.language.AVOID`'s alternates of a glossary term). Its headings follow the Chinese
form (`tests/test_lessons.py`'s FORM_WORDS["zh"]: 第 N 课 title, 自测 before 小结, 小结
last with 练习). Each twin runs headless in smoke mode like the English lessons, its
kernel in lessons/zh/, whose `sdviz-lang.txt` makes `lang=None` Chinese: the setup cell
then prints the Chinese `Lesson` table, which the test checks.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import jupytext
import pytest
from test_lessons import LESSONS, LESSONS_DIR, form_problems, smoke_run

from sdviz.language import AVOID, LANG_FILE, course_language

ZH_DIR = LESSONS_DIR / "zh"
TWINS = sorted(ZH_DIR.glob("[0-9][0-9]_*.py"))
TWIN_IDS = [p.stem for p in TWINS]
CJK = re.compile(r"[\u4e00-\u9fff]")  # CJK unified ideographs: the cell is written in Chinese
CHINESE_SETUP = "课程设置："  # how the setup cell's printout (sdviz.course.Lesson) starts in zh


def _english(twin: Path) -> Path:
    return LESSONS_DIR / twin.name


def _first_difference(a: str, b: str) -> str:
    """The first line where `b` (the twin's) differs from `a` (the English one)."""
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), start=1):
        if x != y:
            return f"line {n}: English {x!r}, twin {y!r}"
    diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0))
    return "\n".join(diff[2:6]) or "they differ only in whitespace at the end"


def test_every_lesson_has_a_twin_and_every_twin_a_lesson():
    english = {p.name for p in LESSONS}
    chinese = {p.name for p in TWINS}
    assert not english - chinese, f"English lessons without a Chinese twin in {ZH_DIR}: " + (
        ", ".join(sorted(english - chinese))
    )
    assert not chinese - english, "Chinese lessons without an English lesson: " + (
        ", ".join(sorted(chinese - english))
    )


def test_the_chinese_folder_says_its_language(monkeypatch):
    assert (ZH_DIR / LANG_FILE).read_text(encoding="utf-8").strip() == "zh"
    monkeypatch.delenv("SDVIZ_LANG", raising=False)
    monkeypatch.chdir(ZH_DIR)  # where Jupyter (and sdviz.course.execute) runs its kernels
    assert course_language() == "zh"
    monkeypatch.chdir(LESSONS_DIR)
    assert course_language() == "en"


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_twin_has_the_same_cells_and_identical_code(twin: Path):
    english, chinese = jupytext.read(_english(twin)), jupytext.read(twin)
    kinds_en = [c.cell_type for c in english.cells]
    kinds_zh = [c.cell_type for c in chinese.cells]
    assert len(kinds_zh) == len(kinds_en), (
        f"{twin.name}: {len(kinds_zh)} cells, the English lesson has {len(kinds_en)}: "
        "each English cell needs exactly one Chinese cell"
    )
    assert kinds_zh == kinds_en, (
        f"{twin.name}: cell {_first_mismatch(kinds_en, kinds_zh)} is a "
        + ("different kind of cell than in the English lesson (markdown/code, 1:1 in order)")
    )
    wrong = [
        f"cell {i}: {_first_difference(en.source, zh.source)}"
        for i, (en, zh) in enumerate(zip(english.cells, chinese.cells, strict=True))
        if en.cell_type == "code" and en.source != zh.source
    ]
    assert not wrong, (
        f"{twin.name}: code cells must be byte-identical to {_english(twin).name}'s "
        "(change the English lesson and copy the cell):\n" + "\n".join(wrong)
    )


def _first_mismatch(a: list[str], b: list[str]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_twin_markdown_is_chinese_with_the_glossarys_terms(twin: Path):
    wrong = []
    for i, cell in enumerate(jupytext.read(twin).cells):
        if cell.cell_type != "markdown":
            continue
        if not CJK.search(cell.source):
            wrong.append(f"cell {i} has no Chinese: {cell.source[:60]!r}")
        wrong += [
            f"cell {i}: {alternate!r} (write {term!r}, sdviz.language.GLOSSARY)"
            for alternate, term in AVOID.items()
            if alternate in cell.source
        ]
    assert not wrong, f"{twin.name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_twin_form(twin: Path):
    problems = form_problems(jupytext.read(twin), int(twin.name[:2]), "zh")
    assert not problems, f"{twin.name}:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("twin", TWINS, ids=TWIN_IDS)
def test_twin_runs_in_smoke_mode_in_chinese(twin: Path, monkeypatch, tmp_path: Path):
    done = smoke_run(twin, monkeypatch, tmp_path)
    assert not done.errors, done.errors
    assert done.figures, "a lesson shows at least one figure"
    setup = next(c for c in done.notebook.cells if c.cell_type == "code")
    results = [o for o in setup.get("outputs", []) if o.output_type == "execute_result"]
    shown = "".join(o.data.get("text/plain", "") for o in results)  # the cell's `lesson`
    assert shown.startswith(CHINESE_SETUP), (
        f"the setup cell ran in English: its kernel did not find {ZH_DIR / LANG_FILE} "
        f"(was its working folder lessons/zh?):\n{shown[:200]}"
    )
