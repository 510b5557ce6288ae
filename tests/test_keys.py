"""The key table is the single source: every Run holds exactly its documented keys."""

from __future__ import annotations

import pytest
import torch

from sdviz.builder import tiny_pipeline
from sdviz.pipeline import set_scheduler
from sdviz.tracing import generate, trace
from sdviz.tracing.keys import (
    CONDITIONS,
    FAMILIES,
    KEYS,
    TABLE,
    describe,
    expected_keys,
    markdown_table,
)

FAMILY = "stable-diffusion"
SD_CONDITIONS = {"text", "negative", "cfg", "diffusion", "alphas", "decoded", "attention"}


@pytest.fixture(scope="module")
def pipe(device):
    return tiny_pipeline(seed=0).to(device)


def _call(pipe, **kw):
    kw.setdefault("num_inference_steps", 2)
    return pipe("a red circle", generator=torch.Generator(pipe.device).manual_seed(0), **kw)


@pytest.mark.parametrize(
    ("options", "call", "conditions"),
    [
        ({}, {}, {"text", "negative", "cfg", "diffusion", "alphas", "decoded", "attention"}),
        ({}, {"guidance_scale": 1.0}, {"text", "diffusion", "alphas", "decoded", "attention"}),
        (
            {"attention": None},
            {"output_type": "latent"},
            {"text", "negative", "cfg", "diffusion", "alphas"},
        ),
    ],
)
def test_raw_trace_holds_exactly_the_documented_keys(pipe, options, call, conditions):
    with trace(pipe, **options) as tr:
        _call(pipe, **call)
    assert set(tr.last) == expected_keys(FAMILY, conditions)


def test_sigma_scheduler_and_layers_add_their_keys(pipe):
    original = pipe.scheduler
    try:
        set_scheduler(pipe, "euler")
        with trace(pipe, attention_layers="up_blocks") as tr:
            _call(pipe)
    finally:
        pipe.scheduler = original
    run = tr.last
    layers = [name for name in run["attention.layers"] if name.startswith("up_blocks")]
    conditions = {"text", "negative", "cfg", "diffusion", "alphas", "sigmas", "decoded"}
    conditions |= {"attention", "layers"}
    assert layers and set(run) == expected_keys(FAMILY, conditions, layers)
    assert run.attention_layers == ["attention." + name for name in layers]


def test_generate_holds_the_same_keys_as_a_raw_trace(pipe):
    run = generate(pipe, "a red circle", steps=2, guidance_scale=3.0)
    assert set(run) == expected_keys(FAMILY, SD_CONDITIONS)


def test_repr_prints_each_keys_meaning(pipe):
    run = generate(pipe, "a red circle", steps=2, guidance_scale=3.0)
    text = repr(run)
    for key in run:
        assert describe(key).meaning in text
    with pytest.raises(KeyError, match="no such key"):
        run["text_encoder.negative_prompt_embeds_typo"]
    no_cfg = generate(pipe, "a red circle", steps=2, guidance_scale=1.0)
    with pytest.raises(KeyError, match="unconditional branch"):
        no_cfg["text_encoder.negative_prompt_embeds"]


def test_table_is_well_formed():
    names = [k.name for k in KEYS]
    assert len(names) == len(set(names)) == len(TABLE)
    for key in KEYS:
        component, _, output = key.name.partition(".")
        assert component and output and key.meaning and key.shape
        assert set(key.when.split("+")) <= set(CONDITIONS)
        assert key.families and set(key.families) <= set(FAMILIES)
    assert "| `denoiser.latents` |" in markdown_table()
    with pytest.raises(KeyError, match="not a Run key"):
        describe("unet.latents")
    with pytest.raises(ValueError, match="unknown family"):
        expected_keys("no-such-family", ())


def test_readme_shows_the_key_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = "<!-- key table: generated from sdviz.tracing.keys.markdown_table() -->\n"
    section = readme[readme.index(start) + len(start) : readme.index("<!-- end of key table -->")]
    assert section.strip() == markdown_table(), (
        "README's key table differs from sdviz.tracing.keys: paste markdown_table() again"
    )


def test_sd2_style_v_prediction_run_holds_the_same_keys(device):
    v_pipe = tiny_pipeline(seed=0, prediction_type="v_prediction").to(device)
    with trace(v_pipe) as tr:
        _call(v_pipe)
    assert tr.last["denoiser.prediction_type"] == "v_prediction"
    assert set(tr.last) == expected_keys(FAMILY, SD_CONDITIONS)


