"""The published SD 1.5, SDXL, SD3-medium and FLUX.1-dev architectures on the meta device:
parameters per component against the published figures, token lengths, latent shapes,
the attention layers a trace hooks, and the per-word map memory (no weights allocated)."""

from __future__ import annotations

import pytest

from sdviz.architectures import (
    ARCHITECTURES,
    architecture_facts,
    architecture_pipeline,
    attention_map_shapes,
    comparison,
    meta_component,
)
from sdviz.builder import count_parameters

# published parameter counts (model cards, papers), to the precision they are quoted
CLIP_L, CLIP_G, T5_XXL = 123.06e6, 694.7e6, 4.762e9
VAE, VAE_16 = 83.65e6, 83.82e6  # 4 latent channels (SD 1.5, SDXL); 16 (SD3, Flux)
PUBLISHED = {
    "sd15": {"text_encoder": CLIP_L, "unet": 859.5e6, "vae": VAE},
    "sdxl": {"text_encoder": CLIP_L, "text_encoder_2": CLIP_G, "unet": 2.567e9, "vae": VAE},
    "sd3-medium": {
        "text_encoder": CLIP_L + 768 * 768,  # CLIP-L with its text projection
        "text_encoder_2": CLIP_G,
        "text_encoder_3": T5_XXL,
        "transformer": 2.028e9,
        "vae": VAE_16,
    },
    "flux-dev": {
        "text_encoder": CLIP_L,
        "text_encoder_2": T5_XXL,
        "transformer": 11.90e9,
        "vae": VAE_16,
    },
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def facts(request):
    return request.param, architecture_facts(request.param)


def test_parameters_per_component_match_the_published_figures(facts):
    name, f = facts
    assert set(f.parameters) == set(PUBLISHED[name])
    for component, published in PUBLISHED[name].items():
        assert f.parameters[component] == pytest.approx(published, rel=2e-3), component


def test_networks_are_built_without_memory():
    module = meta_component("flux-dev", "transformer")
    assert all(p.is_meta for p in module.parameters())


@pytest.mark.parametrize(
    "name, latent, grid, tokens, layers",
    [
        # SD 1.5: cross-attention in 3 down levels x 2, the mid block, 3 up levels x 3
        ("sd15", (4, 64, 64), 64, 77, 2 * 3 + 1 + 3 * 3),
        # SDXL: transformer depth 2 and 10 at its two attention levels, 2 down / 3 up blocks
        # each, and 10 in the mid block
        ("sdxl", (4, 128, 128), 128, 77, 2 * (2 + 10) + 10 + 3 * (10 + 2)),
        # SD3-medium: 24 MMDiT blocks over CLIP's 77 tokens + T5's 256, 2x2 patches
        ("sd3-medium", (16, 128, 128), 64, 77 + 256, 24),
        # Flux-dev: 19 double-stream + 38 single-stream blocks over T5's 512, latents packed 2x2
        ("flux-dev", (16, 128, 128), 64, 512, 19 + 38),
    ],
)
def test_shapes_tokens_and_attention_layers(name, latent, grid, tokens, layers):
    f = architecture_facts(name)
    assert f.latent_shape == latent
    assert f.resolution == latent[1] * 8  # every VAE here downsamples by 8
    assert f.denoiser_grid == (grid, grid)
    assert f.text_tokens == tokens
    assert f.attention_layers == layers


def test_text_encoders_and_guidance():
    sdxl, sd3, flux = (architecture_facts(n) for n in ("sdxl", "sd3-medium", "flux-dev"))
    # SDXL's cross-attention reads both CLIPs' token vectors side by side: 768 + 1280
    assert sum(t.width for t in sdxl.text_encoders) == 2048
    assert [t.tokens for t in sd3.text_encoders] == [77, 77, 256]
    assert [t.role for t in flux.text_encoders][0] == "pooled only"
    assert flux.guidance == "distilled" and sd3.guidance == sdxl.guidance == "classifier-free"
    assert sd3.scheduler == flux.scheduler == "FlowMatchEulerDiscreteScheduler"
    assert sd3.steps == flux.steps < sdxl.steps  # flow matching samples in fewer steps


def test_per_word_maps_fit_in_256_mb_where_every_head_would_not(facts):
    name, f = facts
    maps = attention_map_shapes(name)
    assert (maps.steps, maps.tokens, (maps.h, maps.w)) == (f.steps, f.text_tokens, f.denoiser_grid)
    assert maps.maps_bytes() <= 256 * 2**20
    assert maps.every_head_bytes() > 2**30  # several GB for the per-head, per-layer record


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="sdxl"):
        architecture_facts("sd4")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_pipeline_assembles_the_published_networks(name):
    """Built on the meta device: the pipeline class, its networks as in the facts, and
    tokenizers whose every id fits its text encoder's embedding table."""
    import diffusers

    pipe = architecture_pipeline(name, device="meta")
    f = architecture_facts(name)
    assert type(pipe) is getattr(diffusers, f.pipeline)
    for component, count in f.parameters.items():
        assert count_parameters(getattr(pipe, component)) == count
    for encoder in f.text_encoders:
        tokenizer = getattr(pipe, "tokenizer" + encoder.component.removeprefix("text_encoder"))
        assert len(tokenizer) <= getattr(pipe, encoder.component).config.vocab_size
    assert type(pipe.scheduler).__name__ == f.scheduler


def test_comparison_columns_follow_the_facts():
    columns = comparison(("sd15", "flux-dev"))
    assert {len(v) for v in columns.values()} == {2}
    assert columns["text encoders"] == ["CLIP-L", "CLIP-L + T5-XXL"]
    flux = architecture_facts("flux-dev")
    assert columns["denoiser (B params)"][1] == flux.parameters["transformer"] / 1e9
    assert columns["text tokens L (the denoiser reads)"] == [77, flux.text_tokens]
    chinese = comparison(("sd15", "flux-dev"), lang="zh")  # same values, Chinese headers
    assert [h.english for h in chinese] == list(columns)
    assert chinese["文本编码器"] == columns["text encoders"]
    assert chinese["引导方式"] == ["无分类器引导 7.5", "引导蒸馏 3.5"]
