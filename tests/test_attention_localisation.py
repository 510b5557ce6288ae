"""Localisation scores of attention maps against masks (sdviz.probes.attention)."""

from __future__ import annotations

import pytest
import torch

from sdviz.attention import cross_attention_layers
from sdviz.builder import tiny_pipeline
from sdviz.probes.attention import (
    LocalisationConfig,
    localisation,
    scores,
    token_shares,
    word_positions,
)


def _masks():
    own = torch.zeros(2, 8, 8, dtype=torch.bool)
    own[0, :4, :4] = True  # object 0: top-left quarter
    own[1, 4:, 4:] = True  # object 1: bottom-right quarter
    return own, own.flip(0)  # each one's "other" is the other object


def test_scores_of_known_maps():
    own, other = _masks()
    maps = torch.zeros(2, 8, 8)
    maps[0, :4, :4] = 1.0  # exactly on its object
    maps[1, :4, :4] = 3.0  # on the other object, mostly
    maps[1, 6, 6] = 1.0
    s = scores(maps, own, other)
    assert s["pointing"].tolist() == [1.0, 0.0]
    assert s["iou"][0] == 1.0 and s["iou"][1] == 0.0  # cut at 0.4: only the wrong quarter
    assert torch.allclose(s["mass"], torch.tensor([1.0, 1.0 / 49.0]))
    assert s["own>other"].tolist() == [1.0, 0.0]
    # the threshold matters: at 0.3 the weak peak joins the map of object 1
    low = scores(maps, own, other, LocalisationConfig(threshold=0.3))
    assert low["iou"][1] > 0


def test_scores_resize_and_no_other_object():
    own, _ = _masks()
    coarse = torch.zeros(2, 2, 2)
    coarse[0, 0, 0] = coarse[1, 1, 1] = 1.0  # a 2x2 map resized to the 8x8 masks
    s = scores(coarse, own)
    assert s["pointing"].tolist() == [1.0, 1.0]
    assert torch.isnan(s["own>other"]).all()  # nothing to compare with
    batched = scores(torch.stack([coarse, coarse.flip(0)]), own)  # (2 variants, N, h, w)
    assert batched["pointing"].shape == (2, 2) and batched["pointing"][1].tolist() == [0.0, 0.0]


def test_token_shares_add_up():
    maps = torch.rand(3, 10, 4, 4)
    maps = maps / maps.sum(1, keepdim=True)  # a softmax over the 10 tokens
    s = token_shares(maps, n_tokens=5)
    assert abs(sum(s.values()) - 1.0) < 1e-5
    assert abs(s["start"] - float(maps[:, 0].mean())) < 1e-6
    assert abs(s["words"] - float(maps[:, 1:4].mean((0, 2, 3)).sum())) < 1e-5


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_word_positions(pipe):
    tok = pipe.tokenizer
    caption = "a small red circle, a blue square and a green star"
    noun, colour = word_positions(tok, caption, "blue", "square")
    ids = tok(caption).input_ids
    assert (
        ids[colour : noun + len(tok("square").input_ids) - 2] == tok("blue square").input_ids[1:-1]
    )
    with pytest.raises(ValueError, match="names no"):
        word_positions(tok, caption, "purple", "square")


def test_localisation_on_a_tiny_pipeline(pipe):
    name = cross_attention_layers(pipe.unet)[0]
    rec = localisation(
        pipe, count=3, timesteps=(500, 100), compare={"one layer": lambda m: m[name].mean(2)}
    )
    i = rec.layers.index(name)
    for m in ("pointing", "mass"):  # a compared aggregate is scored like the layers
        assert torch.equal(rec.aggregates["one layer"][m], rec.per_layer[m][i])
    n_layers = len(rec.layers)
    n_obj = rec.per_layer["pointing"].shape[-1]
    assert n_obj >= 3 and rec.per_layer["iou"].shape == (n_layers, 2, 2, n_obj)
    heads = rec.per_head["pointing"].shape[1]
    assert rec.per_head["mass"].shape == (n_layers, heads, 2, 2, n_obj)
    for agg in rec.aggregates.values():
        assert ((agg["mass"] >= 0) & (agg["mass"] <= 1)).all()
    assert abs(sum(rec.shares.values()) - 1.0) < 1e-4
    # a layer map is the mean of its heads: its mass is a weighted mean of theirs
    lo = rec.per_head["mass"].amin(1) - 1e-5
    hi = rec.per_head["mass"].amax(1) + 1e-5
    layer = rec.per_layer["mass"]
    assert ((layer >= lo) & (layer <= hi)).all()


def test_localisation_figures(pipe):
    from sdviz import figures

    rec = localisation(pipe, count=2, timesteps=(500,))
    fig = figures.attention_localisation(rec)
    axes = fig.axes[:4]  # noun / colour x pointing / mIoU, then the colour bar
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert len(labels) == len(rec.layers) + len(rec.aggregates)
    assert sum(label.endswith("*") for label in labels) == len(rec.default_layers) > 0
    cells = [t.get_text() for t in axes[0].texts]
    assert len(cells) == len(labels) * len(rec.timesteps)
    bars = figures.attention_shares({"a": rec.shares, "b": rec.shares})
    shown = [t.get_text() for t in bars.axes[0].texts]
    assert len(shown) == 6 and any(s.startswith("words") for s in shown)
