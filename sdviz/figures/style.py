"""The shared look of sdviz figures, and the helpers every figure module uses.

One place for sizes, fonts and colormaps so that all figures line up on a slide:
`PANEL` inches per image panel, fonts readable when a figure is shown full-width,
colour-blind-safe colormaps (viridis / cividis / magma, and `SIGNED_CMAP` "RdBu_r" for
signed quantities such as noise: the one signed palette, the widgets use it too).
Figures are built on `matplotlib.figure.Figure` inside a local `rc_context` (`style()`),
never through pyplot, so nothing global changes.

Also here: tensor -> array conversion that accepts fp16 / CUDA tensors (images go
through `sdviz.autoencoder.images_to_tensor`, the one image conversion), input
validation shared by the modules (steps, runs), and `save`, which writes
byte-identical PNG / SVG / PDF files for identical figures (no dates, fixed SVG ids).
`style(lang)` adds the language's fonts (`sdviz.language.drawing`: DejaVu Sans, then Noto
Sans SC for Chinese; nothing for English) and `wrap` breaks Chinese titles between
characters, a CJK character counting as two Latin ones.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from ..autoencoder import image_hwc, to_numpy
from ..language import Texts, course_language, drawing, text_width

PANEL = 2.6  # inches: one image panel; every figure is a multiple of it
WIDE = 4.2  # inches: one line-plot panel
DPI = 100  # dots per inch for screen and PNG files
TITLE_CHARS_PER_INCH = 9  # characters of a figure title (default font) per inch of width
IMAGE_CMAP = "viridis"  # unsigned maps (latent channels, embeddings' magnitudes)
SIGNED_CMAP = "RdBu_r"  # signed maps: noise, differences, embedding values
HEAT_CMAP = "magma"  # attention heat maps
MATRIX_CMAP = "cividis"  # similarity matrices
LINE_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")  # Okabe-Ito
MARKERS = ("o", "s", "^", "D", "v", "P")  # one per line, so overlapping lines stay apart
FORMATS = ("png", "svg", "pdf")

RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 14,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "image.cmap": IMAGE_CMAP,
    "axes.prop_cycle": matplotlib.cycler(color=LINE_COLORS),
    "svg.hashsalt": "sdviz",
    "svg.fonttype": "path",
}

Canvas = Figure | SubFigure

T = Texts(__name__, {"timestep": ("timestep t", "时间步 t")})

# a line may not start with these (Chinese punctuation closes what precedes it)
NO_LINE_START = "，。、；：？！）》」』】…％"
NO_LINE_END = "（《「『【“‘"  # and none ends with these
BREAK_AFTER = "，。、；：？！）》」』】"  # a Chinese line best ends after one of these
_WIDE = r"\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\uff00-\uffef"
_TOKENS = re.compile(rf"[{_WIDE}]|[^\s{_WIDE}]+|\s+")


@contextlib.contextmanager
def style(lang: str = "en") -> Iterator[None]:
    """A local matplotlib style context, in `lang`'s fonts: `with style(lang): ...` (nothing
    global changes; build a figure's texts inside it, they keep its font)."""
    with matplotlib.rc_context(RC), drawing(lang):
        yield


def heading_weight(lang: str) -> str:
    """ "bold" for English labels; "normal" in Chinese: the CJK font sdviz ships (Noto Sans
    SC Regular) has no bold face, and matplotlib would say so on every draw."""
    return "bold" if lang == "en" else "normal"


def wrap(text: str, width: int) -> str:
    """`textwrap.fill(text, width)`; text with wide (CJK) characters is broken between them
    too (counted 2 each, never before closing or after opening punctuation), Latin words
    kept whole. A Chinese line ends after a comma, semicolon or closing bracket when one
    is in its last third, rather than mid-word (平|均)."""
    if text_width(text) == len(text):
        return textwrap.fill(text, width)
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for token in _TOKENS.findall(paragraph):
            over = text_width(line.rstrip() + token.rstrip()) > width
            if line.strip() and over and not token.isspace() and token not in NO_LINE_START:
                head, tail = _break(line, width)
                lines.append(head)
                line = tail + token
            else:
                line += token
        lines.append(line.strip())
    return "\n".join(lines)


def _break(line: str, width: int) -> tuple[str, str]:
    """Where a full `line` ends: after its last punctuation mark that leaves at most a
    third of `width` to carry over (and does not carry a line-start mark), else at its
    end with any opening bracket carried to the next line; returns (line, carried)."""
    full = line.rstrip()
    for i in range(len(full) - 1, 0, -1):
        tail = line[i + 1 :].lstrip()  # keeps the space before the next token
        if text_width(tail.rstrip()) > width // 3:
            break
        if full[i] in BREAK_AFTER and tail.strip() and tail[0] not in NO_LINE_START:
            return full[: i + 1], tail
    carried = full[-1] if full[-1] in NO_LINE_END else ""
    return full.removesuffix(carried), carried


def new_figure(
    fig: Canvas | None, width: float, height: float, *, suptitle: str | None = None
) -> Canvas:
    """Return `fig` cleared (when given) or a new constrained-layout Figure of that size.

    A `suptitle` longer than the figure is wide is wrapped onto more lines (a long prompt
    in a title would otherwise be cut off at both edges).
    """
    if fig is None:
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    else:
        fig.clear()
    if suptitle:
        inches = fig.get_figwidth() if hasattr(fig, "get_figwidth") else width
        fig.suptitle(wrap(suptitle, max(24, int(inches * TITLE_CHARS_PER_INCH))))
    return fig


