"""Inside the noise predictor: sdviz.probes.unet (structure, timestep embedding) checked
against real forward passes, and the figures that draw them (unet_diagram, timestep_embedding).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from matplotlib.figure import Figure

from sdviz import figures, probes
from sdviz.attention import cross_attention_layers
from sdviz.builder import tiny_pipeline
from sdviz.figures.style import render
from sdviz.probes.unet import CROSS, DOWN, KINDS, RESNET, SELF, UP


def only_cross_unet() -> UNet2DConditionModel:
    """sdviz-mini's kind of design: three levels, a plain deepest block, attn1 of the first
    block (and its mirror) cross-attention, a mid block with attention."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention=(True, False, False),
        cross_attention_dim=24,
        attention_head_dim=8,
        norm_num_groups=16,
    ).eval()


@pytest.fixture(scope="module")
def unet():
    return only_cross_unet()


def shapes_of_a_forward_pass(unet, names, latent):
    """Output shape of every named module during one real forward pass."""
    seen = {}

    def record(name):
        def hook(_module, _inputs, out):  # returns None: the output is left as it is
            seen.setdefault(name, tuple((out[0] if isinstance(out, tuple) else out).shape))

        return hook

    handles = [unet.get_submodule(n).register_forward_hook(record(n)) for n in names]
    try:
        with torch.no_grad():
            text = torch.randn(1, 5, unet.config.cross_attention_dim)
            unet(torch.randn(1, unet.config.in_channels, *latent), 10, encoder_hidden_states=text)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("latent", [(8, 8), (12, 10), (7, 7)])
def test_every_layer_has_the_channels_and_resolution_of_a_real_forward_pass(unet, latent):
    s = probes.unet_structure(unet, latent_size=latent)
    assert s.latent_size == latent
    layers = [layer for b in s.blocks for layer in b.layers]
    seen = shapes_of_a_forward_pass(unet, [layer.name for layer in layers], latent)
    assert set(seen) == {layer.name for layer in layers}  # each was called
    for layer in layers:
        shape = seen[layer.name]
        h, w = layer.resolution
        if layer.kind in (SELF, CROSS):  # attention: (batch, h*w tokens, channels)
            assert shape[1:] == (h * w, layer.channels), layer.name
        else:
            assert shape[1:] == (layer.channels, h, w), layer.name
    # every module of a kind is listed, in the order the forward pass calls them
    assert s.count(RESNET) == sum(type(m).__name__ == "ResnetBlock2D" for m in unet.modules())
    order = list(seen)
    assert [n for n in order if n in set(s.layers(RESNET))] == s.layers(RESNET)


def test_skips_are_the_tensors_the_up_blocks_concatenate(unet):
    s = probes.unet_structure(unet)
    saved = 1 + sum(  # conv_in, then each down ResNet (with its attention) and downsampler
        b.count(RESNET) + b.count(DOWN) for b in s.blocks if b.part == "down"
    )
    assert len(s.skips) == saved
    by_target = {k.target: k for k in s.skips}
    for b in (b for b in s.blocks if b.part == "up"):
        previous = s.blocks[s.blocks.index(b) - 1].channels
        for layer in (x for x in b.layers if x.kind == RESNET):
            skip = by_target[layer.name]
            conv1 = unet.get_submodule(layer.name).conv1
            assert conv1.in_channels == previous + skip.channels, layer.name
            assert skip.resolution == b.resolution
            previous = layer.channels
    assert s.skips[-1].source == "conv_in"


