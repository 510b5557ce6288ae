"""The lessons: their form (static checks) and that each one runs headless in smoke mode.

Every lesson is a jupytext percent-format `.py` file in `lessons/`. It is read with
jupytext and executed with nbclient on the installed `python3` kernel, with
`SDVIZ_SMOKE=1` (shorter loops and training runs; same narrative). Static rules:
lessons define no logic (no def/class/lambda, no loops, no if/try statements, no
comprehensions or conditional expressions: logic lives in sdviz; the one exception is
`SAMPLING_LOOP_LESSON`, whose subject is the loop itself), no `.ipynb` is tracked by git,
each has a kernelspec header, one setup cell whose one call is `sdviz.course.setup(MODEL)`,
and ends with a recap with exercises. How long each lesson takes is measured by
`benchmarks/lessons_time.py`, not asserted here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in LESSONS]

CELL_TIMEOUT_S = 300

SETUP_CALL = "sdviz.course.setup(MODEL)"  # the setup cell's one call
HUB_EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # named in the setup comment

# The lesson whose subject *is* the sampling loop: it writes that loop by hand, so it alone
# may hold `for` loops and comprehensions. Nothing else. (tests/test_sampling_loop.py runs
# its loop and checks that it reproduces the pipeline's image bit for bit.)
SAMPLING_LOOP_LESSON = "09_sampling_loop.py"

# Statements and expressions that are logic, not narrative: they belong in sdviz.
FORBIDDEN_NODES = {
    ast.FunctionDef: "a function definition (def)",
    ast.AsyncFunctionDef: "a function definition (async def)",
    ast.ClassDef: "a class definition",
    ast.Lambda: "a lambda",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
    ast.If: "an if statement",
    ast.Try: "a try statement",
    ast.Global: "a global statement",
    ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.IfExp: "a conditional expression (a if c else b)",
}
# What the sampling-loop lesson may write (its subject is the loop).
SAMPLING_LOOP_ALLOWS = (ast.For, ast.ListComp, ast.GeneratorExp)
ALLOWED_MAGIC = "%matplotlib inline"  # figures are plain Figures: this displays them
FORBIDDEN_TEXT = {
    r"^\s*[!%]+\s*(pip|conda|uv)\b": "a package install",
    r"^\s*!": "a shell escape",
    r"^\s*%(?!matplotlib inline\s*$)": f"an IPython magic other than {ALLOWED_MAGIC!r}",
    r"notebook_login|huggingface_hub|\blogin\(": "a hub login",
    r"\bexec\(|\beval\(": "exec/eval",
}


def _notebook(path: Path):
    return jupytext.read(path)


def _code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_there_are_ten_lessons():
    numbers = [p.name[:2] for p in LESSONS]
    assert numbers == [f"{i:02d}" for i in range(1, 11)], numbers
    assert (LESSONS_DIR / SAMPLING_LOOP_LESSON) in LESSONS, (
        "the sampling-loop lesson is one of them"
    )


def test_no_ipynb_is_tracked_by_git():
    out = subprocess.run(
        ["git", "ls-files", "*.ipynb", "**/*.ipynb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [], f"notebooks must be jupytext .py files; tracked .ipynb: {out}"


def test_jupyterlab_opens_py_lessons_as_notebooks():
    import json

    from sdviz.lab import CONFIG_DIR, lab_env

    overrides = json.loads(
        (CONFIG_DIR / "labconfig" / "default_setting_overrides.json").read_text()
    )
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"
    env = lab_env({"JUPYTER_CONFIG_PATH": "/elsewhere"})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(CONFIG_DIR), "/elsewhere"]
    # jupyterlab_server reads <config path>/labconfig/default_setting_overrides.json
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jupyterlab_server.settings_utils import _get_overrides as g;"
            "import json; print(json.dumps(g('/nonexistent')[0]))",
        ],
        env=lab_env(dict(os.environ)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = json.loads(out)["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert seen["python"] == "Jupytext Notebook"


# The words of a lesson's form in each language (sdviz.language.GLOSSARY: lesson 课,
# check yourself 自测, recap 小结, exercises 练习): the title starts with `title`, a
# `check` heading comes before the last cell, which is the `recap` with `exercises`.
FORM_WORDS = {
    "en": {"title": "# Lesson {n}", "check": "Check yourself", "recap": "Recap",
           "exercises": "Exercises"},
    "zh": {"title": "# 第 {n} 课", "check": "自测", "recap": "小结", "exercises": "练习"},
}  # fmt: skip


def _heading(word: str) -> re.Pattern:
    return re.compile(rf"^#+ .*{re.escape(word)}", re.M)


def form_problems(nb, number: int, lang: str = "en") -> list[str]:
    """What keeps lesson `number` (a jupytext notebook) from the course's form in `lang`:
    kernelspec and percent format, the title, a self-check before the recap, the recap
    last with 2-3 numbered exercises, one setup cell, and no other cell setting up."""
    words, problems = FORM_WORDS[lang], []
    meta = nb.metadata
    if meta.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernelspec python3 missing")
    if meta["jupytext"]["text_representation"]["format_name"] != "percent":
        problems.append("not in jupytext's percent format")

    title = words["title"].format(n=number)
    first = nb.cells[0]
    if not (first.cell_type == "markdown" and first.source.startswith(title)):
        problems.append(f"a lesson starts with a markdown title {title!r}...")

    last = nb.cells[-1]
    if last.cell_type != "markdown" or not _heading(words["recap"]).search(last.source):
        problems.append(f"the last cell must be markdown with a {words['recap']!r} heading")
    checks = [i for i, c in enumerate(nb.cells[:-1]) if _heading(words["check"]).search(c.source)]
    if not checks or nb.cells[checks[0]].cell_type != "markdown":
        problems.append(f"a {words['check']!r} heading must come before the recap")
    exercises = _heading(words["exercises"]).split(last.source, maxsplit=1)
    if len(exercises) != 2:
        problems.append(f"the recap needs an {words['exercises']!r} heading")
    else:
        n_ex = len(re.findall(r"^\s*\d+\.\s", exercises[1], re.M))
        if not 2 <= n_ex <= 3:
            problems.append(f"2-3 numbered exercises expected, found {n_ex}")

    code = _code_cells(nb)
    found = setup_problems(code[0])
    if found:
        problems.append("the first code cell must be the one-line setup:\n" + "\n".join(found))
    for n, src in enumerate(code[1:], start=1):
        if SETUP_CALL in src or "sdviz.load(" in src:
            problems.append(f"code cell {n} sets up again: only the setup cell loads the model")
        if "os.environ" in src:
            problems.append(f"code cell {n} reads the environment (setup does)")
    return problems


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_form(path: Path):
    problems = form_problems(_notebook(path), int(path.name[:2]), "en")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_form_rule_in_each_language():
    """The form rule itself, on a small notebook written in each language's words."""
    for lang, words in FORM_WORDS.items():
        setup = (
            f'# MODEL = "{HUB_EXAMPLE}"\nimport sdviz.course\n\nMODEL = None\n'
            f"lesson = {SETUP_CALL}\n"
        )
        cells = [
            jupytext.reads(f"{words['title'].format(n=3)}: x\n", fmt="md").cells[0],
            *jupytext.reads(f"```python\n{setup}```\n", fmt="md").cells,
            jupytext.reads(f"## {words['check']}\n\n1. ?\n", fmt="md").cells[0],
            jupytext.reads(
                f"## {words['recap']}\n\n### {words['exercises']}\n\n1. a\n2. b\n", fmt="md"
            ).cells[0],
        ]
        nb = jupytext.reads("", fmt="py:percent")
        nb.cells = cells
        nb.metadata["kernelspec"] = {"name": "python3"}
        nb.metadata["jupytext"] = {"text_representation": {"format_name": "percent"}}
        assert form_problems(nb, 3, lang) == [], lang
        assert any("title" in p for p in form_problems(nb, 4, lang)), lang
        other = "zh" if lang == "en" else "en"
        assert len(form_problems(nb, 3, other)) == 4, (lang, form_problems(nb, 3, other))
        nb.cells = [cells[0], cells[1], cells[3], cells[2]]  # the check after the recap
        found = form_problems(nb, 3, lang)
        assert any(f"{words['check']!r} heading must come" in p for p in found), found


