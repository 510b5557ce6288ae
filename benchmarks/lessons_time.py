"""How long each lesson takes to run headless, against the course's budget.

The bars: in smoke mode (SDVIZ_SMOKE=1, what the tests run) each lesson runs in 75 s on
a 2-core CPU with the embedded sdviz-mini, all of them together in 75 s each; in full
mode (`--full`, what a learner runs) each lesson in 120 s, counted in the kernel's CPU time with one torch thread
(OMP_NUM_THREADS=1). With one thread that is the wall time on an idle machine, and unlike
the wall time it does not grow when other jobs starve the kernel of CPU. Each lesson is
executed as `tests/test_lessons.py` executes it (`sdviz.course.execute`, SDVIZ_SMOKE=1),
one at a time, and a table printed: lesson, kernel CPU s, wall s, budget s, within it.
The browser test (`tests/test_browser.py`) prints the CPU time of its run too (it was
held to 180 s for two lessons in JupyterLab, Chromium included).

    python benchmarks/lessons_time.py                  # every lesson
    python benchmarks/lessons_time.py 04 07            # the lessons whose names start so
    python benchmarks/lessons_time.py --model FOLDER   # another model (the budget is
                                                       # sdviz-mini's: shown, not judged)
    python benchmarks/lessons_time.py --full           # full mode: a learner's run
    python benchmarks/lessons_time.py --figures DIR    # also write every picture shown,
                                                       # DIR/<lesson>/NN.png, to look at

Exit status 1 when a lesson fails to run, or with sdviz-mini goes over its budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from sdviz.course import execute

LESSONS_DIR = Path(__file__).resolve().parents[1] / "lessons"
PER_LESSON_BUDGET_S = 75.0  # kernel CPU seconds per lesson; a set of lessons: 75 s each
FULL_LESSON_BUDGET_S = 120.0  # the same in full mode (issue 18: "each lesson <= 2 minutes")


def lessons(prefixes: list[str]) -> list[Path]:
    found = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def write_pictures(done, folder: Path) -> int:
    """Every PNG a lesson showed, in order, as folder/NN.png; how many."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    pngs = [o["data"]["image/png"] for o in done.outputs if "image/png" in o.get("data", {})]
    for i, data in enumerate(pngs):
        (folder / f"{i:02d}.png").write_bytes(base64.b64decode(data))
    return len(pngs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="file name prefixes, e.g. 04 (default: all)")
    parser.add_argument("--model", default=None, help="SDVIZ_MODEL: a folder or hub id")
    parser.add_argument("--cell-timeout", type=float, default=300.0, help="seconds per cell")
    parser.add_argument("--full", action="store_true", help="full mode, not SDVIZ_SMOKE=1")
    parser.add_argument("--figures", type=Path, default=None, help="write the pictures here")
    args = parser.parse_args(argv)
    budget_s = FULL_LESSON_BUDGET_S if args.full else PER_LESSON_BUDGET_S
    paths = lessons(args.lessons)
    if not paths:
        parser.error(f"no lesson in {LESSONS_DIR} starts with {args.lessons}")

    # The kernel inherits this environment: smoke mode or not, one torch thread, the model.
    os.environ.update(OMP_NUM_THREADS="1")
    if args.full:
        os.environ.pop("SDVIZ_SMOKE", None)
    else:
        os.environ["SDVIZ_SMOKE"] = "1"
    os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="sdviz-mpl-")
    if args.model:
        os.environ["SDVIZ_MODEL"] = args.model
    else:
        os.environ.pop("SDVIZ_MODEL", None)
    judged = args.model is None

    mode = "full mode" if args.full else "smoke mode"
    print(
        f"{'lesson (' + mode + ')':<28} {'CPU s':>7} {'wall s':>7} {'budget s':>9}  within budget?"
    )
    failed, over, total_cpu, total_wall = [], [], 0.0, 0.0
    for path in paths:
        try:
            done = execute(path, cell_timeout_s=args.cell_timeout)
        except Exception as err:  # a cell raised or timed out: the lesson does not run
            failed.append(path.name)
            print(f"{path.name:<28} {'-':>7} {'-':>7} {budget_s:9.0f}  FAILED", end="")
            print(f" ({type(err).__name__}: {str(err).strip().splitlines()[-1][:80]})", flush=True)
            continue
        total_cpu, total_wall = total_cpu + done.cpu_s, total_wall + done.wall_s
        if args.figures is not None:
            write_pictures(done, args.figures / path.stem)
        if not judged:
            verdict = "not judged (another model)"
        elif done.cpu_s <= budget_s:
            verdict = "yes"
        else:
            over.append(path.name)
            verdict = "NO"
        print(
            f"{path.name:<28} {done.cpu_s:7.1f} {done.wall_s:7.1f} {budget_s:9.0f}  {verdict}",
            flush=True,
        )
    if len(paths) > 1 and not failed:
        budget = budget_s * len(paths)
        within = "yes" if total_cpu <= budget else "NO"
        print(
            f"{'all ' + str(len(paths)):<28} {total_cpu:7.1f} {total_wall:7.1f} "
            f"{budget:9.0f}  {within if judged else 'not judged (another model)'}"
        )
    n_all = len(lessons([]))
    print(
        "CPU s: the kernel's CPU time (one torch thread); wall s: as measured on this "
        f"machine now; budget ({mode}): {budget_s:.0f} s a lesson, "
        f"{budget_s * n_all:.0f} s for all {n_all}, sdviz-mini on a 2-core CPU."
    )
    return 1 if failed or (judged and over) else 0


if __name__ == "__main__":
    sys.exit(main())
