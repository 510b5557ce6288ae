"""Figure 5b — an animation of a whole run: x_t and x̂0 decoded at every step.

The same two quantities as the filmstrip (DDIM, Song et al. 2021: the current noisy
latent and the predicted clean latent), one frame per sampling step. GIF files are
written with matplotlib's Pillow writer (always available); MP4 needs an ffmpeg
writer, which is used only where matplotlib finds one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import animation
from matplotlib.figure import Figure

from ..autoencoder import image_hwc
from ..probes import StepImages
from .denoising import ROWS, pick_images, run_steps, step_label
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
    fps: int = DEFAULT_FPS,
) -> Path:
    """Write x_t and x̂0 (`images` from `sdviz.probes.step_images(run, pipe)`, else the run's
    preview) for every step to a GIF or MP4.

    The format follows the file suffix: ".gif" (Pillow, always) or ".mp4" (needs
    ffmpeg; check `mp4_available()`). `steps` restricts the frames (default: all, or
    all of `images`).
    Returns the path written.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> images = sdviz.probes.step_images(run, pipe)
        >>> sdviz.figures.denoising_animation(run, "denoising.gif", images=images)
    """
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
    chosen, n_steps = picked.steps, run_steps(run)
    stacks = [getattr(picked, which) for which, _ in ROWS]
    with style():
        fig: Figure = new_figure(None, 2 * PANEL, PANEL + 0.7)
        axes = fig.subplots(1, 2)
        artists = []
        for ax, (_, label), stack in zip(axes, ROWS, stacks, strict=True):
            artists.append(ax.imshow(image_hwc(stack[0]), interpolation="nearest"))
            bare(ax, label)
        title = fig.suptitle(f"{step_label(run, chosen[0])} of {n_steps}")
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
                title.set_text(f"{step_label(run, i)} of {n_steps}")
                writer.grab_frame()
    return path