def test_where_the_text_and_the_timestep_enter(unet):
    s = probes.unet_structure(unet)
    assert set(s.layers(CROSS)) == set(cross_attention_layers(unet))
    assert s.layers(SELF) and not set(s.layers(SELF)) & set(s.layers(CROSS))
    # the only_cross_attention blocks: attn1 is cross-attention, no self-attention there
    assert s.only_cross_attention == ("down_blocks.0", "up_blocks.2")
    for name in s.only_cross_attention:
        block = next(b for b in s.blocks if b.name == name)
        assert block.count(SELF) == 0  # one transformer block per ResNet, both layers cross
        assert block.count(CROSS) == 2 * block.count(RESNET)
    for name in s.layers(RESNET):  # every ResNet reads the timestep embedding
        assert unet.get_submodule(name).time_emb_proj.in_features == s.time_dim
    assert s.time_features == unet.time_embedding.linear_1.in_features
    assert s.text_dim == unet.config.cross_attention_dim
    assert s.text_tokens is None  # a bare UNet: the tokenizer's length is unknown
    table = s.table()
    assert table["block"] == [b.name for b in s.blocks]
    assert sum(table["skips in"]) == len(s.skips)
    assert set(KINDS) == {RESNET, SELF, CROSS, DOWN, UP}
    with pytest.raises(ValueError, match="kind"):
        s.layers("convolution")


def test_sd15_skeleton_structure_without_weights():
    pipe = probes.sd_skeleton("1.5")
    unet = pipe.unet
    assert next(unet.parameters()).device.type == "meta"
    s = probes.unet_structure(pipe)
    attn2 = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    assert sorted(s.layers(CROSS)) == sorted(attn2) and s.count(SELF) == len(attn2)
    assert s.text_tokens == pipe.tokenizer.model_max_length
    assert s.text_dim == pipe.text_encoder.config.hidden_size
    sizes = [b.resolution[0] for b in s.blocks if b.part == "down"]
    side = unet.config.sample_size
    assert sizes == [side // 2**i for i in range(len(unet.config.block_out_channels))]
    assert s.time_dim == unet.time_embedding.linear_2.out_features
    fig = figures.unet_diagram(s)
    assert f"{len(attn2)} cross-attention layers" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="meta"):
        probes.timestep_embeddings(pipe)
    with pytest.raises(ValueError, match="latent_size"):
        figures.unet_diagram(s, latent_size=32)


def test_timestep_embedding_is_what_the_unet_adds(unet):
    """The probe's vector for t is the one time_embedding makes in a real forward pass."""
    emb = probes.timestep_embeddings(unet, [0, 10, 999])
    seen = []
    handle = unet.time_embedding.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            text = torch.randn(1, 3, unet.config.cross_attention_dim)
            unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=text)
    finally:
        handle.remove()
    np.testing.assert_allclose(emb.embeddings[1], seen[0][0].numpy(), atol=1e-5)
    assert emb.features.shape == (3, unet.time_proj.num_channels)
    assert np.abs(emb.features).max() <= 1.0 + 1e-6  # sines and cosines
    sim = emb.similarity()
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    assert emb.cosine(0, 999) == pytest.approx(float(sim[0, 2]))
    with pytest.raises(ValueError, match="not probed"):
        emb.cosine(0, 5)
    with pytest.raises(ValueError, match="which"):
        emb.similarity("weights")
    with pytest.raises(ValueError, match="0..999"):
        probes.timestep_embeddings(unet, [1000])


def test_timestep_embedding_defaults_to_every_training_step():
    pipe = tiny_pipeline(seed=0)
    emb = probes.timestep_embeddings(pipe)
    n = pipe.scheduler.config.num_train_timesteps
    assert emb.timesteps.tolist() == list(range(n))
    # neighbouring t: nearly the same features, far apart t: not
    assert emb.cosine(0, 1, "features") > emb.cosine(0, n - 1, "features")
    assert len(probes.timestep_embeddings(pipe, 5).timesteps) == 5


def test_timestep_figure_draws_the_record():
    pipe = tiny_pipeline(seed=0)
    emb = probes.timestep_embeddings(pipe)
    fig = figures.timestep_embedding(emb)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 4
    assert render(fig)[..., :3].std() > 8
    text = "\n".join(ax.get_title() for ax in axes) + fig.get_suptitle()
    assert f"{emb.features.shape[1]} sinusoidal features" in text
    assert f"{emb.embeddings.shape[1]}-wide" in text
    rows = [t.get_text() for t in axes[0].get_yticklabels()]
    assert rows[:3] == ["0", "1", "2"] and rows[-1] == "999"
    with pytest.raises(ValueError, match="not probed"):
        figures.timestep_embedding(emb, reference=5000)
    with pytest.raises(TypeError, match="timestep_embeddings"):
        figures.timestep_embedding(probes.unet_structure(pipe))


