"""sdviz.widgets at the Python level: set a control, assert what changed (and what did not run).

A tiny random pipeline (built in code, ~0.2 s per generation) is traced once; the
widgets are driven by setting their controls' values, as the browser does. A forward
hook on the UNet and the VAE decoder counts model calls: moving a slider must never
run either; only the prompt explorer's Generate button runs the UNet.
"""

from __future__ import annotations

import io
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

import sdviz
from sdviz.widgets import AttentionExplorer, DenoisingExplorer, PromptExplorer

STEPS = 6
PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def pipe():
    return sdviz.tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def run(pipe):
    return sdviz.generate(
        pipe, PROMPT, steps=STEPS, seed=0, height=64, width=64, attention_layers="attn2"
    )


@contextmanager
def count_calls(*modules):
    """Count forward calls of the given modules (hooks always removed)."""
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def png_mean(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32).mean((0, 1))


def state(widget) -> str:
    return next(c for c in widget._dom_classes if c.startswith("sdviz-state-"))


# -- denoising explorer -------------------------------------------------------------------


def test_denoising_slider_moves_every_panel_without_running_models(pipe, run):
    ex = DenoisingExplorer(run, pipe)
    panels = [ex.preview_image, ex.xt_image, ex.x0_image, ex.noise_image, ex.schedule_image]
    panels += ex.attention_images
    before = [p.value for p in panels]
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in before)
    assert all(state(p) == "sdviz-state-0" for p in panels)

    with count_calls(pipe.unet, pipe.vae.decoder) as calls:
        ex.slider.value = 3
        ex.slider.value = STEPS - 1
        ex.slider.value = 3
    assert calls["n"] == 0, "moving the slider ran the UNet or the VAE"
    after = [p.value for p in panels]
    changed = [a != b for a, b in zip(after, before, strict=True)]
    assert all(changed), f"panels that did not redraw: {changed}"
    assert all(state(p) == "sdviz-state-3" for p in panels)
    assert f"step 3 (of 0…{STEPS - 1})" in ex.state.value  # counted from 0, as run[...][3]
    assert f"t = {int(run['scheduler.step_timestep'][3])}" in ex.state.value


def test_denoising_image_is_the_decoded_step(pipe, run):
    ex = DenoisingExplorer(run, pipe)
    ex.slider.value = 2
    for widget, which in ((ex.xt_image, "latents"), (ex.x0_image, "pred_original_sample")):
        decoded = run.decode(pipe, which, steps=[2])[0]  # (3, H, W)
        expected = decoded.mean((1, 2)).numpy() * 255
        np.testing.assert_allclose(png_mean(widget.value), expected, atol=3.0)
    preview = run.preview("latents", steps=[2])[0]  # (3, h, w): the linear preview of x_t
    np.testing.assert_allclose(
        png_mean(ex.preview_image.value), preview.mean((1, 2)).numpy() * 255, atol=3.0
    )


def test_denoising_play_drives_the_slider_range(pipe, run):
    ex = DenoisingExplorer(run, pipe)
    assert (ex.play.min, ex.play.max) == (ex.slider.min, ex.slider.max) == (0, STEPS - 1)
    assert [w for w, _ in ex.words] == run.words[1:-1]
    assert len(ex.attention_images) == len(run.words) - 2


def test_denoising_preview_without_pipe_and_bad_input(run):
    ex = DenoisingExplorer(run)  # no pipe: cheap linear preview
    assert ex.xt_image.value[:4] == b"\x89PNG"
    assert ex.preview_image.value == b""  # x_t is the preview already: no second panel
    with pytest.raises(ValueError, match="step must be in"):
        ex.show(STEPS)
    with pytest.raises(ValueError, match="not among the prompt's tokens"):
        DenoisingExplorer(run, words=["zebra"])
    assert len(DenoisingExplorer(run, words=["circle"]).attention_images) == 1


# -- prompt explorer ----------------------------------------------------------------------


def test_prompt_tokens_update_live_without_running_models(pipe):
    ex = PromptExplorer(pipe, "a red circle", steps=3)
    assert "red" in ex.tokens.value and "green" not in ex.tokens.value
    with count_calls(pipe.unet, pipe.text_encoder) as calls:
        ex.text.value = "a green triangle"
    assert calls["n"] == 0
    ids = sdviz.tokenize(pipe, "a green triangle")["input_ids"]
    assert "green" in ex.tokens.value and "triangle" in ex.tokens.value
    assert f"<sub>{int(ids[2])}</sub>" in ex.tokens.value  # the id of "green"
    assert ex.image.value == b"" and ex.run is None


def test_prompt_reports_truncation(pipe):
    ex = PromptExplorer(pipe, "a red circle")
    ex.text.value = " ".join(["red circle"] * pipe.tokenizer.model_max_length)
    assert "cut off" in ex.tokens.value


