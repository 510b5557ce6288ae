"""sdviz-mini vs sdviz-mini-flow side by side (issue 20), checked on the tiny pipelines built
in code: x̂0's path straightness (`sdviz.probes.straightness`), its figure, the side-by-side
attention figure, and `benchmarks/flow_vs_unet.py`'s tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.models.modeling_outputs import Transformer2DModelOutput

import sdviz
from sdviz.probes.straightness import Straightness, measure_straightness, x0_path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [("a red circle", 0), ("a blue square to the left of a green star", 1)]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "flow_vs_unet", ROOT / "benchmarks" / "flow_vs_unet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny() -> dict:
    pipes = {"UNet": sdviz.load("sdviz-tiny"), "MMDiT": sdviz.load("sdviz-tiny-sd3")}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


@pytest.fixture(scope="module")
def record(tiny) -> Straightness:
    return measure_straightness(tiny, PROMPTS, steps=[2, 3], strip_steps=3)


class SD3ConstantX0Transformer(SD3Transformer2DModel):
    """A 'perfectly straight' flow model: it returns the velocity v = (x_σ − c) / σ of the
    straight line through x_σ and one fixed latent c, so x̂0 = x_σ − σ·v = c at every step."""

    def forward(self, hidden_states, timestep, *args, return_dict: bool = True, **kwargs):
        sigma = (timestep.float() / self.config.get("num_train_timesteps", 1000)).view(-1, 1, 1, 1)
        target = torch.linspace(-1, 1, hidden_states[0].numel()).view_as(hidden_states[0])
        v = (hidden_states - target) / sigma
        return Transformer2DModelOutput(sample=v) if return_dict else (v,)


def test_x0_path_of_a_constant_estimate_is_zero():
    x0 = torch.randn(1, 4, 8, 8).expand(5, 4, 8, 8)
    distance, moves = x0_path(x0)
    assert distance.shape == (5,) and moves.shape == (4,)
    assert torch.equal(distance, torch.zeros(5)) and torch.equal(moves, torch.zeros(4))


def test_x0_path_is_relative_to_the_final_estimate():
    final = torch.randn(4, 8, 8)
    x0 = torch.stack([3 * final, 2 * final, final])  # moves by one final-norm per step
    distance, moves = x0_path(x0)
    assert torch.allclose(distance, torch.tensor([2.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(moves, torch.tensor([1.0, 1.0]), atol=1e-5)
    with pytest.raises(ValueError, match="step axis"):
        x0_path(torch.tensor(1.0))


def test_a_pipeline_whose_x0_never_moves_is_perfectly_straight(tiny):
    sd3 = tiny["MMDiT"]
    straight = SD3ConstantX0Transformer.from_config(sd3.transformer.config)
    pipe = StableDiffusion3Pipeline(**{**sd3.components, "transformer": straight})
    pipe.set_progress_bar_config(disable=True)
    rec = measure_straightness({"straight": pipe}, PROMPTS[:1], steps=[2, 5], strip_steps=None)
    for s in (2, 5):
        assert rec.distance["straight"][s].shape == (1, s)
        assert float(rec.path_length("straight", s).abs().max()) < 1e-4
        assert float(rec.first_guess("straight", s).abs().max()) < 1e-4
        assert float(rec.endpoint_gap("straight", s).abs().max()) < 1e-4  # any S lands alike
    # while a trained-from-random tiny transformer's x̂0 does move
    moving = measure_straightness({"tiny": sd3}, PROMPTS[:1], steps=[5], strip_steps=None)
    assert float(moving.path_length("tiny", 5)[0]) > 1e-3


def test_the_record_has_one_path_per_model_step_count_and_run(record, tiny):
    assert record.labels == list(tiny) and record.steps == [2, 3]
    for label in record.labels:
        assert set(record.guidance) == set(tiny)
        for s in record.steps:
            assert record.distance[label][s].shape == (len(PROMPTS), s)
            assert record.moves[label][s].shape == (len(PROMPTS), s - 1)
            assert torch.all(record.distance[label][s][:, -1] == 0)  # the final is itself
            assert record.finals[label][s].shape[0] == len(PROMPTS)
        assert torch.all(record.endpoint_gap(label, 3) == 0)  # the most steps: the reference
        assert torch.all(record.endpoint_gap(label, 2) > 0)
        strip = record.strips[label]
        assert strip.shape[0] == 3 and strip.shape[1] == 3  # (steps, RGB, H, W)
        assert 0 <= float(strip.min()) and float(strip.max()) <= 1
    table = record.table()
    assert table["steps"] == [2, 3] and len(table) == 1 + 3 * len(tiny)
    chinese = record.table(lang="zh")  # same numbers; each header keeps its English
    assert [h.english for h in chinese] == list(table) and chinese["步数"] == [2, 3]
    with pytest.raises(ValueError, match="positive"):
        measure_straightness(tiny, PROMPTS, steps=[0])


def test_the_straightness_figure_draws_curves_and_strips(record):
    fig = sdviz.figures.path_straightness(record)
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(axes) == 3 + len(record.labels) * 3  # three plots + a 3-step strip per model
    assert len(axes[0].get_lines()) == len(record.labels)
    zh = sdviz.figures.path_straightness(record, steps=2, lang="zh")
    assert "采样" in " ".join(t.get_text() for ax in zh.get_axes() for t in [ax.xaxis.label])
    with pytest.raises(ValueError, match="No runs of 7 steps"):
        sdviz.figures.path_straightness(record, steps=7)
    with pytest.raises(TypeError, match="measure_straightness"):
        sdviz.figures.path_straightness({"not": "a record"})


def test_attention_side_by_side_draws_a_row_per_model(tiny):
    prompt = "a red circle to the left of a blue square"
    runs = {label: sdviz.generate(pipe, prompt, steps=2, seed=3) for label, pipe in tiny.items()}
    fig = sdviz.figures.attention_side_by_side(runs, ["red", "circle"])
    assert len(fig.subfigs) == 2
    for sub, label in zip(fig.subfigs, tiny, strict=True):
        assert sub.get_supylabel() == label
        assert len(sub.get_axes()) == 1 + 2 + 1  # image, two words, colour bar
    other = {"UNet": runs["UNet"], "MMDiT": sdviz.generate(tiny["MMDiT"], prompt, steps=2, seed=4)}
    with pytest.raises(ValueError, match="same prompt and seed"):
        sdviz.figures.attention_side_by_side(other, ["red"])


def test_attention_side_by_side_in_chinese_asks_for_no_missing_bold_face(tiny, caplog):
    """Noto Sans SC ships no bold face: a Chinese figure asking for bold made matplotlib
    log 'Failed to find font weight bold' under the lesson's figure."""
    import io
    import logging

    prompt = "a red circle"
    runs = {label: sdviz.generate(pipe, prompt, steps=2, seed=3) for label, pipe in tiny.items()}
    fig = sdviz.figures.attention_side_by_side(runs, ["red"], lang="zh")
    with caplog.at_level(logging.WARNING, logger="matplotlib.font_manager"):
        fig.savefig(io.BytesIO(), format="png")  # fonts are looked up when drawing
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    assert fig.subfigs[0].get_supylabel() == "UNet"


