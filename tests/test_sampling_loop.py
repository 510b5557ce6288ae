"""Lesson 9's hand-written sampling loop reproduces `pipe(...)` bit for bit.

The lesson's own code cells are read with jupytext and run in this process, in order,
as the notebook runs them (smoke mode, the embedded sdviz-mini). The test then calls the
pipeline itself with the lesson's settings and asserts that the loop's image equals it
exactly (`torch.equal`, not a tolerance). So that the comparison can fail, the cells of
the loop (tokenizer to decoder) are run again with one setting changed — guidance, seed,
steps — and must then give another image; with the settings restored, the same one.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
import torch
from IPython.core.inputtransformer2 import TransformerManager

LESSON = Path(__file__).resolve().parents[1] / "lessons" / "09_sampling_loop.py"
FIRST_LOOP_CELL = "tokenizer("  # step 1 of the loop: the first cell that holds it
LAST_LOOP_CELL = "pipe.vae.decode("  # step 6: decoding the final latents


class _NoShell:
    """What `%matplotlib inline` becomes outside IPython: figures are returned, not shown."""

    def run_line_magic(self, magic: str, line: str) -> None:
        assert (magic, line) == ("matplotlib", "inline"), f"unexpected magic %{magic} {line}"


def _code_cells() -> list[str]:
    nb = jupytext.read(LESSON)
    return [
        TransformerManager().transform_cell(c.source) for c in nb.cells if c.cell_type == "code"
    ]


def _loop_cells(cells: list[str]) -> list[str]:
    """The cells of steps 1-6, from the first tokenizer call to the first decode."""
    first = next(i for i, c in enumerate(cells) if FIRST_LOOP_CELL in c)
    last = next(i for i, c in enumerate(cells) if LAST_LOOP_CELL in c)
    assert first < last, "the lesson should tokenize before it decodes"
    return cells[first : last + 1]


def _run(cells: list[str], namespace: dict) -> None:
    for n, src in enumerate(cells):
        exec(compile(src, f"<{LESSON.name} code cell {n}>", "exec"), namespace)


@pytest.fixture(scope="module")
def lesson_namespace():
    """The names the lesson's cells leave behind, run in smoke mode on sdviz-mini."""
    threads = torch.get_num_threads()
    cells = _code_cells()
    namespace = {"get_ipython": _NoShell, "__name__": "__lesson__"}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("SDVIZ_SMOKE", "1")
        mp.delenv("SDVIZ_MODEL", raising=False)
        try:
            _run(cells, namespace)
        finally:
            torch.set_num_threads(threads)  # setup() sets one thread for sdviz-mini
    namespace["_loop_cells"] = _loop_cells(cells)
    return namespace


def _pipeline_image(ns: dict, **changes) -> torch.Tensor:
    """`pipe(...)` called here, not by the lesson, with the lesson's settings."""
    lesson = ns["lesson"]
    settings = dict(prompt=lesson.prompt, steps=lesson.steps, g=lesson.guidance, seed=lesson.seed)
    settings.update(changes)
    pipe = lesson.pipe
    return pipe(
        settings["prompt"],
        num_inference_steps=settings["steps"],
        guidance_scale=settings["g"],
        generator=torch.Generator(pipe.device).manual_seed(settings["seed"]),
        output_type="pt",
    ).images


def _rerun_loop(ns: dict, **settings) -> torch.Tensor:
    """The lesson's loop cells run again on a copy of its names, some settings changed."""
    lesson = ns["lesson"]
    names = {
        **ns,
        "prompt": lesson.prompt,
        "steps": lesson.steps,
        "guidance": lesson.guidance,
        "seed": lesson.seed,
        "scheduler": lesson.pipe.scheduler,
        **settings,
    }
    with torch.random.fork_rng():
        _run(ns["_loop_cells"], names)
    return names["image"]


def test_the_lesson_runs_in_smoke_mode_on_sdviz_mini(lesson_namespace):
    lesson = lesson_namespace["lesson"]
    assert lesson.smoke and "sdviz-mini" in lesson.model
    assert lesson_namespace["image"].shape == (1, 3, 64, 64)


def test_hand_written_loop_equals_the_pipeline_bit_for_bit(lesson_namespace):
    image = lesson_namespace["image"]
    reference = _pipeline_image(lesson_namespace)
    assert torch.equal(image, reference), float((image - reference).abs().max())
    # what the lesson prints is the same comparison
    assert torch.equal(lesson_namespace["reference"], reference)


def test_the_whole_loop_in_one_cell_is_the_same_loop(lesson_namespace):
    """The 'change one thing' cell: unchanged settings give the pipeline's image, and its
    Euler version gives the pipeline's image with Euler in it."""
    images = lesson_namespace["images"]
    assert torch.equal(images["nothing"], _pipeline_image(lesson_namespace))
    assert torch.equal(images["Euler scheduler"], lesson_namespace["reference_euler"])
    assert not torch.equal(images["Euler scheduler"], images["nothing"])


@pytest.mark.parametrize(
    "change", [{"guidance": 7.5}, {"seed": 1}, {"steps": 4}], ids=["guidance", "seed", "steps"]
)
def test_a_changed_setting_gives_another_image(lesson_namespace, change):
    """So that the bit-exact comparison can fail: one setting differs, the image differs."""
    reference = _pipeline_image(lesson_namespace)
    assert torch.equal(_rerun_loop(lesson_namespace), reference)  # re-running reproduces it
    changed = _rerun_loop(lesson_namespace, **change)
    assert changed.shape == reference.shape
    assert not torch.equal(changed, reference)
    assert float((changed - reference).abs().max()) > 1e-3, "a visible difference expected"
