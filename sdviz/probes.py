"""probes: computations outside a generation, each returning tensors or records that figures draw.

A figure in `sdviz.figures` only draws: whatever needs a network (the UNet, the VAE,
CLIP) or a whole generation is computed here, or in the stage module it belongs to
(`sdviz.diffusion`, `sdviz.autoencoder`, `sdviz.text`), and handed to the figure as a
record (a dataclass, a dict or tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def psnr(a: Any, b: Any, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images (arrays or tensors) of the same shape.

    `data_range` is the span of the values: 1 for images in [0, 1], 2 for [-1, 1].
    Identical images give infinity.
    """
    a, b = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, np.float64) for x in (a, b))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
