"""One helper per job: PSNR, parameter counts, alpha_bar from sigma, images to tensors, and
building a pipeline without touching the caller's global RNG."""

# ruff: noqa: F811  (the fixtures imported from test_probes are the tests' arguments)

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_probes import pipe  # noqa: F401  (fixtures)

from sdviz.builder import tiny_pipeline


def test_psnr_is_the_one_definition():
    from sdviz.probes import psnr

    a = np.zeros((3, 4, 4))
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(torch.zeros(2, 2), torch.full((2, 2), 0.2), data_range=2.0) == pytest.approx(
        10 * np.log10(4 / 0.04)
    )


# ---------------------------------------------------------------- one helper per job


def test_tiny_pipeline_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_pipeline(seed=0)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on as if unbuilt
    b = tiny_pipeline(seed=0)
    for (name, p), q in zip(a.unet.named_parameters(), b.unet.parameters(), strict=True):
        assert torch.equal(p, q), name  # still deterministic per seed


def test_count_parameters(pipe):
    from sdviz.builder import count_parameters

    assert count_parameters(pipe.unet) == sum(p.numel() for p in pipe.unet.parameters()) > 0
    assert count_parameters(None) == 0


def test_alpha_bar_from_sigma_inverts_the_noise_level(pipe):
    from sdviz.diffusion import alpha_bar_from_sigma

    abar = pipe.scheduler.alphas_cumprod.double()
    sigma = ((1 - abar) / abar).sqrt()
    assert torch.allclose(alpha_bar_from_sigma(sigma), abar)
    assert alpha_bar_from_sigma(0.0) == 1.0


def test_images_to_tensor_takes_every_image_form():
    from PIL import Image

    from sdviz.autoencoder import images_to_tensor

    arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    ref = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    for form in (arr, Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1)):
        x, unbatched = images_to_tensor(form)
        assert unbatched and x.shape == (1, 3, 16, 24) and x.dtype == torch.float32
        assert torch.allclose(x, ref)
    x, unbatched = images_to_tensor(arr[None].astype(np.float32) / 255)  # (n, H, W, 3) floats
    assert not unbatched and torch.allclose(x, ref)
    half, _ = images_to_tensor(ref.half())
    assert half.dtype == torch.float32


def test_long_titles_wrap_to_the_figure_width():
    from sdviz.figures.style import new_figure

    title = "Guidance-scale sweep: " + "a red circle to the left of a blue square, " * 3
    fig = new_figure(None, 4.0, 3.0, suptitle=title)
    lines = fig.get_suptitle().splitlines()
    assert len(lines) > 1 and max(len(line) for line in lines) <= 4.0 * 9
    assert " ".join(lines) == title.strip()
