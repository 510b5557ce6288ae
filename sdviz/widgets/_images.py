"""Tensors from a traced Run -> PNG bytes for `ipywidgets.Image`.

The widgets show pictures that must redraw instantly while a slider moves, so they are
rendered once with PIL (no matplotlib figure per frame) and cached by the widgets.
Colormaps are the figures' own (`sdviz.figures.style`): `HEAT_CMAP` for attention
(sequential), `SIGNED_CMAP` for signed latent values (diverging, symmetric around 0).
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ..autoencoder import image_hwc, to_numpy, to_pil
from ..figures.style import HEAT_CMAP, SIGNED_CMAP


def png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) floats in [0, 1] -> PNG bytes."""
    buf = io.BytesIO()
    to_pil(rgb).save(buf, "png")
    return buf.getvalue()


def _resize(rgb: np.ndarray, size: int, smooth: bool) -> np.ndarray:
    """Scale the longer side to `size` pixels; nearest keeps latent cells visible."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = to_pil(rgb).resize(new, Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST)
    return np.asarray(img, dtype=np.float32) / 255.0


def image_png(image: torch.Tensor, size: int = 192) -> bytes:
    """(3, H, W) image in [0, 1] -> PNG of longer side `size`."""
    return png(_resize(image_hwc(image), size, smooth=False))


def colormap(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) colours."""
    scaled = (values - vmin) / max(vmax - vmin, 1e-12)
    return matplotlib.colormaps[cmap](np.clip(scaled, 0, 1))[..., :3]


def heat_png(amap: torch.Tensor, size: int = 96, vmax: float | None = None) -> bytes:
    """(h, w) non-negative map (attention) -> heat map PNG (`HEAT_CMAP`)."""
    values = to_numpy(amap)
    top = float(values.max()) if vmax is None else vmax
    return png(_resize(colormap(values, HEAT_CMAP, 0.0, top), size, smooth=False))


def channels_png(latents: torch.Tensor, size: int = 96, gap: int = 4) -> bytes:
    """(c, h, w) latent-space tensor -> its channels side by side, `SIGNED_CMAP`, 0 = white.

    Each channel is `size` pixels wide; the colour scale is shared and symmetric.
    """
    values = to_numpy(latents)
    lim = float(np.abs(values).max()) or 1.0
    tiles = [_resize(colormap(ch, SIGNED_CMAP, -lim, lim), size, smooth=False) for ch in values]
    spacer = np.ones((tiles[0].shape[0], gap, 3), dtype=np.float32)
    row = [t for tile in tiles for t in (tile, spacer)][:-1]
    return png(np.concatenate(row, axis=1))


def overlay_png(
    image: torch.Tensor, amap: torch.Tensor, size: int = 192, alpha: float = 0.6
) -> bytes:
    """(3, H, W) image with an (h, w) attention map laid over it (smoothly upsampled)."""
    rgb = _resize(image_hwc(image), size, smooth=True)
    values = to_numpy(amap)
    heat = colormap(values, HEAT_CMAP, 0.0, float(values.max()) or 1.0)
    heat = _resize(heat, max(rgb.shape[:2]), smooth=True)[: rgb.shape[0], : rgb.shape[1]]
    return png((1 - alpha) * rgb + alpha * heat)


class MarkedFigure:
    """A figure rendered ONCE, then re-stamped with a vertical marker at any x (fast).

    Redrawing a matplotlib figure takes ~0.5 s on a busy CPU: too slow for a slider.
    The figure is rasterised with Agg once; each axis's data->pixel transform then
    places a marker line on a copy of that raster with PIL in about a millisecond.
    """

    def __init__(self, fig: Figure, axes: list[Axes] | None = None, dpi: int = 60) -> None:
        fig.set_dpi(dpi)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self.base = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        height = self.base.height
        # per marked axis (default: all): (x data -> x pixel, top row, bottom row);
        # display coordinates grow upwards, image rows downwards
        self.axes = [
            (ax.transData, height - ax.bbox.y1, height - ax.bbox.y0)
            for ax in (fig.axes if axes is None else axes)
        ]

    def png(self, x: float, color: tuple[int, int, int] = (20, 20, 20)) -> bytes:
        """The figure with a vertical line at data coordinate `x` on every axis."""
        img = self.base.copy()
        draw = ImageDraw.Draw(img)
        for to_pixels, top, bottom in self.axes:
            px = float(to_pixels.transform([[x, 1.0]])[0][0])
            draw.line([(px, top), (px, bottom)], fill=color, width=2)
        buf = io.BytesIO()
        img.save(buf, "png")
        return buf.getvalue()
