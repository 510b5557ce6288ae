"""ShapesWorld: determinism, ground truth that matches the pixels, held-out pairs."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from sdviz.shapes import (
    COLOURS,
    HELD_OUT_PAIRS,
    SHAPES,
    ShapesWorld,
    contrast_captions,
    says_where,
    vocabulary_captions,
)


def test_same_seed_same_sample_and_different_seeds_differ():
    a, b = ShapesWorld(seed=3)[17], ShapesWorld(seed=3)[17]
    assert np.array_equal(a.image, b.image) and a.caption == b.caption
    c = ShapesWorld(seed=4)[17]
    assert not np.array_equal(a.image, c.image)
    assert ShapesWorld(seed=3)[18].caption != a.caption or not np.array_equal(
        ShapesWorld(seed=3)[18].image, a.image
    )


def test_image_format_and_caption_names_every_object():
    world = ShapesWorld(size=64)
    for i in range(40):
        s = world[i]
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.objects) <= 3
        for o in s.objects:
            assert f"{o.colour} {o.shape}" in s.caption
            assert o.mask.shape == (64, 64) and o.mask.sum() > 20


def test_masks_match_pixels():
    world = ShapesWorld(size=64, seed=1)
    for i in range(30):
        s = world[i]
        img = s.image.astype(np.float32)
        covered = np.zeros((64, 64), bool)
        for o in s.objects:
            assert not (covered & o.mask).any(), "objects must not overlap"
            covered |= o.mask
            # interior pixels are exactly the colour; anti-aliased edges pull the mean a little
            median = np.median(img[o.mask], axis=0)
            assert np.abs(median - np.array(COLOURS[o.colour])).max() < 3
            assert np.abs(img[o.mask].mean(axis=0) - np.array(COLOURS[o.colour])).max() < 40
        # the background is light and nearly grey: low saturation away from the objects
        near = covered.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.roll(covered, (dy, dx), axis=(0, 1))
        bg = img[~near] / 255.0
        sat = np.array([colorsys.rgb_to_hsv(*p)[1] for p in bg[::7]])
        assert sat.max() < 0.2 and bg.mean() > 0.75


def test_relations_in_captions_hold_in_ground_truth():
    world = ShapesWorld(seed=2)
    checked = 0
    for i in range(300):
        s = world[i]
        if len(s.objects) != 2:
            continue
        a, b = s.objects
        if "left of" in s.caption:
            assert a.x < b.x - 0.1
        elif "right of" in s.caption:
            assert a.x > b.x + 0.1
        elif " above " in s.caption:
            assert a.y < b.y - 0.1
        elif " below " in s.caption:
            assert a.y > b.y + 0.1
        else:
            continue
        checked += 1
    assert checked > 50


def test_held_out_pairs_never_in_training_split_but_in_test():
    train, test = ShapesWorld(split="train"), ShapesWorld(split="test")
    seen_test = set()
    for i in range(1500):
        for o in train[i].objects:
            assert (o.colour, o.shape) not in HELD_OUT_PAIRS
        seen_test |= {(o.colour, o.shape) for o in test[i].objects}
    assert set(HELD_OUT_PAIRS) <= seen_test
    for colour, shape in HELD_OUT_PAIRS:
        assert colour in COLOURS and shape in SHAPES


def test_splits_are_different_streams_and_arguments_checked():
    assert ShapesWorld(split="train")[0].caption != ShapesWorld(split="test")[0].caption or (
        not np.array_equal(ShapesWorld(split="train")[0].image, ShapesWorld(split="test")[0].image)
    )
    with pytest.raises(ValueError, match="split"):
        ShapesWorld(split="val")
    with pytest.raises(ValueError, match="size"):
        ShapesWorld(size=8)


def test_vocabulary_covers_every_word():
    words = set(" ".join(vocabulary_captions(count=400)).replace(",", " ").split())
    assert set(COLOURS) | set(SHAPES) | {"left", "right", "above", "below", "small", "big"} <= words


def test_contrast_captions_flip_relations_and_swap_colours():
    assert contrast_captions("an orange triangle to the left of a red circle") == {
        "relation": "an orange triangle to the right of a red circle",
        "colours": "a red triangle to the left of an orange circle",
    }
    assert contrast_captions("a small blue star at the top") == {
        "relation": "a small blue star at the bottom"
    }
    assert contrast_captions("a yellow circle and a green triangle") == {
        "colours": "a green circle and a yellow triangle"
    }
    # nothing to contrast, or a contrast that would describe the same picture
    for caption in (
        "a red circle",
        "a big red circle in the center",
        "a red star and a red square",
        "a purple triangle below a purple triangle",
        "a blue star and a green star",
    ):
        assert contrast_captions(caption) == {}, caption


def _objects_named(caption: str) -> list[tuple[str, str]]:
    words = caption.replace(",", "").split()
    return [(w, words[i + 1]) for i, w in enumerate(words[:-1]) if w in COLOURS]


def test_contrast_captions_describe_other_pictures_with_the_same_words():
    world, flips, swaps = ShapesWorld(seed=5), 0, 0
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    opposite |= {"top": "bottom", "bottom": "top"}
    for i in range(400):
        sample = world[i]
        truth = sorted((o.colour, o.shape) for o in sample.objects)
        for kind, contrast in contrast_captions(sample.caption).items():
            assert contrast != sample.caption
            a, b = sample.caption.split(), contrast.split()
            assert len(a) == len(b)
            changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
            if kind == "relation":  # relation flipped, same objects
                flips += 1
                assert all(opposite.get(x) == y for x, y in changed)
                assert sorted(_objects_named(contrast)) == truth
            else:  # colours swapped: the same words, but objects this picture does not have
                assert kind == "colours"
                swaps += 1
                assert sorted(w for w in b if w not in ("a", "an")) == sorted(
                    w for w in a if w not in ("a", "an")
                )
                assert sorted(_objects_named(contrast)) != truth
    assert flips > 50 and swaps > 50


def test_says_where_picks_captions_whose_words_place_objects():
    assert says_where("a picture of a small red circle on the left")
    assert says_where("a blue star right of a green square")
    assert not says_where("a red circle in the center")  # the centre is no side
    assert not says_where("a red circle")
    assert not says_where("a red circle above a blue square")
    assert not says_where("a red circle, a blue star and a green square from left to right")
    # on real samples, the words it picks agree with where the objects were drawn
    world, checked = ShapesWorld(split="train", seed=3), 0
    for i in range(300):
        s = world[i]
        if not says_where(s.caption):
            continue
        checked += 1
        if len(s.objects) == 1:
            o, c = s.objects[0], s.caption
            side = {"left": o.x < 0.5, "right": o.x > 0.5, "top": o.y < 0.5, "bottom": o.y > 0.5}
            assert any(ok for w, ok in side.items() if c.endswith(w) or f"{w} on" in c), c
        else:
            a, b = s.objects  # the caption names a first
            assert (a.x < b.x) == ("left of" in s.caption), s.caption
    assert checked > 30
