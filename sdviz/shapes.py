"""ShapesWorld: a seeded, procedural world of captioned images with ground truth.

The training data of sdviz's miniature Stable Diffusion. Each sample is one to
three flat-coloured shapes (circle, square, triangle, star) in one of six colours
and two sizes, on a light, low-contrast background, with a caption that names
them and, often, their position or relation ("a red circle to the left of a blue
square", "a small yellow star at the top"). Every sample also carries its ground
truth: per-object masks and attributes, so that generated images can be scored
from pixels.

Sample `i` of a split is a pure function of `(seed, split, i)`: the world is
deterministic and unlimited. Some colour-shape pairs (`HELD_OUT_PAIRS`) never
appear in the "train" split; the "test" split draws from a disjoint seed stream
and includes them, so that evaluation measures composition, not memory
(as CLIP's and LDM's zero-shot evaluations do: Radford et al. 2021; Rombach et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 210, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (145, 50, 200),
}
SIZES = {"small": 0.11, "big": 0.2}  # radius as a fraction of the image side
HELD_OUT_PAIRS = (("yellow", "square"), ("blue", "triangle"), ("purple", "circle"))
REGIONS = {  # one-object position words -> centre box (x0, x1, y0, y1) in [0, 1]
    "at the top": (0.3, 0.7, 0.18, 0.3),
    "at the bottom": (0.3, 0.7, 0.7, 0.82),
    "on the left": (0.18, 0.3, 0.3, 0.7),
    "on the right": (0.7, 0.82, 0.3, 0.7),
    "in the center": (0.42, 0.58, 0.42, 0.58),
}
SPLITS = ("train", "test")
_SUPERSAMPLE = 4


@dataclass
class ShapeObject:
    """One object's attributes and its mask (True where the object covers a pixel)."""

    shape: str
    colour: str
    size: str
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    mask: np.ndarray = field(repr=False)  # (H, W) bool


@dataclass
class Sample:
    """An image (H, W, 3) uint8, its caption and its ground-truth objects."""

    image: np.ndarray = field(repr=False)
    caption: str
    objects: list[ShapeObject]
    background: tuple[int, int, int]


