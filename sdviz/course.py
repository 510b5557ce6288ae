"""sdviz.course — what the lessons in `lessons/` call instead of writing logic themselves.

A lesson is a story told in markdown, with code cells that call sdviz and show what
comes back. The rule (`tests/test_lessons.py`) is that a lesson holds no logic: no
function, class, loop, `if`, comprehension or conditional expression. What a lesson
needs beyond one call lives in sdviz; the course's own pieces are here:

- `setup(model)`: the one call of every lesson's setup cell. It loads the pipeline
  (sdviz-mini, or `SDVIZ_MODEL`, a hub id or a local folder), reads the test switch
  `SDVIZ_SMOKE`, and returns a `Lesson`: the pipeline and the settings every cell uses
  (steps, seed, prompt, and the guidance scale the model recommends).
- `table(columns)`: named columns of numbers, printed aligned with their meanings, where a
  lesson would otherwise format a list in a comprehension.
- `examples(world, n)`: ShapesWorld samples as PIL images and captions.
- `components_table(pipe, ...)`: each component's class and parameter count.
- `pipeline_with(pipe, unet=...)`: the same pipeline with a component replaced.
- `attention_layers_table(run)`: the text-attention layers a run kept, with their maps.
- `image_row(images)`: pictures side by side as one PIL image.
- `execute(path)`: one lesson run headless, as the tests and `benchmarks/lessons_time.py`
  run it.

    import sdviz.course
    lesson = sdviz.course.setup(None)   # None: SDVIZ_MODEL if set, else sdviz-mini
    sdviz.generate(lesson.pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed)
"""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .builder import count_parameters

