"""sdviz.probes.clip.counterfactuals: test pictures that face their own caption and both
of its counterfactuals (lesson 6), scored by true_wins, drawn with the true caption marked."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace

import numpy as np
import pytest

from sdviz import figures
from sdviz.probes import ClipEmbeddings
from sdviz.probes.clip import COUNTERFACTUAL_KINDS, counterfactuals
from sdviz.shapes import ShapesWorld, contrast_captions


@pytest.fixture(scope="module")
def picked():
    return counterfactuals(ShapesWorld(size=32, split="test"), 4)


def test_each_picture_faces_its_caption_and_both_counterfactuals(picked):
    per = 1 + len(COUNTERFACTUAL_KINDS)
    assert len(picked.images) == 4 and len(picked.captions) == len(picked.kinds) == 4 * per
    assert picked.truth == [i * per for i in range(4)]
    for col in picked.truth:
        true = picked.captions[col]
        assert picked.kinds[col] == "true caption"
        assert picked.captions[col + 1 : col + per] == list(contrast_captions(true).values())
        assert picked.kinds[col + 1 : col + per] == list(COUNTERFACTUAL_KINDS.values())
        # "a picture of a small orange triangle" has no counterfactual: never picked
        flipped, swapped = picked.captions[col + 1], picked.captions[col + 2]
        assert flipped != true and len(flipped.split()) == len(true.split())
        words = [w for w in true.split() if w not in ("a", "an")]
        assert sorted(words) == sorted(w for w in swapped.split() if w not in ("a", "an"))
    with pytest.raises(ValueError, match="every counterfactual"):
        counterfactuals(ShapesWorld(size=32, split="test"), 50, search=20)


def test_true_wins_counts_ties_half(picked):
    sim = np.zeros((len(picked.images), len(picked.captions)))  # (images, captions)
    for row, col in enumerate(picked.truth):
        sim[row, col] = 0.9  # the true caption
        sim[row, col + 1] = 0.9  # relation flipped: a tie, as a bag-of-words CLIP scores it
        sim[row, col + 2] = 0.1 if row % 2 else 0.95  # colours swapped: beaten on half
    wins = picked.true_wins(SimpleNamespace(similarity=sim))
    assert wins == {"relation flipped": 0.5, "colours swapped": 0.5}
    sim[:, [c + 1 for c in picked.truth]] = 0.0  # every flipped caption beaten
    assert picked.true_wins(SimpleNamespace(similarity=sim))["relation flipped"] == 1.0


def test_similarity_figure_marks_the_true_caption_and_kinds(picked):
    n, m = len(picked.images), len(picked.captions)
    rng = np.random.default_rng(0)
    emb = ClipEmbeddings(
        picked.images, picked.captions, rng.normal(size=(n, 8)), rng.normal(size=(m, 8))
    )
    fig = figures.clip_similarity(emb, truth=picked.truth, caption_kinds=picked.kinds)
    ax = fig.axes[0]
    dashed = [p for p in ax.patches if p.get_linestyle() == "--"]
    assert len(dashed) == n and [int(round(p.get_x() + 0.42)) for p in dashed] == picked.truth
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0].startswith("[true caption]") and "[relation flipped]" in labels[1]
    with pytest.raises(ValueError, match="one caption column per image"):
        figures.clip_similarity(emb, truth=[0])
