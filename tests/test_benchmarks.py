"""benchmarks/mini_quality.py's pixel scorer: it must read real ShapesWorld images right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sdviz.shapes import ShapesWorld

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mini_quality.py"


@pytest.fixture(scope="module")
def mq():
    spec = importlib.util.spec_from_file_location("mini_quality", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def classify(mq):
    return mq.ShapeClassifier(count=200)


def test_scorer_reads_held_out_images(mq, classify):
    assert mq.scorer_sanity(classify, n=40) >= 0.95


def test_scorer_finds_colour_shape_and_side(mq, classify):
    world = ShapesWorld(split="test", seed=3)
    sample = next(s for s in (world[i] for i in range(200)) if len(s.objects) == 2)
    found = mq.find_objects(sample.image, classify)
    for o in sample.objects:
        hit = mq._has(found, o.colour, o.shape)
        assert hit is not None, (o, found)
        assert abs(hit["x"] - o.x) < 0.05 and abs(hit["y"] - o.y) < 0.05


def test_scorer_sees_nothing_on_a_plain_background(mq, classify):
    blank = np.full((64, 64, 3), 235, np.uint8)
    assert mq.find_objects(blank, classify) == []


def test_generation_score_checks_colour_and_shape(mq, classify):
    class Pipe:  # draws the truth for some prompts, a wrong colour for the others
        def __call__(self, prompts, generator, **kwargs):
            out = []
            for p in prompts:
                colour, shape = p.split()[-2:]
                wrong = "green" if colour != "green" else "red"
                out.append(draw(wrong if "circle" in p else colour, shape))
            return type("Out", (), {"images": out})()

    def draw(colour, shape):
        world = ShapesWorld(split="test", seed=0)
        obj = {"shape": shape, "colour": colour, "size": "big", "x": 0.5, "y": 0.5}
        return world.render([obj], ((235, 235, 235), (235, 235, 235)), "").image / 255.0

    one = mq.one_object_prompts(seeds=1)
    two = mq.two_object_prompts(n=4)
    res = mq.score_generation(Pipe(), classify, 3.0, one=one, two=two)
    circles = sum("circle" in p for p, _, _ in one) / len(one)
    assert res["one_object"] == pytest.approx(1 - circles)
    assert set(res["one_object_by_colour"]) == {t[0][0] for _, _, t in one}
    assert res["two_object_both"] == 0.0  # one drawn object never answers a two-object prompt


def test_validation_prompts_share_no_seed_with_the_reported_ones(mq):
    one, two = mq.one_object_prompts(), mq.two_object_prompts()
    v_one, v_two = mq.one_object_prompts(offset=100_000), mq.two_object_prompts(offset=100_000)
    assert len(one) == len(v_one) == 96 and len(two) == len(v_two) == 96
    assert [p for p, _, _ in one] == [p for p, _, _ in v_one]  # the same 24 one-object prompts
    seeds = {s for _, s, _ in one + two}
    assert seeds.isdisjoint(s for _, s, _ in v_one + v_two)
    assert [p for p, _, _ in two] != [p for p, _, _ in v_two]  # other pairs of objects
