"""sdviz.training.live: the short training runs of lessons 3 and 6 (tiny pipeline, few steps)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPModel

import sdviz
from sdviz.training.live import train_noise_predictor, train_small_clip


@pytest.fixture(scope="module")
def pipe():
    return sdviz.tiny_pipeline(seed=0)


def test_noise_predictor_learns_and_records_every_step(pipe):
    run = train_noise_predictor(pipe, steps=25, batch=16, n_images=32, seed=0)
    assert isinstance(run.model, UNet2DConditionModel) and not run.model.training
    assert run.model.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert len(run.loss) == 25 and all(math.isfinite(v) for v in run.loss)
    # epsilon-prediction MSE starts near 1 (a random net) and falls within a few steps
    assert sum(run.loss[-5:]) / 5 < 0.8 * sum(run.loss[:5]) / 5, run.loss
    assert run.seconds > 0


def test_noise_predictor_is_seeded(pipe):
    a = train_noise_predictor(pipe, steps=2, batch=4, n_images=8, seed=3)
    b = train_noise_predictor(pipe, steps=2, batch=4, n_images=8, seed=3)
    assert a.loss == b.loss


def test_small_clip_records_loss_and_accuracy(pipe):
    run = train_small_clip(pipe.tokenizer, steps=3, batch=8, n_images=16, seed=0)
    assert isinstance(run.model, CLIPModel) and not run.model.training
    assert len(run.loss) == len(run.accuracy) == 3
    assert all(0.0 <= a <= 1.0 for a in run.accuracy)
    # a random CLIP's contrastive loss is about log(batch)
    assert abs(run.loss[0] - math.log(8)) < 1.0
    assert run.image_mean == run.image_std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        ids = pipe.tokenizer(["a red circle", "a blue square"], return_tensors="pt").input_ids
        out = run.model(input_ids=ids, pixel_values=torch.zeros(2, 3, 32, 32))
    assert out.logits_per_image.shape == (2, 2)
    assert out.text_embeds.shape[-1] == run.model.config.projection_dim


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_step_counts_are_refused(pipe, bad):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_noise_predictor(pipe, steps=bad)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_small_clip(pipe.tokenizer, steps=bad)


def test_live_runs_draw_with_their_own_labels_in_either_language(pipe):
    from matplotlib.text import Text

    clip_run = train_small_clip(pipe.tokenizer, steps=2, batch=8, n_images=16)
    unet_run = train_noise_predictor(pipe, steps=2, n_images=8)
    assert (clip_run.kind, clip_run.batch, unet_run.kind) == ("clip", 8, "noise predictor")

    def texts(fig):
        return {t.get_text() for t in fig.findobj(Text) if t.get_text()}

    english = texts(sdviz.figures.live_training(clip_run, lang="en"))
    assert f"a CLIP that guesses: log(8) = {math.log(8):.2f}" in english
    assert "Live training of a small CLIP from random weights" in english
    chinese = texts(sdviz.figures.live_training(unet_run, lang="zh"))
    assert "从随机权重现场训练一个 UNet" in chinese
    assert not {t for t in chinese if t.startswith("Live training")}