def test_prompt_names_words_a_closed_vocabulary_model_never_learned(tmp_path):
    (tmp_path / "sdviz.json").write_text('{"closed_vocabulary": true}')
    closed = sdviz.tiny_pipeline(seed=0)
    closed.register_to_config(_name_or_path=str(tmp_path))  # as if loaded from that folder
    ex = PromptExplorer(closed, "a red circle")
    assert "sdviz-prompt-vocabulary" not in ex.tokens.value  # every word known
    ex.text.value = "a red giraffe"
    notice = sdviz.tracing.vocabulary_notice(closed, "a red giraffe")
    assert notice and "giraffe" in notice
    assert "sdviz-prompt-vocabulary" in ex.tokens.value and "giraffe" in ex.tokens.value
    assert ex.tokens.value.index("<sub>") < ex.tokens.value.index("unknown words")
    ex.text.value = " ".join(["giraffe"] * closed.tokenizer.model_max_length)
    assert "cut off" in ex.tokens.value and "unknown words" in ex.tokens.value  # side by side


def test_prompt_generate_button(pipe):
    ex = PromptExplorer(pipe, "a red circle", steps=3)
    ex.text.value = "a blue square"
    with count_calls(pipe.unet) as calls:
        ex.button.click()
    assert calls["n"] == 3  # one batched (CFG) UNet call per step
    assert ex.run["pipeline.prompt"] == "a blue square"
    assert ex.image.value[:4] == b"\x89PNG" and state(ex.image) == "sdviz-state-1"
    first = ex.image.value
    ex.text.value = "a yellow star"
    ex.button.click()
    assert ex.image.value != first and state(ex.image) == "sdviz-state-2"
    assert len(ex.runs) == 2 and not ex.button.disabled


# -- attention explorer -------------------------------------------------------------------


def test_attention_controls_change_the_map(pipe, run):
    ex = AttentionExplorer(run)
    assert len(ex.layer.options) == 1 + len(run.attention_layers) > 1
    with count_calls(pipe.unet) as calls:
        shown = ex.image.value
        ex.word.value = run.token_index("square")
        assert ex.image.value != shown and "square" in ex.state.value
        shown = ex.map.value
        ex.slider.value = 0
        assert ex.map.value != shown and "step 1 of" in ex.state.value
        layer = run.attention_layers[0]
        ex.layer.value = layer
        h, w = run[layer].shape[-2:]
        assert f"{h}×{w} map" in ex.state.value
        assert torch.equal(ex.current_map(), run[layer][0, run.token_index("square")])
    assert calls["n"] == 0


def test_attention_needs_maps(pipe):
    bare = sdviz.generate(pipe, PROMPT, steps=2, height=64, width=64, attention=None)
    with pytest.raises(ValueError, match="no cross-attention maps"):
        AttentionExplorer(bare)


def test_css_hooks_for_the_browser(pipe, run):
    """The classes the browser test (tests/test_browser.py) looks for."""
    classes = {
        c
        for w in (
            DenoisingExplorer(run, pipe),
            PromptExplorer(pipe),
            AttentionExplorer(run),
        )
        for c in _all_classes(w)
    }
    expected = {
        "sdviz-denoise",
        "sdviz-denoise-image",
        "sdviz-denoise-slider",
        "sdviz-denoise-play",
        "sdviz-denoise-state",
        "sdviz-prompt-text",
        "sdviz-prompt-tokens",
        "sdviz-prompt-generate",
        "sdviz-prompt-image",
        "sdviz-attention-image",
        "sdviz-attention-slider",
        "sdviz-attention-word",
        "sdviz-attention-layer",
    }
    assert expected <= classes, expected - classes


def _all_classes(widget) -> set[str]:
    found = set(getattr(widget, "_dom_classes", ()))
    for child in getattr(widget, "children", ()):
        found |= _all_classes(child)
    return found


def test_schedule_marker_lands_at_the_timestep():
    """The schedule panel is rendered once; the step's marker is stamped at its x pixel."""
    from matplotlib.figure import Figure

    from sdviz.widgets._images import MarkedFigure

    fig = Figure(figsize=(4, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1000], [0, 1])
    ax.set_xlim(0, 1000)
    marked = MarkedFigure(fig, [ax], dpi=50)
    base = np.asarray(marked.base.convert("L"), dtype=np.float32)
    for t in (250, 700):
        stamped = np.asarray(Image.open(io.BytesIO(marked.png(t))).convert("L"), dtype=np.float32)
        columns = np.nonzero((np.abs(stamped - base) > 40).any(axis=0))[0]
        assert abs(columns.mean() - ax.transData.transform([[t, 0]])[0][0]) < 2