def _python(src: str) -> ast.Module:
    return ast.parse(TransformerManager().transform_cell(src))  # magics -> get_ipython()


def _is_magic(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and "get_ipython" in ast.unparse(node)


def setup_problems(src: str) -> list[str]:
    """What keeps a cell from being the one-line setup: imports, `MODEL = <a constant>`,
    one call `lesson = sdviz.course.setup(MODEL)`, names bound to its attributes, the
    `%matplotlib inline` magic, a bare name to show, and a comment naming a hub id."""
    problems = []
    tree = _python(src)
    calls = [
        ast.unparse(n.func)
        for stmt in tree.body
        if not _is_magic(stmt)
        for n in ast.walk(stmt)
        if isinstance(n, ast.Call)
    ]
    if calls != ["sdviz.course.setup"]:
        problems.append(f"its one call must be {SETUP_CALL}; it calls {calls}")
    for stmt in tree.body:
        code = ast.unparse(stmt)
        ok = (
            isinstance(stmt, ast.Import | ast.ImportFrom)
            or _is_magic(stmt)
            or (code.startswith("MODEL = ") and isinstance(stmt.value, ast.Constant))
            or re.fullmatch(r"lesson = sdviz\.course\.setup\(MODEL(, \w+=.+)?\)", code)
            or re.fullmatch(r"\w+ = lesson\.\w+", code)
            or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Name))
        )
        if not ok:
            problems.append(f"line {stmt.lineno}: {code.splitlines()[0]!r} is more than setup")
    if HUB_EXAMPLE not in src:
        problems.append(f"its comment must show how to pick a model, e.g. {HUB_EXAMPLE!r}")
    return problems


