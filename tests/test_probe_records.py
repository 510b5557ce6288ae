"""The records sdviz's probes compute for the figures: VAE reconstruction, a Run's text
keys, noised images, noise predictions (as epsilon for v-models), a run's step images."""

# ruff: noqa: F811  (the fixtures imported from test_probes are the tests' arguments)

from __future__ import annotations

import pytest
import torch
from test_probes import PROMPT, pipe, vpipe  # noqa: F401  (fixtures)

from sdviz.autoencoder import decode, encode
from sdviz.diffusion import alpha_bar, to_epsilon
from sdviz.text import embed


def test_reconstruct_and_psnr(pipe):
    from sdviz.autoencoder import reconstruct
    from sdviz.probes import psnr

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    rec = reconstruct(pipe, image)
    assert rec.image.shape == rec.reconstruction.shape == (3, 64, 64)
    assert rec.latents.shape == (4, 8, 8)
    assert torch.allclose(rec.latents, encode(pipe, image))
    assert rec.psnr == pytest.approx(psnr(image, decode(pipe, rec.latents)))
    with pytest.raises(ValueError, match="divisible by the VAE factor"):
        reconstruct(pipe, torch.rand(3, 60, 64))


def test_prompt_record_holds_a_runs_text_keys(pipe):
    from sdviz.text import prompt_record
    from sdviz.tracing import generate

    record = prompt_record(pipe, PROMPT)
    run = generate(pipe, PROMPT, steps=1, seed=0, attention=None)
    for key, value in record.items():
        assert key in run, key
        if torch.is_tensor(value):
            assert torch.allclose(value.float(), run[key].float(), atol=1e-5), key
        else:
            assert value == run[key], key


def test_noised_images_one_draw_for_every_t(pipe):
    from sdviz.probes import noised_images

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    noised = noised_images(pipe, image, [0, 999], seed=3)
    assert noised.timesteps == [0, 999] and noised.latent_shape == (4, 8, 8)
    assert noised.pixels.shape == noised.decoded.shape == (2, 3, 64, 64)
    assert torch.allclose(noised.alpha_bar, alpha_bar(pipe, [0, 999]))
    assert (noised.pixels[0] - image).abs().mean() < (noised.pixels[1] - image).abs().mean()
    again = noised_images(pipe, image, [0, 999], seed=3)
    assert torch.equal(again.pixels, noised.pixels) and torch.equal(again.decoded, noised.decoded)
    assert noised.preview.shape == (2, 3, 8, 8)  # the linear preview: one pixel per latent
    # the preview of the clean latent approximates the image pooled to latent size
    pooled = torch.nn.functional.adaptive_avg_pool2d(image[None], (8, 8))[0]
    assert (noised.preview[0] - pooled).abs().mean() < (noised.preview[1] - pooled).abs().mean()


def test_noise_predictions_are_epsilon_for_v_models(vpipe):
    from sdviz.probes import noise_predictions

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    ex = noise_predictions(vpipe, image, t=500, prompt=PROMPT, timesteps=[100, 900])
    assert ex.timesteps == [100, 500, 900] and ex.index == 1 and ex.prompt == PROMPT
    assert ex.noisy.shape == ex.predicted.shape == (3, 4, 8, 8) and ex.mse.shape == (3,)
    emb = embed(vpipe, PROMPT)[None].expand(3, -1, -1)
    with torch.no_grad():
        v = vpipe.unet(ex.noisy, torch.tensor(ex.timesteps), encoder_hidden_states=emb).sample
    expected = to_epsilon(ex.noisy, v, alpha_bar(vpipe, ex.timesteps), "v_prediction")
    assert torch.allclose(ex.predicted, expected, atol=1e-5)
    assert torch.allclose(ex.mse, ((ex.predicted - ex.noise) ** 2).mean((1, 2, 3)))


def test_step_images_decode_or_preview(pipe):
    from sdviz.probes import step_images
    from sdviz.tracing import generate

    run = generate(pipe, PROMPT, steps=3, seed=0, attention=None)
    decoded = step_images(run, pipe, [0, 2])
    assert decoded.decoded and decoded.steps == [0, 2]
    assert decoded.latents.shape == (2, 3, 64, 64)
    assert torch.equal(decoded.pred_original_sample, run.decode(pipe, steps=[0, 2]))
    preview = step_images(run)
    assert not preview.decoded and preview.steps == [0, 1, 2]
    assert preview.latents.shape == (3, 3, 8, 8)  # latent resolution
    assert torch.equal(preview.preview, preview.latents)  # no pipe: x_t is the preview
    assert torch.equal(decoded.preview, run.preview("latents", steps=[0, 2]))


def test_colour_statistics_tell_noise_from_flat_shapes():
    from sdviz.probes import colour_statistics
    from sdviz.shapes import COLOURS, ShapesWorld

    world, _ = ShapesWorld(size=32).batch(0, 4)  # (4, 32, 32, 3) uint8
    noise = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    purple = torch.tensor(COLOURS["purple"]).float().div(255)[None, :, None, None]
    flat = purple.expand(2, 3, 32, 32)
    table = colour_statistics({"world": world, "noise": noise, "purple": flat}, COLOURS)
    assert table["images"] == ["world (4×32×32)", "noise (4×32×32)", "purple (2×32×32)"]
    light, inside = table["light background"], table["in the world's colours"]
    assert light[0] > 0.5 and light[1] < 0.1 and light[2] == 0  # ShapesWorld is mostly pale
    assert inside[0] > 0.9 and inside[1] < 0.5 and inside[2] == 1
    assert table["coloured pixels' nearest colour"][2] == "purple 100%"
    from sdviz.probes.images import COLOUR_FORMATS

    assert set(COLOUR_FORMATS) <= set(table)  # every format names a column
    rough = table["neighbour difference"]
    assert rough[2] == 0 and rough[0] < 0.05 < rough[1]  # flat shapes vs independent pixels
    # in Chinese: the same numbers; the English formats still name the columns
    from sdviz.course import table as course_table
    from sdviz.probes.images import colour_notes

    chinese = colour_statistics({"world": world, "noise": noise, "purple": flat}, COLOURS, "zh")
    assert list(chinese.values())[1:] == list(table.values())[1:] and "浅色背景" in chinese
    shown = repr(course_table(chinese, formats=COLOUR_FORMATS, notes=colour_notes("zh")))
    assert "100%" in shown and "浅色背景：每个通道 > 0.75" in shown
    assert colour_notes("en")[2].startswith("neighbour difference: mean |change|")
