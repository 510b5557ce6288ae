"""Cross-attention capture: layer selection, per-layer/per-head maps, aggregation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdviz.attention import (
    AttentionCapture,
    aggregate,
    capture_attention,
    check_layer_filter,
    cross_attention_layers,
    default_aggregate_layers,
    layer_halvings,
    mean_of_layers,
    select_layers,
)
from sdviz.builder import tiny_pipeline
from sdviz.tracing import trace

STEPS = 3


@pytest.fixture(scope="module")
def pipe(device):
    return tiny_pipeline().to(device)


def _call(pipe, prompt="a red circle and a blue square"):
    gen = torch.Generator(pipe.device).manual_seed(0)
    pipe(prompt, num_inference_steps=STEPS, generator=gen, output_type="pt")


def test_layer_names_and_resolutions(pipe):
    names = cross_attention_layers(pipe.unet)
    assert len(names) == 7 and all(n.endswith("attn2") for n in names)
    halvings = layer_halvings(pipe.unet, names)
    assert halvings["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == 0
    assert halvings["down_blocks.1.attentions.0.transformer_blocks.0.attn2"] == 1
    assert halvings["mid_block.attentions.0.transformer_blocks.0.attn2"] == 1
    assert halvings["up_blocks.0.attentions.1.transformer_blocks.0.attn2"] == 1
    assert halvings["up_blocks.1.attentions.1.transformer_blocks.0.attn2"] == 0


def test_select_layers():
    names = ["down_blocks.0.a.attn2", "mid_block.a.attn2", "up_blocks.1.a.attn2"]
    assert select_layers(names, "up_blocks") == ["up_blocks.1.a.attn2"]
    assert select_layers(names, "*blocks.?.a*") == [names[0], names[2]]
    assert select_layers(names, ["mid", "down"]) == [names[0], names[1]]
    assert select_layers(names, None) == []
    with pytest.raises(ValueError, match="(?s)matches none.*mid_block"):
        check_layer_filter(names, "attn1")
    with pytest.raises(TypeError, match="attention_layers"):
        check_layer_filter(names, 3)
    with pytest.raises(TypeError, match="attention_layers"):
        check_layer_filter(names, [])


def test_per_layer_and_per_head_shapes(pipe):
    L = pipe.tokenizer.model_max_length
    with trace(pipe, attention_layers="down_blocks.1") as tr:
        _call(pipe)
    with trace(pipe, attention_layers=["up_blocks.1"], attention_heads=True) as tr_heads:
        _call(pipe)
    run, run_h = tr.last, tr_heads.last
    low = "attention.down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert run.attention_layers == [low]
    assert run[low].shape == (STEPS, L, 4, 4)
    high = [k for k in run_h.attention_layers]
    assert len(high) == 2 and all(k.startswith("attention.up_blocks.1") for k in high)
    heads = pipe.unet.get_submodule(high[0].removeprefix("attention.")).heads
    for key in high:
        assert run_h[key].shape == (STEPS, heads, L, 8, 8)
        sums = run_h[key].sum(2)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    # the same generation: the per-head maps average to what the mean-only capture sees
    assert torch.allclose(run["attention.maps"], run_h["attention.maps"], atol=1e-6)


def test_aggregate_is_mean_of_resized_default_layers(pipe):
    with trace(pipe, attention_layers="*") as tr:
        _call(pipe)
    run = tr.last
    layers = run.attention_layers
    assert len(layers) == 7 == run["attention.n_layers"]  # every layer that attends is listed
    default = default_aggregate_layers(pipe.unet)
    assert len(default) == 5 and not any(n.startswith("mid_block") for n in default)
    assert run["attention.aggregate_layers"] == default  # the run says which it averaged
    h, w = run["denoiser.latents"].shape[-2:]
    resized = [
        F.interpolate(run["attention." + n], size=(h, w), mode="bicubic", align_corners=False)
        for n in default
    ]
    mean = torch.stack(resized).mean(0).clamp_min(0)
    assert torch.allclose(run["attention.maps"], mean / mean.sum(1, keepdim=True), atol=1e-6)
    maps = {n: run["attention." + n] for n in default}
    assert torch.allclose(aggregate(maps, default, (h, w)), run["attention.maps"], atol=1e-6)
    sums = run["attention.maps"].sum(1)  # still shares of each position's attention
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert run["attention.maps"].min() >= 0
    everything = mean_of_layers(
        {k.removeprefix("attention."): run[k] for k in layers},
        [k.removeprefix("attention.") for k in layers],
        (h, w),
    )
    assert not torch.allclose(run["attention.maps"], everything, atol=1e-4)  # not all layers


def test_default_aggregate_layers_rule():
    """attn2 outside the mid block; attn1 cross-attention and the mid block are left out."""
    from sdviz.builder import tiny_pipeline as build

    unet = build().unet
    names = cross_attention_layers(unet)
    chosen = default_aggregate_layers(unet)
    halvings = layer_halvings(unet, names)
    assert chosen == [
        n
        for n in names
        if n.endswith("attn2")
        and not n.startswith("mid_block")
        and not (n.startswith("down") and halvings[n] > 0)
    ]
    assert any(n.startswith("down") for n in chosen) and any(n.startswith("up") for n in chosen)
    with pytest.raises(ValueError, match="aggregate must name"):
        AttentionCapture(unet, aggregate=["no.such.layer"])


def test_capture_with_a_chosen_aggregate(pipe):
    """capture_attention averages the layers it is told to, and restores the processors."""
    names = cross_attention_layers(pipe.unet)
    before = {n: pipe.unet.get_submodule(n).processor for n in names}
    emb = torch.randn(1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim)
    x = torch.randn(1, 4, 8, 8)
    with capture_attention(pipe.unet, layers="*", aggregate=names[-1:]) as cap:
        cap.begin(8, 8, 0)
        with torch.no_grad():
            pipe.unet(x.to(pipe.device), 10, encoder_hidden_states=emb.to(pipe.device))
        mean, detail, layers = cap.end()
    assert sorted(layers) == sorted(names) and set(detail) == set(names)  # call order
    assert torch.allclose(mean, aggregate(detail, names[-1:], (8, 8)), atol=1e-6)
    assert all(pipe.unet.get_submodule(n).processor is before[n] for n in names)


def test_probabilities_match_classic_attention(pipe):
    """Recorded per-head maps equal diffusers' own get_attention_scores on the cond item."""
    name = "mid_block.attentions.0.transformer_blocks.0.attn2"
    attn = pipe.unet.get_submodule(name)
    seen = []

    def grab(module, args, kwargs):
        seen.append((args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()))

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with trace(pipe, attention_layers=name, attention_heads=True) as tr:
            _call(pipe)
    finally:
        handle.remove()
    hidden, context = seen[0]  # step 0, batch [uncond, cond]
    with torch.no_grad():
        q = attn.head_to_batch_dim(attn.to_q(hidden[1:]))
        k = attn.head_to_batch_dim(attn.to_k(context[1:]))
        probs = attn.get_attention_scores(q, k)  # (heads, hw, L)
    recorded = tr.last["attention." + name][0]  # (heads, L, h, w)
    expected = probs.transpose(1, 2).reshape(recorded.shape).cpu()
    assert torch.allclose(recorded, expected, atol=1e-5)
    # and it is the text-conditioned half, not the unconditional one
    with torch.no_grad():
        k_u = attn.head_to_batch_dim(attn.to_k(context[:1]))
        q_u = attn.head_to_batch_dim(attn.to_q(hidden[:1]))
        uncond = attn.get_attention_scores(q_u, k_u).transpose(1, 2).reshape(recorded.shape)
    assert not torch.allclose(recorded, uncond.cpu(), atol=1e-3)


def test_memory_estimate(pipe):
    cap = AttentionCapture(pipe.unet)
    agg, detail = cap.estimate_bytes(steps=50, tokens=77, h=64, w=64)
    assert agg == 50 * 77 * 64 * 64 * 4 and detail == 0
    cap = AttentionCapture(pipe.unet, layers="*", heads=True)
    _, detail = cap.estimate_bytes(steps=1, tokens=77, h=8, w=8)
    pixels = {0: 64, 1: 16}
    want = sum(8 * 77 * pixels[k] * 4 for k in cap.halvings.values())
    assert detail == want
