"""sdviz.figures on a traced tiny pipeline: panels, non-blank drawings, labels, determinism.

Figures drawn from probes' records: test_figures_from_probes.py."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import diffusers
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import sdviz
from sdviz import figures, probes
from sdviz.attention import cross_attention_layers
from sdviz.builder import count_parameters, tiny_pipeline
from sdviz.figures.style import iter_axes, render, to_png
from sdviz.probes.unet import unet_structure

MIN_PIXEL_STD = 8.0  # rendered RGB std (0..255) above which a figure is not blank


PROMPT = "a red circle left of a blue square"
STEPS = 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def run(pipe):
    """One traced generation with per-layer cross-attention maps (all attn2 layers)."""
    return sdviz.generate(pipe, PROMPT, steps=STEPS, seed=0, attention_layers="attn2")


@pytest.fixture(scope="module")
def plain_run(pipe):
    """No guidance, no attention: what figures needing them must refuse."""
    return sdviz.generate(pipe, PROMPT, steps=3, seed=1, guidance_scale=1.0, attention=None)


def texts(fig) -> str:
    """Every title, axis label, suptitle, legend and text artist of a figure, lower-cased."""
    parts = [fig.get_suptitle()] if hasattr(fig, "get_suptitle") else []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        parts += [t.get_text() for t in ax.texts]
        parts += [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels()]
        if ax.get_legend():
            parts += [t.get_text() for t in ax.get_legend().get_texts()]
    parts += [t.get_text() for t in fig.texts]
    for legend in fig.legends:
        parts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(parts).lower()


def assert_drawn(fig, n_axes: int | None = None) -> None:
    assert isinstance(fig, Figure)
    axes = list(iter_axes(fig))
    if n_axes is not None:
        assert len(axes) == n_axes, [a.get_title() for a in axes]
    pixels = render(fig)[..., :3].astype(np.float32)
    assert pixels.std() > MIN_PIXEL_STD, "figure looks blank"
    for ax in axes:
        for im in ax.images:
            data = np.asarray(im.get_array(), dtype=np.float64)
            assert np.ptp(data) > 0, f"constant image in {ax.get_title()!r}"


# ----------------------------------------------------------------- static (pipeline only)


def test_components_reads_sizes_from_the_pipeline(pipe):
    fig = figures.components(pipe)
    assert_drawn(fig, 1)
    text = texts(fig)
    L, d = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    side = pipe.unet.config.sample_size
    assert f"{L}×{d}" in text
    assert f"{pipe.unet.config.in_channels}×{side}×{side}" in text
    assert f"3×{side * pipe.vae_scale_factor}×{side * pipe.vae_scale_factor}" in text
    n_unet = count_parameters(pipe.unet)
    assert f"{n_unet / 1e6:.3g}m params" in text
    assert "text encoder" in text and "vae decoder" in text


def test_noise_schedule_marks_sampled_timesteps(pipe):
    fig = figures.noise_schedule(pipe, "euler", steps=[10, 7])
    assert_drawn(fig, 4)
    text = texts(fig)
    for word in ("ᾱ_t", "σ_t", "snr", "timestep t", "ddimscheduler", "eulerdiscretescheduler"):
        assert word in text
    ax_abar = list(iter_axes(fig))[0]
    # Euler built from the pipeline's schedule has the same ᾱ_t: one curve, drawn once,
    # with both samplers' timesteps on it, and the legend says they coincide
    curve, dots, euler_dots = ax_abar.lines
    assert len(dots.get_xdata()) == 10 and len(euler_dots.get_xdata()) == 7
    assert "2 of them share one ᾱ_t curve" in fig.legends[0].get_title().get_text()
    abar = np.asarray(curve.get_ydata())
    assert abar[0] > abar[-1] and np.all(np.diff(abar) <= 0)  # signal decays with t
    strip = list(iter_axes(fig))[3]  # one row of markers per scheduler
    assert [len(line.get_xdata()) for line in strip.lines] == [10, 7]
    assert pipe.scheduler.num_inference_steps is None  # the pipeline's scheduler untouched
    # where sampling starts and the last ᾱ, from the loaded scheduler: never pure noise
    first = max(float(t) for t in dots.get_xdata())
    T = pipe.scheduler.config.num_train_timesteps
    assert (
        f"starts at t={first:g}: ᾱ={float(pipe.scheduler.alphas_cumprod[int(first)]):.4f}" in text
    )
    assert f"t={T - 1}: ᾱ={float(pipe.scheduler.alphas_cumprod[-1]):.4f} > 0" in text
    # same timesteps are named as such; a different schedule gets its own curve
    twin = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    assert "same t as ddim" in texts(figures.noise_schedule(pipe, twin, steps=[10, 10]))
    linear = diffusers.DDPMScheduler(beta_schedule="linear")
    apart = figures.noise_schedule(pipe, linear, steps=[10, 10])
    assert len(list(iter_axes(apart))[0].lines) == 4
    assert "share one" not in apart.legends[0].get_title().get_text()


def test_noise_schedule_errors():
    with pytest.raises(ValueError, match="at least one"):
        figures.noise_schedule()
    with pytest.raises(ValueError, match="first"):
        figures.noise_schedule("euler")
    with pytest.raises(TypeError, match="scheduler"):
        figures.noise_schedule(object())


def test_unet_diagram_places_every_cross_attention_layer(pipe):
    fig = figures.unet_diagram(pipe)
    assert_drawn(fig, 1)
    text = texts(fig)
    assert f"{len(cross_attention_layers(pipe.unet))} cross-attention layers" in text
    for i, ch in enumerate(pipe.unet.config.block_out_channels):
        side = pipe.unet.config.sample_size // 2**i
        assert f"{ch} ch @ {side}×{side}" in text
    assert "skips" in text and "mid_block" in text and "time_proj" in text
    with pytest.raises(TypeError, match="UNet"):
        figures.unet_diagram(object())


def test_unet_diagram_counts_attn1_of_only_cross_attention_blocks():
    """sdviz-mini's first block is built with only_cross_attention=True: its attn1 takes
    its keys from the text too, so the figure counts it as the traces do."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention=(True, False),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    layers = cross_attention_layers(unet)
    attn2 = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    assert len(layers) > len(attn2)  # the attn1 layers of the only-cross blocks
    text = texts(figures.unet_diagram(unet))
    assert f"{len(layers)} cross-attention layers" in text
    first = next(b for b in unet_structure(unet).blocks if b.name == "down_blocks.0")
    assert first.count("cross-attention") == 2  # attn1 and attn2 of its one transformer block
    assert first.count("self-attention") == 0
    assert "down_blocks.0 · crossattndownblock2d" in text and "32 ch @ 8×8" in text
    assert "only_cross_attention" in text


