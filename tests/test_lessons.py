"""The lessons: their form (static checks) and that each one runs headless in smoke mode.

Every lesson is a jupytext percent-format `.py` file in `lessons/`. It is read with
jupytext and executed with nbclient on the installed `python3` kernel, with
`SDVIZ_SMOKE=1` (shorter loops and training runs; same narrative). Static rules:
lessons define no logic (no def/class/lambda, no loops, no if/try statements: logic
lives in sdviz), no `.ipynb` is tracked by git, each has a kernelspec header, one
setup cell that picks the model, and ends with a recap with exercises.
"""

from __future__ import annotations

import ast
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
IDS = [p.stem for p in LESSONS]

# All eight lessons together must run in <= 10 minutes on a 2-core CPU: 75 s each
# (kernel CPU time, one torch thread; see test_lesson_runs_in_smoke_mode).
PER_LESSON_BUDGET_S = 75.0
CELL_TIMEOUT_S = 300

# Statements and expressions that are logic, not narrative: they belong in sdviz.
FORBIDDEN_NODES = {
    ast.FunctionDef: "a function definition (def)",
    ast.AsyncFunctionDef: "a function definition (async def)",
    ast.ClassDef: "a class definition",
    ast.Lambda: "a lambda",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
    ast.If: "an if statement (use a conditional expression `a if cond else b`)",
    ast.Try: "a try statement",
    ast.Global: "a global statement",
}
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


def test_there_are_eight_lessons():
    numbers = [p.name[:2] for p in LESSONS]
    assert numbers == [f"{i:02d}" for i in range(1, 9)], numbers


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


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_form(path: Path):
    nb = _notebook(path)
    meta = nb.metadata
    assert meta.get("kernelspec", {}).get("name") == "python3", "kernelspec python3 missing"
    assert meta["jupytext"]["text_representation"]["format_name"] == "percent"

    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(
        f"# Lesson {int(path.name[:2])}"
    ), "a lesson starts with a markdown title '# Lesson N — ...'"

    last = nb.cells[-1]
    assert last.cell_type == "markdown", "a lesson ends with a markdown recap"
    assert re.search(r"^#+ .*Recap", last.source, re.M), "the last cell needs a Recap heading"
    exercises = last.source.split("Exercises", 1)
    assert len(exercises) == 2, "the recap needs an Exercises section"
    n_ex = len(re.findall(r"^\s*\d+\.\s", exercises[1], re.M))
    assert 2 <= n_ex <= 3, f"2-3 numbered exercises expected, found {n_ex}"

    code = _code_cells(nb)
    setup = [i for i, src in enumerate(code) if "sdviz.load(" in src]
    assert setup == [0], "exactly one setup cell, the first code cell, calls sdviz.load(MODEL)"
    assert 'os.environ.get("SDVIZ_MODEL")' in code[0], "the setup cell reads SDVIZ_MODEL"
    assert 'os.environ.get("SDVIZ_SMOKE")' in code[0], "the setup cell reads SDVIZ_SMOKE"
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in code[0], "hub id example missing"
    for src in code[1:]:
        assert "os.environ" not in src, "only the setup cell reads the environment"


@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_defines_no_logic(path: Path):
    problems = []
    for n, src in enumerate(_code_cells(_notebook(path))):
        for pattern, what in FORBIDDEN_TEXT.items():
            if re.search(pattern, src, re.M):
                problems.append(f"code cell {n}: {what}")
        python = TransformerManager().transform_cell(src)  # magics -> get_ipython() calls
        for node in ast.walk(ast.parse(python)):
            for kind, what in FORBIDDEN_NODES.items():
                if isinstance(node, kind):
                    problems.append(f"code cell {n}, line {node.lineno}: {what}")
    assert not problems, "lessons call sdviz; move logic into the package:\n" + "\n".join(problems)


def test_logic_rule_catches_a_def(tmp_path: Path):
    """The AST rule itself: a lesson with a helper function is rejected."""
    src = "def helper(x):\n    return x + 1\n"
    kinds = {type(n) for n in ast.walk(ast.parse(src))}
    assert ast.FunctionDef in kinds and ast.FunctionDef in FORBIDDEN_NODES


def _execute(path: Path) -> tuple[object, float, float]:
    """Run the lesson's notebook; (executed notebook, wall seconds, kernel CPU seconds)."""
    from nbclient import NotebookClient

    nb = _notebook(path)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down (reaped)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return nb, wall, cpu


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=IDS)
def test_lesson_runs_in_smoke_mode(path: Path, monkeypatch, tmp_path: Path):
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
    nb, wall, cpu = _execute(path)
    print(f"\n{path.name}: smoke mode, {wall:.1f} s wall, {cpu:.1f} s kernel CPU")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "a lesson shows at least one figure"
    # The budget is for the embedded model on a CPU, in the kernel's CPU time: with one
    # torch thread that is the wall time on an idle 2-core machine, and it does not
    # grow when other jobs (a training run, other tests) starve the kernel of CPU.
    if not model:
        assert cpu < PER_LESSON_BUDGET_S, f"{path.name} used {cpu:.0f} s of CPU in smoke mode"
