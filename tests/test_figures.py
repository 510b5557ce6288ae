"""sdviz.figures on a traced tiny pipeline: panels, non-blank drawings, labels, determinism."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from sdviz import figures
from sdviz.builder import tiny_pipeline
from sdviz.figures.style import iter_axes, render

MIN_PIXEL_STD = 8.0  # rendered RGB std (0..255) above which a figure is not blank


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


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
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    assert f"{n_unet / 1e6:.3g}m params" in text
    assert "text encoder" in text and "vae decoder" in text


def test_noise_schedule_marks_sampled_timesteps(pipe):
    fig = figures.noise_schedule(pipe, "euler", steps=[10, 7])
    assert_drawn(fig, 3)
    text = texts(fig)
    for word in ("ᾱ_t", "σ_t", "snr", "timestep t", "ddimscheduler", "eulerdiscretescheduler"):
        assert word in text
    ax_abar = list(iter_axes(fig))[0]
    curve, dots = ax_abar.lines[0], ax_abar.lines[1]
    assert len(dots.get_xdata()) == 10
    assert len(ax_abar.lines[3].get_xdata()) == 7
    abar = np.asarray(curve.get_ydata())
    assert abar[0] > abar[-1] and np.all(np.diff(abar) <= 0)  # signal decays with t
    assert pipe.scheduler.num_inference_steps is None  # the pipeline's scheduler untouched


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
    attn2 = [n for n, _ in pipe.unet.named_modules() if n.endswith("attn2")]
    assert f"{len(attn2)} cross-attention layers" in text
    for i, ch in enumerate(pipe.unet.config.block_out_channels):
        side = pipe.unet.config.sample_size // 2**i
        assert f"{ch} ch @ {side}×{side}" in text
    assert "skip" in text and "mid_block" in text
    with pytest.raises(TypeError, match="UNet"):
        figures.unet_diagram(object())