def test_the_benchmark_prints_a_row_per_model_and_step_count(tmp_path, capsys):
    bench = _benchmark()
    argv = ["--unet", "sdviz-tiny", "--flow", "sdviz-tiny-sd3", "--prompts", "2"]
    argv += ["--steps", "2", "3", "--straight-prompts", "1", "--attention-prompts", "1"]
    assert bench.main([*argv, "--figures", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sections = out.split("## ")
    quality = [line for line in sections[1].splitlines() if line.startswith("| sdviz-tiny")]
    assert [(row.split("|")[1].strip(), int(row.split("|")[3])) for row in quality] == [
        ("sdviz-tiny (UNet)", 2),
        ("sdviz-tiny (UNet)", 3),
        ("sdviz-tiny-sd3 (MMDiT)", 2),
        ("sdviz-tiny-sd3 (MMDiT)", 3),
    ]
    straight = [line for line in sections[2].splitlines() if line.startswith("| sdviz-tiny")]
    assert len(straight) == 4
    attention = [line for line in sections[3].splitlines() if line.startswith("| sdviz-tiny")]
    assert len(attention) == 2
    for name in ("straightness.png", "attention_side_by_side.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_the_reported_prompts_spread_over_every_pair_first():
    bench = _benchmark()
    mq = bench.benchmark("mini_quality")
    one, two = bench.reported_prompts(mq, 30)
    assert len(one) == 30 and len(two) == 30
    assert len({p for p, _, _ in one[:24]}) == 24  # every colour-shape pair once, then seeds
    assert two == mq.two_object_prompts(96)[:30]