__all__ = [
    "DEFAULT_PROMPT",
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

DEFAULT_PROMPT = "a red circle to the left of a blue square"
SMOKE_STEPS = 8  # denoising steps in smoke mode (SDVIZ_SMOKE=1: the tests' short run)
EMBEDDED_LABEL = "sdviz-mini (embedded in sdviz)"


@dataclass(frozen=True, eq=False)
class Lesson:
    """What a lesson's cells use: the pipeline and the settings of its generations."""

    pipe: Any
    model: str  # what was loaded: EMBEDDED_LABEL, a hub id or a folder
    steps: int  # denoising steps per generation
    seed: int  # seed of the starting noise
    prompt: str
    guidance: float  # classifier-free guidance scale the model recommends
    guidance_source: str  # where that recommendation was read
    smoke: bool  # SDVIZ_SMOKE=1: shorter loops and training runs, the same story

    def pick(self, full: Any, smoke: Any) -> Any:
        """`full` for a learner, `smoke` in smoke mode (say, how long a live training runs)."""
        return smoke if self.smoke else full

    def __repr__(self) -> str:
        pipe = self.pipe
        mode = "smoke mode, the tests' short run" if self.smoke else "the model's recommendation"
        rows = [
            ("steps", str(self.steps), f"denoising steps per image ({mode})"),
            (
                "guidance",
                str(self.guidance),
                f"classifier-free guidance scale (lesson 7), from {self.guidance_source}",
            ),
            ("seed", str(self.seed), "seed of the starting noise: same seed, same image"),
            ("prompt", repr(self.prompt), ""),
        ]
        head = (
            f"Lesson setup: {self.model}, a {type(pipe).__name__} on {pipe.device} ({pipe.dtype})"
        )
        width = max(len(v) for _, v, _ in rows[:-1])
        lines = [f"  {k:<8}  {v:<{width}}  {m}".rstrip() for k, v, m in rows]
        return "\n".join([head, *lines])


def _guidance_source(source: str) -> str:
    return "the model folder's sdviz.json" if source.endswith("sdviz.json") else source


def setup(
    model: str | os.PathLike | None = None,
    *,
    prompt: str = DEFAULT_PROMPT,
    seed: int = 0,
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> Lesson:
    """Load the lesson's pipeline and settings: the one call of a lesson's setup cell.

    `model`: None for `SDVIZ_MODEL` when set, else the embedded sdviz-mini (offline, CPU,
    about a second per image); a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5"
    (online once, ~4 GB, a CUDA GPU advised: sdviz loads it in float16 there) or a
    local diffusers folder. `SDVIZ_SMOKE=1` (set by the tests) makes `steps` short and
    `Lesson.pick` choose its smoke value. Steps and guidance are the model's
    recommendation (`sdviz.pipeline.recommended`): 3.0 for sdviz-mini, also a copy of
    it in a folder of your own, 7.5 for models that say nothing.
    """
    from .pipeline import load, recommended

    env = os.environ if environ is None else environ
    if model is None:
        model = env.get("SDVIZ_MODEL") or None
    smoke = env.get("SDVIZ_SMOKE") == "1"
    pipe = load(model, device=device)
    pipe.set_progress_bar_config(disable=True)  # no progress bars in the lessons
    advice = recommended(pipe)
    return Lesson(
        pipe=pipe,
        model=EMBEDDED_LABEL if model is None else os.fspath(model),
        steps=SMOKE_STEPS if smoke else advice.num_inference_steps,
        seed=seed,
        prompt=prompt,
        guidance=advice.guidance_scale,
        guidance_source=_guidance_source(advice.source),
        smoke=smoke,
    )


# -- tables ----------------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """A 0-d tensor or numpy number as a Python number; anything else as it is."""
    return value.item() if getattr(value, "ndim", None) == 0 else value


def _cells(values: Any) -> list[Any]:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu()
    if hasattr(values, "tolist"):
        return list(values.tolist()) if np.ndim(values) else [values.tolist()]
    return [_scalar(v) for v in values]


def _format(value: Any, fmt: str | None) -> str:
    if fmt is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    if isinstance(value, float):
        return format(value, ".3g")
    if hasattr(value, "shape") and not isinstance(value, str):  # a tensor or array: its shape
        return str(tuple(value.shape))
    return str(value)


_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?\s?[%×]?$|^–$|^[-+]?inf$|^nan$")


@dataclass(frozen=True)
class Table:
    """Named columns, printed aligned: numbers right, text left, then the notes."""

    columns: dict[str, list[Any]]
    formats: dict[str, str]
    title: str | None = None
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, name: str) -> list[Any]:
        return self.columns[name]

    def __repr__(self) -> str:
        text = {
            name: [_format(v, self.formats.get(name)) for v in values]
            for name, values in self.columns.items()
        }
        numeric = {name: all(map(_NUMBER.match, cells)) for name, cells in text.items()}
        widths = {name: max([len(name), *map(len, cells)]) for name, cells in text.items()}

        def line(cells: Mapping[str, str]) -> str:
            return "  ".join(
                cells[n].rjust(widths[n]) if numeric[n] else cells[n].ljust(widths[n]) for n in text
            ).rstrip()

        out = [self.title] if self.title else []
        out.append(line({n: n for n in text}))
        out += [line({n: text[n][i] for n in text}) for i in range(len(self))]
        return "\n".join(out + list(self.notes))


def table(
    columns: Mapping[str, Iterable[Any]],
    *,
    title: str | None = None,
    formats: Mapping[str, str] | None = None,
    notes: str | Sequence[str] = (),
) -> Table:
    """A printable table of `columns` (header -> values: lists, tensors, arrays, ranges).

    Floats print with 3 significant digits unless `formats` gives the column a format
    spec (".1%", ".2f"); tensors inside a column print as their shape. Say what each
    number means in its header, or in `notes` (lines printed under the table).

        sdviz.course.table({"t": [0, 500], "ᾱ_t (signal variance left)": [1.0, 0.28]})
    """
    cols = {str(name): _cells(values) for name, values in columns.items()}
    lengths = {name: len(values) for name, values in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all columns must have the same length; got {lengths}.")
    unknown = set(formats or {}) - set(cols)
    if unknown:
        raise ValueError(f"formats name columns that do not exist: {sorted(unknown)}.")
    notes = (notes,) if isinstance(notes, str) else tuple(notes)
    return Table(cols, dict(formats or {}), title, notes)


def components_table(pipe: Any, *others: Any, labels: Sequence[str] | None = None) -> Table:
    """Each component of `pipe`: its class and parameter count (and those of `others`).

    Parts with no parameters (the tokenizer's vocabulary, the scheduler's formula) show
    "–". `labels` names the pipelines' parameter columns ("parameters" for one).
    """
    pipes = (pipe, *others)
    labels = list(labels or ["parameters"] * len(pipes))
    if len(labels) != len(pipes):
        raise ValueError(f"{len(pipes)} pipelines need {len(pipes)} labels, got {labels}.")
    names = [name for name, part in pipe.components.items() if part is not None]
    columns: dict[str, list[Any]] = {
        "component": names,
        "class": [type(getattr(pipe, n)).__name__ for n in names],
    }
    for label, p in zip(labels, pipes, strict=True):
        parts = [getattr(p, n, None) for n in names]
        columns[label] = [
            f"{count_parameters(m):,}" if hasattr(m, "parameters") else "–" for m in parts
        ]
    return table(columns, notes="–: not a network, nothing learned (a vocabulary, a formula)")


def pipeline_with(pipe: Any, **components: Any) -> Any:
    """A pipeline of `pipe`'s class sharing its components, except those given (say a
    freshly trained `unet=`). Nothing is copied and `pipe` is left as it was."""
    import inspect

    unknown = sorted(set(components) - set(pipe.components))
    if unknown:
        raise ValueError(f"{unknown} are not components of this pipeline: {list(pipe.components)}.")
    parts = {**pipe.components, **components}
    if "requires_safety_checker" in inspect.signature(type(pipe)).parameters:
        parts["requires_safety_checker"] = False  # sdviz's pipelines carry no safety checker
    new = type(pipe)(**parts)
    new.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return new


def attention_layers_table(run: Any) -> Table:
    """The text-attention layers whose own maps `run` kept (`attention_layers=` in
    `sdviz.generate`): each layer's module path in the denoiser and its maps' shape."""
    from .tracing.keys import LAYER_PREFIX

    keys = run.attention_layers
    if not keys:
        raise ValueError(
            "this run kept no layer's own maps: generate it with attention_layers='*' "
            "(every text-attention layer) or a filter such as 'up_blocks'."
        )
    return table(
        {
            "layer (module path)": [k.removeprefix(LAYER_PREFIX) for k in keys],
            "its maps (steps, tokens, h, w)": [tuple(run[k].shape) for k in keys],
        },
        notes="h, w: the layer's own resolution (the average resizes each to the latent's)",
    )


# -- images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    """ShapesWorld samples: `images` (PIL), `captions`, `strip()` to see them in a row."""

    samples: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def images(self) -> list[Any]:
        from PIL import Image

        return [Image.fromarray(s.image) for s in self.samples]

    @property
    def captions(self) -> list[str]:
        return [s.caption for s in self.samples]

    def strip(self) -> Any:
        """The images side by side, as one PIL image."""
        return image_row(self.images)

    def counterfactual_captions(self) -> list[str]:
        """Each caption followed by its counterfactuals (`sdviz.shapes.contrast_captions`):
        the same words for another picture (the relation flipped, two colours swapped)."""
        from .shapes import contrast_captions

        return [c for cap in self.captions for c in [cap, *contrast_captions(cap).values()]]

    def __repr__(self) -> str:
        return "\n".join(f"{i}: {c}" for i, c in enumerate(self.captions))


def examples(
    world: Any,
    n: int,
    *,
    containing: str | Sequence[str] | None = None,
    start: int = 0,
    search: int = 1000,
) -> Examples:
    """The first `n` samples of a ShapesWorld from index `start`; with `containing` (a text
    or several), the first `n` whose caption holds it (one of them), looking at `search`
    samples at most."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    if containing is None:
        return Examples(tuple(world[i] for i in range(start, start + n)))
    texts = [containing] if isinstance(containing, str) else list(containing)
    candidates = (world[i] for i in range(start, start + search))
    found = [s for s in candidates if any(t in s.caption for t in texts)]
    if len(found) < n:
        raise ValueError(
            f"only {len(found)} of {search} samples have {containing!r} in their caption; "
            f"asked for {n}."
        )
    return Examples(tuple(found[:n]))


def image_row(images: Any) -> Any:
    """Pictures side by side as one PIL image: a (n, 3, H, W) tensor in [0, 1], or a list
    of (3, H, W) tensors, (H, W, 3) arrays and PIL images of the same height."""
    from PIL import Image

    from .autoencoder import image_hwc

    items = list(images)
    if not items:
        raise ValueError("image_row needs at least one image.")
    rows = [image_hwc(x) for x in items]
    heights = {r.shape[0] for r in rows}
    if len(heights) > 1:
        raise ValueError(f"the images must have one height; got {sorted(heights)}.")
    return Image.fromarray(np.round(np.hstack(rows) * 255).astype(np.uint8))


# -- running a lesson ------------------------------------------------------------------


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
    OMP_NUM_THREADS=1 there for the tests' short run). The kernel's CPU time is read
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
        resources={"metadata": {"path": str(path.parent)}},
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    client.execute()  # starts the kernel, runs every cell, shuts the kernel down
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Execution(nb, wall, cpu)