def test_accessors_answer_the_lessons_questions(pipe):
    run = generate(pipe, "a red circle", steps=3, guidance_scale=3.0, attention_layers="up_blocks")
    maps = run["attention.maps"]  # (S, L, h, w)
    i = run.token_index("circle")
    assert torch.equal(run.word_map("circle", step=-1), maps[-1, i])
    assert torch.allclose(run.word_map("circle"), maps[:, i].mean(0))
    layer = run.attention_layers[0]
    assert torch.equal(run.word_map(i, step=0, layer=layer), run[layer][0, i])
    assert torch.equal(
        run.word_map(i, step=0, layer=layer.removeprefix("attention.")), run[layer][0, i]
    )
    shares = run.token_shares(step=1)
    assert shares.shape == (maps.shape[1],) and torch.isclose(shares.sum(), torch.tensor(1.0))
    assert torch.allclose(run.token_shares(), maps.mean((2, 3)).mean(0))
    with pytest.raises(KeyError, match="was not recorded"):
        run.word_map("circle", layer="down_blocks.0.attentions.0.transformer_blocks.0.attn2")
    with pytest.raises(ValueError, match="not a token"):
        run.word_map("square")


# -- today's families: each Run holds exactly its family's documented keys ---------------
SHORT = {"stable-diffusion-xl": "sdxl", "stable-diffusion-3": "sd3", "flux": "flux"}


def _tiny(family: str):
    from sdviz import builder

    return getattr(builder, f"tiny_{SHORT[family]}_pipeline")(seed=0)


def _family_call(pipe, **kw):
    kw = {"output_type": "pt", **kw}
    size = dict(height=64, width=64, num_inference_steps=2)
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **size, **kw)


@pytest.mark.parametrize(
    ("family", "options", "call", "conditions"),
    [
        # SD3: CFG encodes the (empty) negative prompt with all three encoders
        (
            "stable-diffusion-3",
            {},
            {},
            {"text", "negative", "cfg", "flow", "sigmas", "decoded", "attention"},
        ),
        (
            "stable-diffusion-3",
            {"image_to_text": True, "text_share": True},
            {"guidance_scale": 1.0},
            {"text", "flow", "sigmas", "decoded", "attention", "image_to_text", "text_share"},
        ),
        (
            "stable-diffusion-3",
            {"attention": None},
            {"output_type": "latent"},
            {"text", "negative", "cfg", "flow", "sigmas"},
        ),
        # Flux dev: guidance distilled, no unconditional branch
        ("flux", {}, {}, {"text", "flow", "sigmas", "distilled", "decoded", "attention"}),
        # SDXL: an empty negative prompt is zeroed, not encoded; a given one is encoded
        (
            "stable-diffusion-xl",
            {},
            {},
            {"text", "cfg", "diffusion", "alphas", "sigmas", "decoded", "attention"},
        ),
        (
            "stable-diffusion-xl",
            {},
            {"negative_prompt": "blue"},
            {"text", "negative", "cfg", "diffusion", "alphas", "sigmas", "decoded", "attention"},
        ),
    ],
)
def test_each_family_holds_exactly_its_documented_keys(family, options, call, conditions):
    pipe = _tiny(family)
    with trace(pipe, **options) as tr:
        _family_call(pipe, **call)
    assert set(tr.last) == expected_keys(family, conditions)


def test_flux_without_guidance_embedding_holds_no_guidance_key():
    from sdviz.builder import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(seed=0, guidance_embeds=False)
    with trace(pipe, attention_layers="single_transformer_blocks.1") as tr:
        _family_call(pipe)
    layer = "single_transformer_blocks.1.attn"
    conditions = {"text", "flow", "sigmas", "decoded", "attention", "layers"}
    assert set(tr.last) == expected_keys("flux", conditions, [layer])
    assert tr.last["attention." + layer].shape == tr.last["attention.maps"].shape


def test_flow_families_hold_no_alpha_bar_and_diffusion_ones_no_velocity():
    for family in ("stable-diffusion-3", "flux"):
        keys = expected_keys(family, CONDITIONS)
        assert "scheduler.step_alpha_bar" not in expected_keys(family, {"flow", "text"})
        assert "denoiser.velocity" in keys and "denoiser.noise_pred" not in keys
    assert describe("scheduler.step_alpha_bar").when == "diffusion"
    assert "denoiser.velocity" not in expected_keys("stable-diffusion-xl", CONDITIONS)
