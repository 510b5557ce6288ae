"""A lesson run headless, as the tests and `benchmarks/lessons_time.py` run it:
`execute(path)` runs every cell on a Jupyter kernel and returns an `Execution` (the
executed notebook, its errors and figures, its wall and kernel CPU seconds). The kernel
runs in the lesson's folder, as Jupyter runs a notebook's, so a lesson in `lessons/zh/`
finds that folder's `sdviz-lang.txt` and draws in Chinese (`sdviz.language`)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Execution:
    """A lesson run headless: the executed notebook, its wall and kernel CPU seconds."""

    notebook: Any
    wall_s: float
    cpu_s: float

    @property
    def outputs(self) -> list[Any]:
        return [
            o for c in self.notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
        ]

    @property
    def errors(self) -> list[Any]:
        return [o for o in self.outputs if o.output_type == "error"]

    @property
    def figures(self) -> int:
        """How many PNG images (figures, pictures) the lesson showed."""
        return sum("image/png" in o.get("data", {}) for o in self.outputs)


def execute(path: str | os.PathLike, *, cell_timeout_s: float = 300) -> Execution:
    """Run a lesson (a jupytext .py file) on the `python3` kernel, as a learner's
    "Run All" would, in the environment of this process (set SDVIZ_SMOKE=1 and
    OMP_NUM_THREADS=1 there for the tests' short run), with the lesson's folder as the
    kernel's working folder (Jupyter's own choice). The kernel's CPU time is read
    from the children this process reaped; the kernel is shut down (reaped) at the end.
    Needs nbclient and ipykernel (sdviz's `test` extra)."""
    import jupytext
    from nbclient import NotebookClient

    path = Path(path)
    nb = jupytext.read(path)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=cell_timeout_s,
        resources={"metadata": {"path": str(path.resolve().parent)}},  # the kernel's cwd
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Execution(nb, wall, cpu)
