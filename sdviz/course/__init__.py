"""sdviz.course — what the lessons in `lessons/` call instead of writing logic themselves.

A lesson is a story told in markdown, with code cells that call sdviz and show what
comes back. The rule (`tests/test_lessons.py`) is that a lesson holds no logic: no
function, class, loop, `if`, comprehension or conditional expression. What a lesson
needs beyond one call lives in sdviz; the course's own pieces are here, one module each:

    lesson.py      `setup(model)`: the one call of every lesson's setup cell. It loads
                   the pipeline (sdviz-mini, or `SDVIZ_MODEL`, a hub id or a local
                   folder), reads the test switch `SDVIZ_SMOKE`, and returns a `Lesson`:
                   the pipeline and the settings every cell uses (steps, seed, prompt,
                   and the guidance scale the model recommends), and the course's
                   language (`lesson.lang`: "zh" in lessons/zh/, see sdviz.language),
                   in which the tables below print their own headers.
    tables.py      `table(columns)`: named columns of numbers, printed aligned with their
                   meanings, where a lesson would otherwise format a list in a
                   comprehension; `attention_layers_table(run)`: the text-attention
                   layers a run kept, with their maps.
    components.py  `components_table(pipe, ...)`: each component's class and parameter
                   count; `pipeline_with(pipe, unet=...)`: the same pipeline with a
                   component replaced.
    images.py      `examples(world, n)`: ShapesWorld samples as PIL images and captions;
                   `image_row(images)`: pictures side by side as one PIL image.
    execution.py   `execute(path)`: one lesson run headless, as the tests and
                   `benchmarks/lessons_time.py` run it.

    import sdviz.course
    lesson = sdviz.course.setup(None)   # None: SDVIZ_MODEL if set, else sdviz-mini
    sdviz.generate(lesson.pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed)
"""

from __future__ import annotations

from ..builder import count_parameters
from .components import components_table, pipeline_with
from .execution import Execution, execute
from .images import Examples, examples, image_row
from .lesson import DEFAULT_PROMPT, EMBEDDED_LABEL, SMOKE_STEPS, Lesson, setup
from .tables import Table, attention_layers_table, table

__all__ = [
    "DEFAULT_PROMPT",
    "EMBEDDED_LABEL",
    "SMOKE_STEPS",
    "Lesson",
    "setup",
    "Table",
    "table",
    "Examples",
    "examples",
    "components_table",
    "count_parameters",
    "pipeline_with",
    "attention_layers_table",
    "image_row",
    "Execution",
    "execute",
]