def test_diagram_draws_one_chip_per_layer(unet):
    s = probes.unet_structure(unet)
    fig = figures.unet_diagram(s)
    letters = [t.get_text() for t in fig.axes[0].texts]
    n_layers = sum(len(b.layers) for b in s.blocks)
    chips = sum(letters.count(x) for x in ("R", "S", "C", "↓", "↑"))
    assert chips == n_layers + 3  # and the legend's R, S, C
    assert sum("skips" in x for x in letters) == sum(b.part == "up" for b in s.blocks)
    assert any("only_cross_attention" in x for x in letters)


def test_attention_table_says_where_keys_come_from(unet):
    pipe = tiny_pipeline(seed=0)
    s = probes.unet_structure(pipe)
    table = s.attention_table()
    assert len(table["layer"]) == s.count(SELF) + s.count(CROSS)
    layers = {x.name: x for b in s.blocks for x in b.layers}
    for name, kind, keys, matrix in zip(
        table["layer"], table["kind"], table["keys (count × width)"],
        table["attention matrix per head (queries × keys)"], strict=True,
    ):  # fmt: skip
        h, w = layers[name].resolution
        if kind == CROSS:  # keys: the prompt's token vectors, as wide as the text encoder's
            assert (
                keys
                == f"{pipe.tokenizer.model_max_length} × {pipe.text_encoder.config.hidden_size}"
            )
            assert matrix == f"{h * w} × {pipe.tokenizer.model_max_length}"
        else:  # keys: the image positions, as wide as the block's channels
            assert keys == f"{h * w} × {layers[name].channels}" and matrix == f"{h * w} × {h * w}"
    # in Chinese: the same numbers under Chinese headers, the kinds in the glossary's words
    zh = s.attention_table("zh")
    assert list(zh.values())[3:5] == list(table.values())[3:5]
    assert set(zh["类型"]) == {"自注意力", "交叉注意力"}
    assert zh["键、值来自"].count("文本标记") == s.count(CROSS)
    assert list(s.table("zh"))[0] == "块" and list(s.table("zh").values()) == list(
        s.table("en").values()
    )


def test_cosines_to_a_reference():
    emb = probes.timestep_embeddings(tiny_pipeline(seed=0), [0, 3, 500, 999])
    got = emb.cosines(0, [3, 999, 500], "features")
    want = [emb.cosine(0, t, "features") for t in (3, 999, 500)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="not probed"):
        emb.cosines(1, [3])


def test_what_else_enters_with_t_and_which_denoisers_have_no_unet():
    """SDXL adds the pooled text and the image sizes to t's embedding: the record and the
    figure say so; SD 1.x adds nothing; a transformer denoiser gets a teaching error."""
    from sdviz.builder import tiny_sd3_pipeline, tiny_sdxl_pipeline

    sdxl = probes.unet_structure(tiny_sdxl_pipeline())
    assert sdxl.time_added == ("add_embedding", "text_time")
    assert "pooled text" in sdxl.time_added_text("en")
    title_and_texts = [t.get_text() for t in figures.unet_diagram(sdxl, lang="en").axes[0].texts]
    assert f"+ {sdxl.time_added_text('en')}" in title_and_texts
    # in Chinese the box says it in Chinese, the module's name kept
    chinese = [t.get_text() for t in figures.unet_diagram(sdxl, lang="zh").axes[0].texts]
    assert "+ add_embedding：池化的文本向量和图像尺寸 ID" in chinese
    assert probes.unet_structure(tiny_pipeline(seed=0)).time_added is None
    with pytest.raises(TypeError, match="no UNet"):
        probes.unet_structure(tiny_sd3_pipeline())