def maps_and_plot(fig: Canvas | None, n_maps: int, suptitle: str) -> tuple[Canvas, Any]:
    """A row of `n_maps` image panels followed by one line-plot panel; returns (fig, axes)."""
    fig = new_figure(fig, n_maps * PANEL + WIDE + 1.2, PANEL + 1.1, suptitle=suptitle)
    return fig, fig.subplots(1, n_maps + 1, width_ratios=[1] * n_maps + [WIDE / PANEL])


def plot_over_t(
    ax: Axes, t: Any, y: Any, mark: int, *, ylabel: str, title: str, lang: str | None = None
) -> None:
    """A line over timesteps with point `mark` circled (x axis labelled in `lang`)."""
    t, y = to_numpy(t), to_numpy(y)
    ax.plot(t, y, "o-")
    ax.plot([t[mark]], [y[mark]], "o", markersize=11, markerfacecolor="none", color="black")
    ax.set_xlabel(T("timestep", course_language(lang)))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def figure_of(ax: Axes) -> Canvas:
    """The (sub)figure an Axes belongs to."""
    return ax.figure


def step_timesteps(run: Mapping[str, Any], n_steps: int) -> np.ndarray:
    """The timestep of each sampling step (`scheduler.step_timestep`), else 0..n_steps-1."""
    if "scheduler.step_timestep" in run:
        return to_numpy(run["scheduler.step_timestep"])
    return np.arange(n_steps)


def expect(record: Any, kind: type, probe: str) -> None:
    """Raise a TypeError saying which probe makes the `kind` record a figure draws."""
    if not isinstance(record, kind):
        raise TypeError(
            f"This figure draws a {kind.__name__} (from {probe}), got {type(record).__name__}: "
            "figures only draw, the probes run the models."
        )


def rounded_box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    color: str,
    *,
    alpha: float = 0.25,
    pad: float = 0.02,
    linewidth: float = 2.0,
) -> None:
    """A rounded box centred on (x, y), filled with a pale `color`: a diagram's block."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle=f"round,pad={pad}",
            facecolor=color,
            alpha=alpha,
            edgecolor=color,
            linewidth=linewidth,
        )
    )


def bare(ax: Axes, title: str | None = None) -> None:
    """No ticks on an image panel, and an optional title."""
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def show_image(ax: Axes, image: Any, title: str | None = None) -> None:
    """Draw an RGB image without ticks, with an optional title."""
    ax.imshow(image_hwc(image), interpolation="nearest")
    bare(ax, title)


def show_map(
    ax: Axes,
    values: Any,
    *,
    cmap: str = IMAGE_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
):
    """Draw a 2-D map without ticks; returns the image artist (for a colorbar)."""
    im = ax.imshow(to_numpy(values), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    bare(ax, title)
    return im


def symmetric_limit(*arrays: Any) -> float:
    """The largest |value| over arrays (for a diverging colormap centred on zero)."""
    lim = max(float(np.abs(to_numpy(a)).max()) for a in arrays)
    return lim if lim > 0 else 1.0


def require(run: Mapping[str, Any], *keys: str, hint: str = "") -> None:
    """Raise a KeyError naming the missing trace keys (and how to record them)."""
    missing = [k for k in keys if k not in run]
    if missing:
        raise KeyError(
            f"This run has no {', '.join(repr(k) for k in missing)}. {hint}".strip()
            + f" Recorded keys: {', '.join(sorted(run.keys()))}."
        )


def check_channel(channel: Any, n_channels: int) -> int:
    """Validate a latent channel index in [0, n_channels)."""
    if not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_channels:
        raise IndexError(
            f"channel {channel!r} is out of range: the latents have {n_channels} channels."
        )
    return int(channel)


def check_steps(steps: int | Sequence[int] | None, n_steps: int, default: int = 5) -> list[int]:
    """Validate step indices in [-n_steps, n_steps); None -> `default` evenly spaced steps."""
    if steps is None:
        count = min(default, n_steps)
        return sorted({round(i * (n_steps - 1) / max(count - 1, 1)) for i in range(count)})
    single = isinstance(steps, (int, np.integer))
    out = []
    for s in [steps] if single else steps:
        if not isinstance(s, (int, np.integer)) or not -n_steps <= s < n_steps:
            raise IndexError(
                f"Step {s!r} is out of range: this run has {n_steps} steps, "
                f"so use 0..{n_steps - 1} (or negative indices from the end)."
            )
        out.append(int(s) % n_steps)
    if not out:
        raise ValueError("Pass at least one step.")
    return out


def save(fig: Canvas, path: str | Path, fmt: str | None = None) -> Path:
    """Write `fig` to `path` byte-for-byte reproducibly (no dates, no version stamps)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"Unknown figure format {fmt!r}; use one of {', '.join(FORMATS)}.")
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}.get(
        fmt, {"CreationDate": None, "Creator": None, "Producer": None}
    )
    root = fig.get_figure(root=True) if isinstance(fig, SubFigure) else fig
    with style():
        root.savefig(path, format=fmt, metadata=metadata)
    return path


def to_png(fig: Canvas) -> bytes:
    """The figure as PNG bytes (deterministic), e.g. for an ipywidgets Image."""
    root = fig.get_figure(root=True) if isinstance(fig, SubFigure) else fig
    buf = io.BytesIO()
    with style():
        root.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render(fig: Canvas) -> np.ndarray:
    """The figure rendered to an (H, W, 4) uint8 RGBA array (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    root = fig.get_figure(root=True) if isinstance(fig, SubFigure) else fig
    canvas = FigureCanvasAgg(root)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def iter_axes(fig: Canvas) -> Iterator[Axes]:
    """The visible axes of a figure (colorbars excluded)."""
    for ax in fig.axes:
        if ax.get_visible() and ax.get_label() != "<colorbar>":
            yield ax
