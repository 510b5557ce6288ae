"""Figure 5b — an animation of a whole run: x_t and x̂0 decoded at every step.

The same rows as the filmstrip (DDIM, Song et al. 2021: the current noisy latent, as the
linear preview and VAE-decoded, and the predicted clean latent), one frame per sampling
step, titled "step 10 (of 0…19), t=451": steps counted from 0, as everywhere in sdviz. GIF files are
written with matplotlib's Pillow writer (always available); MP4 needs an ffmpeg
writer, which is used only where matplotlib finds one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import animation
from matplotlib.figure import Figure

from ..autoencoder import image_hwc
from ..language import course_language
from ..probes import StepImages
from .denoising import pick_images, rows_to_show, step_title
from .style import DPI, PANEL, bare, new_figure, style

DEFAULT_FPS = 4  # frames per second: a 20-step run plays in 5 s


def mp4_available() -> bool:
    """Whether matplotlib has an ffmpeg writer here (MP4 output)."""
    return animation.writers.is_available("ffmpeg")


def denoising_animation(
    run: Any,
    path: str | Path,
    *,
    images: StepImages | None = None,
    steps: list[int] | None = None,
    show: list[str] | None = None,
    fps: int = DEFAULT_FPS,
    lang: str | None = None,
) -> Path:
    """Write x_t and x̂0 (`images` from `sdviz.probes.step_images(run, pipe)`, else the run's
    preview) for every step to a GIF or MP4.

    The format follows the file suffix: ".gif" (Pillow, always) or ".mp4" (needs
    ffmpeg; check `mp4_available()`). `steps` restricts the frames (default: all, or
    all of `images`); `show` picks the panels as in `denoising_filmstrip`; `lang` is the
    language of the texts ("en", "zh"; default `sdviz.language.course_language`).
    Returns the path written.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> images = sdviz.probes.step_images(run, pipe)
        >>> sdviz.figures.denoising_animation(run, "denoising.gif", images=images)
    """
    lang = course_language(lang)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"Animation files end in .gif or .mp4, got {path.name!r}.")
    if suffix == ".mp4" and not mp4_available():
        raise RuntimeError(
            "MP4 needs ffmpeg, which matplotlib cannot find here; write a .gif instead "
            "(or install ffmpeg)."
        )
    if not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}.")
    picked = pick_images(run, steps, images, default=0)  # 0: every step
    rows = rows_to_show(picked, show, lang)
    chosen = picked.steps
    stacks = [getattr(picked, which) for which, _ in rows]
    with style(lang):
        fig: Figure = new_figure(None, len(rows) * PANEL, PANEL + 0.7)
        axes = fig.subplots(1, len(rows), squeeze=False)[0]
        artists = []
        for ax, (_, label), stack in zip(axes, rows, stacks, strict=True):
            artists.append(ax.imshow(image_hwc(stack[0]), interpolation="nearest"))
            bare(ax, label)
        title = fig.suptitle(step_title(run, chosen[0], lang))
        fig.draw_without_rendering()  # lay out once (constrained), then freeze the layout
        fig.set_layout_engine("none")
        writer = (
            animation.PillowWriter(fps=fps)
            if suffix == ".gif"
            else animation.FFMpegWriter(fps=fps, metadata={"comment": "sdviz"})
        )
        with writer.saving(fig, str(path), dpi=DPI):
            for k, i in enumerate(chosen):
                for artist, stack in zip(artists, stacks, strict=True):
                    artist.set_data(image_hwc(stack[k]))
                title.set_text(step_title(run, i, lang))
                writer.grab_frame()
    return path
