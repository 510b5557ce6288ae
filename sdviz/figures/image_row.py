"""A row of decoded images with a title over each: the filmstrip `sdviz trace` writes.

    steps = filmstrip_steps(run.n_steps, 6)
    images = run.decode(pipe, "pred_original_sample", steps=steps)  # (6, 3, H, W)
    filmstrip(images, [f"step {i}" for i in steps], "x0-hat").savefig("filmstrip.png")

The predicted clean image x0_hat decoded at a few steps is DDIM's view of the denoising
(Song et al. 2021): blurry and average at first, sharp at the end. `denoising_filmstrip`
(figure 5) shows the same with x_t beside it; this is the lighter one-row version. Steps
are counted from 0 throughout sdviz (step i is `run[...][i]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from ..language import course_language
from .style import TITLE_CHARS_PER_INCH, check_steps, show_image, style, wrap

PANEL_WIDTH, STRIP_HEIGHT = 1.9, 2.3  # inches: one small panel, and the row with its titles


def filmstrip_steps(n_steps: int, frames: int) -> list[int]:
    """`frames` step indices (counted from 0) spread evenly from the first step to the last."""
    if min(frames, n_steps) == 1:
        return [n_steps - 1]  # one frame: the finished image
    return check_steps(None, n_steps, default=frames)


def filmstrip(
    images: Any, titles: Sequence[str], title: str = "", *, lang: str | None = None
) -> Figure:
    """Images (n, 3, H, W) in [0, 1] side by side, `titles[i]` over image i (the caller's
    texts, drawn in `lang`'s fonts: "zh" titles need the CJK font)."""
    lang = course_language(lang)
    if len(images) != len(titles):
        raise ValueError(f"Pass one title per image: {len(images)} images, {len(titles)} titles.")
    with style(lang):
        fig = Figure(figsize=(PANEL_WIDTH * len(images), STRIP_HEIGHT), layout="constrained")
        axes = fig.subplots(1, len(images), squeeze=False)[0]
        for ax, image, text in zip(axes, images, titles, strict=True):
            show_image(ax, image, text)  # nearest: enlarged 64-px pixels stay honest
            ax.title.set_fontsize(8)
        if title:  # 9 pt: a third more characters per inch than a default title
            chars = int(fig.get_figwidth() * TITLE_CHARS_PER_INCH * 4 / 3)
            fig.suptitle(wrap(title, max(24, chars)), fontsize=9)
    return fig
