"""The published SD 1.5 architecture (random weights) traced through one step at 512 px.

Shapes are the real model's: 77x768 CLIP embeddings, (4, 64, 64) latents, a
(3, 512, 512) image and 16 cross-attention layers. About 4.4 GiB of RAM in fp32 and
a minute or two on two CPU cores; it still runs in CI.
"""

from __future__ import annotations

import gc
import time

import pytest
import torch

from sdviz.attention import cross_attention_layers
from sdviz.builder import sd_architecture
from sdviz.schedulers import make_scheduler
from sdviz.tracing import trace


@pytest.mark.slow
def test_sd15_architecture_one_step(device):
    pipe = sd_architecture("1.5").to(device)
    try:
        pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)  # one UNet call per step
        layers = cross_attention_layers(pipe.unet)
        start = time.perf_counter()
        with trace(pipe) as tr:
            pipe(
                "a red circle",
                num_inference_steps=1,
                height=512,
                width=512,
                generator=torch.Generator(pipe.device).manual_seed(0),
                output_type="pt",
            )
        seconds = time.perf_counter() - start
    finally:
        del pipe
        gc.collect()
    run = tr.last
    print(f"\nSD 1.5 architecture, one traced step at 512x512 on {device}: {seconds:.1f} s")
    assert len(layers) == 16 and run["attention.n_layers"] == 16
    assert run["text_encoder.prompt_embeds"].shape == (77, 768)
    assert run["text_encoder.negative_prompt_embeds"].shape == (77, 768)
    assert run["denoiser.latents"].shape == (2, 4, 64, 64)  # x_T and the final latents
    assert run["denoiser.pred_original_sample"].shape == (1, 4, 64, 64)
    assert run["vae.image"].shape == (3, 512, 512)
    maps = run["attention.maps"]
    assert maps.shape == (1, 77, 64, 64)
    assert torch.allclose(maps.sum(1), torch.ones(1, 64, 64), atol=1e-4)
    # per-step per-token maps for 50 steps: the aggregate stays small
    assert 50 * maps[0].numel() * 4 <= 64 * 10**6