# ----------------------------------------------------------------- from a traced run


def test_cross_attention_one_map_per_word(run):
    fig = figures.cross_attention(run, ["red", "circle", "square"])
    assert_drawn(fig, 4)
    text = texts(fig)
    assert "'red'" in text and "'square'" in text and "attention weight" in text
    at_step = figures.cross_attention(run, ["red"], step=-1)
    assert f"at step {STEPS - 1}" in texts(at_step)
    with pytest.raises(ValueError, match="not a word of the prompt"):
        figures.cross_attention(run, ["giraffe"])
    with pytest.raises(IndexError, match="out of range"):
        figures.cross_attention(run, ["red"], step=STEPS)


def test_cross_attention_needs_maps(plain_run):
    with pytest.raises(KeyError, match="attention.maps"):
        figures.cross_attention(plain_run, ["red"])


def test_attention_drilldown_per_layer_and_step(run, pipe):
    layers = [n for n, _ in pipe.unet.named_modules() if n.endswith("attn2")]
    fig = figures.attention_drilldown(run, "circle", steps=[0, STEPS - 1])
    assert_drawn(fig, 2 * (len(layers) + 1))
    text = texts(fig)
    assert "'circle'" in text and "aggregate" in text and "mid 0" in text
    some = figures.attention_drilldown(run, "red", layers=layers[:2], steps=1)
    assert_drawn(some, 3)
    with pytest.raises(KeyError, match="attention_layers"):
        figures.attention_drilldown(
            dict(
                (k, run[k]) for k in run if not k.startswith("attention.") or k == "attention.maps"
            ),
            "red",
        )
    with pytest.raises(KeyError, match="No maps"):
        figures.attention_drilldown(run, "red", layers=["up_blocks.9.attn2"])


