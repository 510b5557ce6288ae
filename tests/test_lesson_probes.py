"""What the lessons compute through sdviz: a scheduler swapped for a block, PSNR per image,
UNet timing, image-to-image and prompt interpolation (sdviz.schedulers, sdviz.probes)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

import sdviz
from sdviz.builder import tiny_pipeline
from sdviz.probes import (
    image_to_image,
    interpolate_prompts,
    time_unet,
)
from sdviz.schedulers import using_scheduler

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


# -- using_scheduler -------------------------------------------------------------------


def test_using_scheduler_swaps_for_the_block_and_restores(pipe):
    before = pipe.scheduler
    with using_scheduler(pipe, "euler") as new:
        assert pipe.scheduler is new and isinstance(new, EulerDiscreteScheduler)
        assert new.config.num_train_timesteps == before.config.num_train_timesteps
        assert new.config.beta_schedule == before.config.beta_schedule
    assert pipe.scheduler is before


def test_using_scheduler_restores_when_the_block_raises(pipe):
    before = pipe.scheduler
    with pytest.raises(RuntimeError, match="inside"):
        with using_scheduler(pipe, "dpm++"):
            raise RuntimeError("inside")
    assert pipe.scheduler is before and isinstance(before, DDIMScheduler)


def test_using_scheduler_refuses_an_unknown_name_before_touching_the_pipeline(pipe):
    before = pipe.scheduler
    with pytest.raises(ValueError, match="Unknown scheduler"):
        with using_scheduler(pipe, "no-such"):
            pass
    assert pipe.scheduler is before


# -- time_unet -------------------------------------------------------------------------


def test_time_unet_gives_one_median_per_size(pipe):
    timing = time_unet(pipe, [8, (8, 16)], prompt=PROMPT, repeats=2)
    assert timing.sizes == [(8, 8), (8, 16)] and timing.repeats == 2
    assert timing.seconds.shape == (2,) and (timing.seconds > 0).all()
    with pytest.raises(ValueError, match="repeats"):
        time_unet(pipe, [8], repeats=0)


# -- image_to_image --------------------------------------------------------------------


def test_image_to_image_starts_later_at_lower_strength(pipe):
    start = sdviz.generate(pipe, PROMPT, steps=4, guidance_scale=2.0)
    edit = image_to_image(pipe, start["vae.image"], "a blue square", [0.5, 1.0], steps=4)
    assert edit.strengths == [0.5, 1.0] and edit.steps == 4 and len(edit.runs) == 2
    assert edit.steps_run == [2, 4]
    t = pipe.scheduler.config.num_train_timesteps
    assert edit.first_timestep[0] < edit.first_timestep[1] < t
    assert edit.first_alpha_bar[0] > edit.first_alpha_bar[1]
    assert edit.images.shape == (2, *start["vae.image"].shape)
    assert all(r["pipeline.prompt"] == "a blue square" for r in edit.runs)
    with pytest.raises(ValueError, match="strengths"):
        image_to_image(pipe, start["vae.image"], "x", [0.0], steps=4)


# -- interpolate_prompts ---------------------------------------------------------------


def test_interpolate_prompts_ends_at_the_two_prompts(pipe):
    mix = interpolate_prompts(pipe, "a red circle", "a blue square", [0.0, 0.5, 1.0], steps=3)
    assert mix.weights == [0.0, 0.5, 1.0] and mix.images.shape[:2] == (3, 3)
    plain = sdviz.generate(pipe, "a blue square", steps=3, guidance_scale=7.5)
    assert torch.allclose(mix.images[2], plain["vae.image"], atol=1e-4)
    assert not torch.allclose(mix.images[0], mix.images[2])