def logic_problems(src: str, lesson: str) -> list[str]:
    """The logic a lesson's cell holds (FORBIDDEN_NODES, FORBIDDEN_TEXT); the lesson named
    SAMPLING_LOOP_LESSON may hold SAMPLING_LOOP_ALLOWS."""
    allowed = SAMPLING_LOOP_ALLOWS if lesson == SAMPLING_LOOP_LESSON else ()
    problems = [what for pattern, what in FORBIDDEN_TEXT.items() if re.search(pattern, src, re.M)]
    for node in ast.walk(_python(src)):
        for kind, what in FORBIDDEN_NODES.items():
            if isinstance(node, kind) and not isinstance(node, allowed):
                problems.append(f"line {node.lineno}: {what}")
    return problems


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_defines_no_logic(path: Path):
    problems = [
        f"code cell {n}, {problem}"
        for n, src in enumerate(_code_cells(_notebook(path)))
        for problem in logic_problems(src, path.name)
    ]
    assert not problems, "lessons call sdviz; move logic into the package:\n" + "\n".join(problems)


def test_logic_rule_catches_defs_comprehensions_and_conditionals():
    """The rule itself, on source strings: each kind of logic is found, in any lesson."""
    cases = {
        "def helper(x):\n    return x + 1\n": "a function definition (def)",
        "xs = [x * 2 for x in range(3)]\n": "a list comprehension",
        "d = {k: 1 for k in 'ab'}\n": "a dict comprehension",
        "s = {k for k in 'ab'}\n": "a set comprehension",
        "n = sum(x for x in range(3))\n": "a generator expression",
        "g = 7.5 if MODEL else 3.0\n": "a conditional expression (a if c else b)",
        "for x in range(3):\n    print(x)\n": "a for loop",
        "!pip install sdviz\n": "a package install",
    }
    for src, what in cases.items():
        found = logic_problems(src, "05_latent_space.py")
        assert any(what in p for p in found), (src, found)
    assert logic_problems("run = sdviz.generate(pipe, 'a red circle')\n", "05_x.py") == []


