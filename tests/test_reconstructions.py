"""Many images through the VAE (sdviz.autoencoder.reconstruct_many) and the figure of
their PSNR spread (sdviz.figures.reconstruction_quality): lesson 5's honest examples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from sdviz import figures
from sdviz.autoencoder import psnr, reconstruct, reconstruct_many
from sdviz.builder import tiny_pipeline
from sdviz.figures.style import iter_axes
from sdviz.shapes import ShapesWorld


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def recs(pipe):
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images, _ = ShapesWorld(size=side, split="test").batch(0, 7)  # (7, H, W, 3) uint8
    return reconstruct_many(pipe, images, batch_size=3)


def test_each_image_scored_as_reconstruct_scores_it(pipe, recs):
    n, c = len(recs), pipe.vae.config.latent_channels
    assert recs.latents.shape[:2] == (n, c) and recs.images.shape == recs.reconstructions.shape
    one = reconstruct(pipe, recs.images[4])  # the single-image path agrees
    assert one.psnr == pytest.approx(float(recs.psnr[4]), abs=1e-3)
    torch.testing.assert_close(one.latents, recs.latents[4], atol=1e-4, rtol=0)
    assert recs[4].psnr == float(recs.psnr[4])
    assert float(recs.psnr[2]) == psnr(recs.images[2], recs.reconstructions[2])


def test_ranked_picks_worst_median_best_and_below_counts(recs):
    worst, median, best = recs.ranked([0.0, 0.5, 1.0])
    assert recs.psnr[worst] == recs.psnr.min() and recs.psnr[best] == recs.psnr.max()
    assert recs.psnr[median] == np.median(recs.psnr)  # 7 images: a middle one
    cut = float(recs.psnr[median])
    assert recs.below(cut) == 3 and recs.below(float("inf")) == len(recs)
    with pytest.raises(ValueError, match="0 = worst"):
        recs.ranked([1.5])


def test_reconstruction_quality_draws_histogram_and_examples(recs):
    fig = figures.reconstruction_quality(recs, places=(0.0, 0.5, 1.0), threshold_db=20)
    axes = list(iter_axes(fig))
    pictures = [ax for ax in axes if ax.images]  # 3 rows (image, rebuilt, error) x 3
    assert len(pictures) == 3 * 3 and axes[0].patches  # and the histogram's bars
    title = fig.get_suptitle()
    assert f"{len(recs)} images" in title and f"mean {recs.psnr.mean():.1f} dB" in title
    assert f"{recs.below(20)} under 20 dB" in title
    names = " ".join(ax.get_title() for ax in axes)
    worst = float(recs.psnr.min())
    assert f"worst: {worst:.1f} dB" in names and "median" in names and "best" in names
    with pytest.raises(TypeError, match="reconstruct_many"):
        figures.reconstruction_quality(recs[0])