def _noun(rng: np.random.Generator, obj: dict, with_size: bool) -> str:
    words = [obj["size"]] if with_size else []
    words += [obj["colour"], obj["shape"]]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        angles = [-90, 30, 150]
        return [
            (cx + r * math.cos(math.radians(a)), cy + r * 1.1 * math.sin(math.radians(a)) + r * 0.1)
            for a in angles
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r * (1.0 if k % 2 == 0 else 0.45)
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


class ShapesWorld:
    """Deterministic, unlimited captioned shapes: `world[i]` -> `Sample`.

    Args:
        size: image side in pixels.
        split: "train" (held-out colour-shape pairs never appear) or "test".
        seed: world seed; the same (seed, split, index) always gives the same sample.
    """

    def __init__(self, size: int = 64, split: str = "train", seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}.")
        self.size, self.split, self.seed = size, split, seed

    def __getitem__(self, index: int) -> Sample:
        objs, background, caption = self.layout(index)
        return self.render(objs, background, caption)

    def layout(self, index: int) -> tuple[list[dict], tuple, str]:
        """Sample `index` before drawing: (objects as dicts, background colours, caption)."""
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        n = int(rng.choice([1, 2, 3], p=[0.4, 0.45, 0.15]))
        objs = [self._attributes(rng) for _ in range(n)]
        if n == 1:
            caption = self._one(rng, objs)
        elif n == 2:
            caption = self._two(rng, objs)
        else:
            caption = self._three(rng, objs)
        return objs, self._background(rng), caption

    def batch(self, start: int, count: int) -> tuple[np.ndarray, list[str]]:
        """Images (count, H, W, 3) uint8 and captions of samples start..start+count-1."""
        samples = [self[i] for i in range(start, start + count)]
        return np.stack([s.image for s in samples]), [s.caption for s in samples]

    # -- attributes and layout -------------------------------------------------
    def _attributes(self, rng: np.random.Generator) -> dict:
        while True:
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            if self.split == "test" or (colour, shape) not in HELD_OUT_PAIRS:
                break
        return {"shape": shape, "colour": colour, "size": list(SIZES)[rng.integers(2)]}

    def _place(self, rng, obj, box, others) -> bool:
        r = SIZES[obj["size"]]
        for _ in range(50):
            x, y = rng.uniform(box[0], box[1]), rng.uniform(box[2], box[3])
            x, y = min(max(x, r + 0.02), 0.98 - r), min(max(y, r + 0.02), 0.98 - r)
            if all(
                math.hypot(x - o["x"], y - o["y"]) > r + SIZES[o["size"]] + 0.03 for o in others
            ):
                obj["x"], obj["y"] = x, y
                return True
        return False

    def _one(self, rng, objs) -> str:
        obj = objs[0]
        where = None
        if rng.random() < 0.5:
            where = list(REGIONS)[rng.integers(len(REGIONS))]
            self._place(rng, obj, REGIONS[where], [])
        else:
            self._place(rng, obj, (0.15, 0.85, 0.15, 0.85), [])
        noun = _noun(rng, obj, rng.random() < 0.5)
        text = noun if where is None else f"{noun} {where}"
        template = ["{}", "{}", "a picture of {}", "{} on a plain background"][rng.integers(4)]
        return template.format(text)

    def _two(self, rng, objs) -> str:
        a, b = objs
        relation = ["left", "right", "above", "below", "and"][rng.integers(5)]
        # place a relative to b so that the relation is clearly true
        boxes = {
            "left": ((0.12, 0.4, 0.2, 0.8), (0.6, 0.88, 0.2, 0.8)),
            "right": ((0.6, 0.88, 0.2, 0.8), (0.12, 0.4, 0.2, 0.8)),
            "above": ((0.2, 0.8, 0.12, 0.4), (0.2, 0.8, 0.6, 0.88)),
            "below": ((0.2, 0.8, 0.6, 0.88), (0.2, 0.8, 0.12, 0.4)),
            "and": ((0.12, 0.88, 0.12, 0.88), (0.12, 0.88, 0.12, 0.88)),
        }[relation]
        while not (self._place(rng, a, boxes[0], []) and self._place(rng, b, boxes[1], [a])):
            pass
        sized = rng.random() < 0.3
        na, nb = _noun(rng, a, sized), _noun(rng, b, sized)
        if relation == "and":
            return f"{na} and {nb}"
        phrase = {
            "left": "to the left of",
            "right": "to the right of",
            "above": "above",
            "below": "below",
        }[relation]
        if relation in ("left", "right") and rng.random() < 0.3:
            phrase = {"left": "left of", "right": "right of"}[relation]
        return f"{na} {phrase} {nb}"

    def _three(self, rng, objs) -> str:
        xs = [(0.1, 0.3), (0.4, 0.6), (0.7, 0.9)]
        placed: list[dict] = []
        while len(placed) < 3:
            placed = []
            for obj, (x0, x1) in zip(objs, xs, strict=True):
                obj["size"] = "small"  # three big objects do not fit side by side
                if not self._place(rng, obj, (x0, x1, 0.25, 0.75), placed):
                    break
                placed.append(obj)
        nouns = [_noun(rng, o, False) for o in objs]
        text = f"{nouns[0]}, {nouns[1]} and {nouns[2]}"
        return text + (" from left to right" if rng.random() < 0.5 else "")

    def _background(self, rng) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        base = rng.uniform(215, 250)
        tint = rng.uniform(-12, 12, size=3)
        c0 = np.clip(base + tint, 0, 255)
        c1 = np.clip(c0 + rng.uniform(-15, 15), 0, 255)
        return tuple(int(v) for v in c0), tuple(int(v) for v in c1)

    # -- drawing ---------------------------------------------------------------
    def render(self, objs: list[dict], background, caption: str) -> Sample:
        """Draw objects (dicts with shape, colour, size, x, y) over a vertical gradient."""
        side = self.size * _SUPERSAMPLE
        c0, c1 = (np.array(c, dtype=np.float32) for c in background)
        t = np.linspace(0.0, 1.0, self.size, dtype=np.float32)[:, None, None]
        image = np.broadcast_to(c0 + (c1 - c0) * t, (self.size, self.size, 3)).copy()
        objects = []
        for o in objs:
            # coverage drawn at 4x resolution and box-filtered: anti-aliased edges
            cover = Image.new("L", (side, side), 0)
            draw = ImageDraw.Draw(cover)
            cx, cy, r = o["x"] * side, o["y"] * side, SIZES[o["size"]] * side
            if o["shape"] == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
            else:
                draw.polygon(_polygon(o["shape"], cx, cy, r), fill=255)
            alpha = np.asarray(cover.reduce(_SUPERSAMPLE), dtype=np.float32)[..., None] / 255.0
            image = image * (1.0 - alpha) + np.array(COLOURS[o["colour"]], np.float32) * alpha
            objects.append(
                ShapeObject(
                    o["shape"], o["colour"], o["size"], o["x"], o["y"], alpha[..., 0] >= 0.5
                )
            )
        image = np.round(image).astype(np.uint8)
        return Sample(image, caption, objects, tuple(int(v) for v in background[0]))


_FLIPS = {"left": "right", "right": "left", "above": "below", "below": "above"}
_FLIPS |= {"top": "bottom", "bottom": "top"}


def _nouns(words: list[str]) -> list[tuple[int, str, str]]:
    """(index of the colour word, colour, shape) of each "colour shape" in a caption."""
    return [
        (i, w, words[i + 1].rstrip(","))
        for i, w in enumerate(words[:-1])
        if w in COLOURS and words[i + 1].rstrip(",") in SHAPES
    ]


def contrast_captions(caption: str) -> dict[str, str]:
    """Captions of *other* pictures made of the same words: hard negatives for CLIP.

    A contrastively trained CLIP can rank captions by their bag of words and never learn
    what "left of" means (Yuksekgonul et al. 2023, "When and why vision-language models
    behave like bags-of-words"). So that its text tower, which steers the UNet, must
    encode relations and which colour goes with which shape, each caption gets these
    counterfactuals: "relation", the relation or position flipped ("left" <-> "right",
    "above" <-> "below", "top" <-> "bottom"), and "colours", the colours of two objects
    of different colours and shapes swapped. Empty when there is none ("a red circle").
    """
    words = caption.split()
    nouns = _nouns(words)
    out = {}
    flipped = [_FLIPS.get(w, w) for w in words]
    # flipping a relation between two identical objects describes the same picture
    if flipped != words and len({(c, sh) for _, c, sh in nouns}) == len(nouns):
        out["relation"] = " ".join(flipped)
    for (i, ci, si), (j, cj, sj) in zip(nouns, nouns[1:], strict=False):
        if ci != cj and si != sj:
            swapped = list(words)
            swapped[i], swapped[j] = cj, ci
            for k in range(len(swapped) - 1):  # "an orange" <-> "a red"
                if swapped[k] in ("a", "an"):
                    swapped[k] = "an" if swapped[k + 1][0] in "aeiou" else "a"
            out["colours"] = " ".join(swapped)
            break
    return out


def says_where(caption: str) -> bool:
    """True when a caption puts things at a place: one object on the left, right, top or
    bottom of the picture, or one object left or right of another.

    Such captions are what teaches a UNet that position words matter (`sdviz train`
    oversamples them when it trains the UNet; see the model card).
    """
    nouns = _nouns(caption.split())
    if len(nouns) == 1:
        return any(w in caption for w in REGIONS if w != "in the center")
    return len(nouns) == 2 and ("left of" in caption or "right of" in caption)


def vocabulary_captions(count: int = 2000, seed: int = 0) -> list[str]:
    """Captions from both splits, enough to cover every ShapesWorld word (tokenizer corpus)."""
    half = count // 2
    caps = []
    for split in SPLITS:
        world = ShapesWorld(split=split, seed=seed)
        caps += [world.layout(i)[2] for i in range(half)]
    return caps
