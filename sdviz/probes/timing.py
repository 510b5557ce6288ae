"""How long one UNet call takes at several input sizes (lesson 5: why diffusion runs in
the VAE's small latent space rather than on pixels)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..text import embed


@dataclass(frozen=True)
class UnetTiming:
    """Seconds per UNet call (the median of `repeats`) for each input size (h, w)."""

    sizes: list[tuple[int, int]]
    seconds: np.ndarray  # (len(sizes),)
    repeats: int


def time_unet(
    pipe: Any, sizes: Sequence[int | tuple[int, int]], *, prompt: str = "", repeats: int = 3
) -> UnetTiming:
    """Time one UNet call (batch 1, conditioned on `prompt`) on random inputs of each size.

    The UNet is convolutional (plus attention), so it runs on any size: a latent-sized
    input, or one as large as the image, as a pixel-space model of the same design would
    see. Each size is run once untimed first (allocations, kernel choice); CUDA is
    synchronised around each call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    unet = pipe.unet
    param = next(unet.parameters())
    emb = embed(pipe, prompt)[None].to(param.device, param.dtype)
    channels = int(unet.config.in_channels)
    hw = [(s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in sizes]

    def one_call(x: Any) -> float:
        if param.device.type == "cuda":
            torch.cuda.synchronize(param.device)
        start = time.perf_counter()
        unet(x, 500, encoder_hidden_states=emb)
        if param.device.type == "cuda":
            torch.cuda.synchronize(param.device)
        return time.perf_counter() - start

    medians = []
    with torch.no_grad():
        for h, w in hw:
            x = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(0))
            x = x.to(param.device, param.dtype)
            one_call(x)  # warm-up
            medians.append(float(np.median([one_call(x) for _ in range(repeats)])))
    return UnetTiming(hw, np.array(medians), repeats)
