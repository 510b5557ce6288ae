"""sdviz.course (what the lessons call), the training-curves figure and the lessons' timer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdviz.course as course
from sdviz.figures.curves import training_curves
from sdviz.pipeline import EMBEDDED_MODEL
from sdviz.shapes import ShapesWorld

# sdviz-mini's measured guidance (its sdviz.json, from benchmarks/guidance_sweep.py): not
# Stable Diffusion's 7.5, which the lessons would use if they ignored the model folder
MINI_GUIDANCE = json.loads((EMBEDDED_MODEL / "sdviz.json").read_text())["guidance_scale"]
assert MINI_GUIDANCE != 7.5

# -- setup -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_copy(tmp_path_factory) -> Path:
    """sdviz-mini copied to a folder of its own, as a learner's local copy would be."""
    folder = tmp_path_factory.mktemp("models") / "my-mini"
    shutil.copytree(EMBEDDED_MODEL, folder)
    return folder


def test_setup_reads_the_environment_and_the_models_recommendation(mini_copy: Path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        full = course.setup(None, environ={})
        assert full.threads == torch.get_num_threads() == 1  # sdviz.threads: small model
    finally:
        torch.set_num_threads(before)
    assert "threads   1" in repr(full)
    assert full.model == course.EMBEDDED_LABEL
    assert (full.steps, full.guidance, full.seed, full.smoke) == (25, MINI_GUIDANCE, 0, False)
    assert full.prompt == course.DEFAULT_PROMPT
    assert full.pipe.device.type == "cpu"

    # A local copy of sdviz-mini named by SDVIZ_MODEL: its own sdviz.json says MINI_GUIDANCE (2.0),
    # not Stable Diffusion's 7.5 (the lessons used to guess from "is MODEL set?").
    smoke = course.setup(None, environ={"SDVIZ_MODEL": str(mini_copy), "SDVIZ_SMOKE": "1"})
    assert smoke.model == str(mini_copy)
    assert (smoke.steps, smoke.guidance, smoke.smoke) == (course.SMOKE_STEPS, MINI_GUIDANCE, True)
    assert smoke.guidance_source == "the model folder's sdviz.json"


def test_setup_loads_the_newer_families_and_names_their_guidance():
    """SD3's and Flux's denoiser is a transformer; Flux's guidance is an input, not CFG."""
    flux = course.setup("sdviz-tiny-flux", environ={})
    assert type(flux.pipe).__name__ == "FluxPipeline" and flux.threads >= 1
    assert "an input of the guidance-distilled model" in repr(flux)
    sd3 = course.setup("sdviz-tiny-sd3", environ={})
    assert "classifier-free guidance scale" in repr(sd3) and sd3.guidance == 7.0


def test_setup_prefers_the_model_argument_and_says_what_it_loaded(mini_copy: Path):
    lesson = course.setup(
        mini_copy, prompt="a green star", seed=3, environ={"SDVIZ_MODEL": "/nowhere"}
    )
    assert lesson.model == str(mini_copy) and (lesson.prompt, lesson.seed) == ("a green star", 3)
    text = repr(lesson)
    assert text.startswith(f"Lesson setup: {mini_copy}, a StableDiffusionPipeline on cpu")
    for line in (
        "steps     25",
        f"guidance  {MINI_GUIDANCE:g}",
        "seed      3",
        "prompt    'a green star'",
    ):
        assert line in text, text
    assert "denoising steps per image" in text and "classifier-free guidance" in text


def test_setup_without_a_recommendation_uses_stable_diffusions(tmp_path: Path, mini_copy: Path):
    folder = tmp_path / "plain"
    shutil.copytree(mini_copy, folder)
    (folder / "sdviz.json").unlink()
    lesson = course.setup(folder, environ={})
    assert (lesson.guidance, lesson.steps) == (7.5, 25)
    assert "Stable Diffusion's defaults" in lesson.guidance_source


def test_pick_chooses_the_smoke_value_in_smoke_mode():
    lesson = course.Lesson(None, "m", 8, 0, "p", 3.0, "s", smoke=True, threads=1)
    assert lesson.pick(200, 5) == 5
    assert (
        course.Lesson(None, "m", 25, 0, "p", 3.0, "s", smoke=False, threads=1).pick(200, 5) == 200
    )


# -- tables ----------------------------------------------------------------------------


def test_table_aligns_numbers_right_text_left_and_prints_notes():
    out = course.table(
        {"t": [0, 999], "ᾱ_t": torch.tensor([0.99921, 0.0047]), "caption": ["a b", "c"]},
        formats={"ᾱ_t": ".4f"},
        notes="ᾱ_t: the signal's share of the variance",
    )
    assert len(out) == 2 and out["t"] == [0, 999]
    assert repr(out).splitlines() == [
        "  t     ᾱ_t  caption",
        "  0  0.9992  a b",
        "999  0.0047  c",
        "ᾱ_t: the signal's share of the variance",
    ]


def test_table_formats_floats_shapes_and_title():
    out = course.table({"x": [1 / 3], "maps": [torch.zeros(2, 3)]}, title="T")
    assert repr(out).splitlines() == ["T", "    x  maps", "0.333  (2, 3)"]
    scalars = course.table({"mean": [torch.tensor(0.25), np.float32(0.5)]}, formats={"mean": ".2f"})
    assert scalars["mean"] == [0.25, 0.5] and repr(scalars).splitlines()[1:] == ["0.25", "0.50"]


def test_table_refuses_ragged_columns_and_unknown_formats():
    with pytest.raises(ValueError, match="same length"):
        course.table({"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="do not exist"):
        course.table({"a": [1]}, formats={"b": ".2f"})


def test_table_finds_a_translated_header_by_its_english_for_formats():
    """Lesson code is the same in both languages: formats= names the English header, and a
    header sdviz wrote in Chinese (a Term) still gets its format; a plain string does not."""
    from sdviz.language import Term

    header = Term("参数（百万）", "parameters (M)")
    out = course.table({header: [4762.31]}, formats={"parameters (M)": ",.1f"})
    assert repr(out).splitlines() == ["参数（百万）", "     4,762.3"]  # 12 columns wide
    with pytest.raises(ValueError, match="do not exist.*参数"):
        course.table({"参数（百万）": [1.0]}, formats={"parameters (M)": ",.1f"})


def test_components_table_counts_parameters_of_networks_only():
    from sdviz.builder import tiny_pipeline

    pipe, other = tiny_pipeline(), tiny_pipeline(seed=1)
    out = course.components_table(pipe, other, labels=["here", "there"])
    assert out["component"] == ["vae", "text_encoder", "tokenizer", "unet", "scheduler"]
    unet = out["component"].index("unet")
    assert out["here"][unet] == f"{sum(p.numel() for p in pipe.unet.parameters()):,}"
    assert out["there"][out["component"].index("tokenizer")] == "–"
    assert "not a network" in repr(out)
    with pytest.raises(ValueError, match="labels"):
        course.components_table(pipe, other, labels=["one"])


# -- images ----------------------------------------------------------------------------


def test_examples_are_the_worlds_samples():
    world = ShapesWorld(size=32, split="test")
    ex = course.examples(world, 3)
    assert ex.captions == [world[i].caption for i in range(3)]
    assert all(isinstance(im, Image.Image) and im.size == (32, 32) for im in ex.images)
    assert ex.strip().size == (96, 32)
    assert repr(ex).splitlines()[1] == f"1: {world[1].caption}"

    assert course.examples(world, 2, start=5).captions == [world[5].caption, world[6].caption]
    with pytest.raises(ValueError, match="at least 1"):
        course.examples(world, 0)


def test_image_row_puts_tensors_arrays_and_pil_side_by_side():
    tensor = torch.zeros(2, 3, 8, 8)
    tensor[1] = 1.0
    array = np.full((8, 4, 3), 255, np.uint8)
    pil = Image.new("RGB", (5, 8), (255, 0, 0))
    row = course.image_row([*tensor, array, pil])
    assert row.size == (8 + 8 + 4 + 5, 8)
    pixels = np.asarray(row)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 8].tolist() == [255, 255, 255]
    assert pixels[0, -1].tolist() == [255, 0, 0]
    assert course.image_row(tensor).size == (16, 8)
    with pytest.raises(ValueError, match="one height"):
        course.image_row([array, np.zeros((4, 4, 3), np.uint8)])


# -- the training-curves figure --------------------------------------------------------


def test_training_curves_draws_loss_references_and_accuracy():
    fig = training_curves([1.0, 0.5, 0.2], loss_label="MSE", references={"no learning": 1.0})
    (ax,) = fig.axes
    assert ax.get_ylabel() == "MSE" and ax.get_xlabel() == "training step"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no learning"]
    assert ax.lines[0].get_xdata().tolist() == [1, 2, 3]

    fig = training_curves(
        {"short": [2.0, 1.0], "long": [2.0, 1.0, 0.5]},
        [0.1, 0.5, 0.9],
        accuracy_label="own caption first",
    )
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and loss_ax.get_legend() is not None
    assert loss_ax.get_title() == "training loss"
    assert acc_ax.get_title() == "own caption first" and acc_ax.get_ylim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one value"):
        training_curves([])


# -- running a lesson ------------------------------------------------------------------


@pytest.mark.slow
def test_execute_runs_a_lesson_and_reports_errors_and_figures(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    good = tmp_path / "good.py"
    good.write_text(
        "# %%\n%matplotlib inline\nfrom matplotlib.figure import Figure\n"
        "fig = Figure()\nfig.add_subplot().plot([1, 2])\nfig\n"
    )
    done = course.execute(good)
    assert done.errors == [] and done.figures == 1
    assert done.wall_s > 0 and done.cpu_s > 0

    bad = tmp_path / "bad.py"
    bad.write_text("# %%\nraise ValueError('boom')\n")
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="boom"):
        course.execute(bad)


def test_lessons_time_selects_lessons_by_prefix(benchmark_module):
    timer = benchmark_module("lessons_time")
    assert [p.name[:2] for p in timer.lessons(["04", "07"])] == ["04", "07"]
    every = sorted((Path(__file__).resolve().parents[1] / "lessons").glob("[0-9][0-9]_*.py"))
    assert timer.lessons([]) == every and len(every) >= 9
    with pytest.raises(SystemExit):
        timer.main(["99"])