def test_guidance_terms_show_both_halves(run):
    fig = figures.guidance_terms(run, step=2)
    assert_drawn(fig, 5)
    text = texts(fig)
    for word in ("ε_uncond", "ε_text", "ε_text − ε_uncond", "guided ε (g = 7.5)", "timestep t"):
        assert word in text
    diff = list(iter_axes(fig))[2].images[0].get_array()
    expected = (run["denoiser.noise_pred_text"] - run["denoiser.noise_pred_uncond"])[2, 0]
    np.testing.assert_allclose(np.asarray(diff), expected.numpy(), rtol=1e-6)


def test_guidance_terms_need_guidance(plain_run):
    with pytest.raises(ValueError, match="guidance_scale > 1"):
        figures.guidance_terms(plain_run)


def test_figures_accept_half_precision_tensors(run):
    half = {
        k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in run.items()
    }
    assert_drawn(figures.guidance_terms(half), 5)
    assert_drawn(figures.cross_attention(half, ["red"]), 2)


# ----------------------------------------------------------------- determinism, no pyplot


def test_same_seed_same_bytes(pipe, run):
    again = sdviz.generate(pipe, PROMPT, steps=STEPS, seed=0, attention_layers="attn2")
    for make in (
        lambda r: figures.denoising_filmstrip(
            r, images=probes.step_images(r, pipe, [0, STEPS - 1])
        ),
        lambda r: figures.cross_attention(r, ["red"]),
    ):
        assert to_png(make(run)) == to_png(make(again))


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_saved_files_are_reproducible(run, tmp_path, fmt):
    a = figures.save(figures.cross_attention(run, ["red"]), tmp_path / f"a.{fmt}")
    b = figures.save(figures.cross_attention(run, ["red"]), tmp_path / f"b.{fmt}")
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 1000
    with pytest.raises(ValueError, match="png, svg, pdf"):
        figures.save(Figure(), tmp_path / "c.jpg")


def test_figures_leave_pyplot_alone(run):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures.guidance_terms(run)
    figures.cross_attention(run)
    assert plt.get_fignums() == before
    assert matplotlib.rcParams["image.cmap"] == matplotlib.rcParamsDefault["image.cmap"]


def test_figure_and_widget_sources_use_no_pyplot():
    from pathlib import Path

    import sdviz.widgets

    for folder in (Path(figures.__file__).parent, Path(sdviz.widgets.__file__).parent):
        for path in folder.glob("*.py"):
            source = path.read_text()
            assert "import pyplot" not in source and "matplotlib.pyplot" not in source, path
            assert "plt." not in source, path.name


def test_public_names_stay_functions_after_submodule_imports():
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(figures.__path__):
        importlib.import_module(f"sdviz.figures.{info.name}")
    for name in figures.__all__:
        assert callable(getattr(figures, name)) and not isinstance(
            getattr(figures, name), type(figures)
        ), name


def test_drawing_into_a_given_figure_or_axes(run, pipe):
    fig = Figure()
    assert figures.guidance_terms(run, fig=fig) is fig
    assert figures.guidance_terms(run, step=0, fig=fig) is fig  # redrawn, not stacked
    assert len(list(iter_axes(fig))) == 5
    host = Figure(figsize=(12, 4))
    left, right = host.subplots(1, 2)
    assert figures.unet_diagram(pipe, ax=right) is host
    assert not left.texts and right.texts  # only the given axes is drawn on
    sub = Figure().subfigures(1, 2)[1]
    assert figures.cross_attention(run, ["red"], fig=sub) is sub