def test_only_the_sampling_loop_lesson_may_write_the_loop():
    """The one exception applies to the file named SAMPLING_LOOP_LESSON, and only to loops
    and comprehensions: elsewhere the same loop is rejected, and there a def still is."""
    loop = (
        "for t in pipe.scheduler.timesteps:\n"
        "    eps = pipe.unet(x, t, encoder_hidden_states=emb).sample\n"
        "    x = pipe.scheduler.step(eps, t, x).prev_sample\n"
        "shown = [float(t) for t in pipe.scheduler.timesteps]\n"
    )
    assert logic_problems(loop, SAMPLING_LOOP_LESSON) == []
    assert len(logic_problems(loop, "04_denoising.py")) == 2
    assert len(logic_problems(loop, "x" + SAMPLING_LOOP_LESSON)) == 2  # the exact name only
    for other in ("def f():\n    pass\n", "g = 1 if a else 2\n", "if a:\n    pass\n"):
        assert logic_problems(other, SAMPLING_LOOP_LESSON), other


def test_setup_rule_wants_the_one_call():
    good = (
        "# MODEL = None: sdviz-mini; or a hub id, e.g.\n"
        f'# MODEL = "{HUB_EXAMPLE}"\n'
        "# %matplotlib inline\n"
        "import sdviz.course\n\n"
        "MODEL = None\n"
        f"lesson = {SETUP_CALL}\n"
        "pipe = lesson.pipe\n"
        "lesson\n"
    )
    assert setup_problems(good) == []
    pasted = good.replace(
        f"lesson = {SETUP_CALL}\n",
        "pipe = sdviz.load(MODEL)\npipe.set_progress_bar_config(disable=True)\n"
        "GUIDANCE = 7.5 if MODEL else 3.0\nlesson = sdviz.course.setup(MODEL)\n",
    )
    found = setup_problems(pasted)
    assert any("its one call" in p for p in found), found
    assert any("GUIDANCE" in p for p in found), found
    assert any("how to pick a model" in p for p in setup_problems(good.replace(HUB_EXAMPLE, "x")))


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_runs_in_smoke_mode(path: Path, monkeypatch, tmp_path: Path):
    done = smoke_run(path, monkeypatch, tmp_path)
    assert not done.errors, done.errors
    assert done.figures, "a lesson shows at least one figure"


def smoke_run(path: Path, monkeypatch, tmp_path: Path):
    """Execute lesson `path` headless in smoke mode (tests/test_lessons_zh.py too); its
    language is its folder's (no SDVIZ_LANG: lessons/zh/ has its sdviz-lang.txt)."""
    from sdviz.course import execute

    monkeypatch.delenv("SDVIZ_LANG", raising=False)
    monkeypatch.setenv("SDVIZ_SMOKE", "1")
    # The embedded model by default; SDVIZ_LESSON_MODEL runs the lessons on another one
    # (the GPU check: a save_pretrained folder of sdviz.sd_architecture("1.5"), fp16 on CUDA).
    model = os.environ.get("SDVIZ_LESSON_MODEL")
    if model:
        monkeypatch.setenv("SDVIZ_MODEL", model)
    else:
        monkeypatch.delenv("SDVIZ_MODEL", raising=False)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    # One torch thread: on a shared 2-core machine two threads per op made the tiny
    # models 10-20x slower (measured: 8 steps 0.27 s with 1 thread, 4.8 s with 2).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    done = execute(path, cell_timeout_s=CELL_TIMEOUT_S)
    # Time is reported, not asserted: benchmarks/lessons_time.py compares it with budgets.
    name = f"{path.parent.name}/{path.name}"
    print(f"\n{name}: smoke mode, {done.wall_s:.1f} s wall, {done.cpu_s:.1f} s kernel CPU")
    return done
