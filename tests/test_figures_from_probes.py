"""sdviz.figures drawn from the records of sdviz.probes (and autoencoder.reconstruct,
text.prompt_record): the probes compute, the figures only draw."""

# ruff: noqa: F811  (the fixtures imported from test_figures are the tests' arguments)

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from PIL import Image
from test_figures import (  # noqa: F401  (fixtures)
    MIN_PIXEL_STD,
    PROMPT,
    STEPS,
    assert_drawn,
    one_thread,
    pipe,
    plain_run,
    run,
    texts,
)

from sdviz import figures, probes
from sdviz.autoencoder import reconstruct
from sdviz.builder import tiny_pipeline
from sdviz.figures.style import iter_axes
from sdviz.text import prompt_record


def test_tokens_and_embeddings_from_run_and_from_pipe(run, pipe):
    fig = figures.tokens_and_embeddings(run)
    assert_drawn(fig, 3)
    text = texts(fig)
    L, d = run["text_encoder.prompt_embeds"].shape
    assert f"l = {L}" in text and f"d = {d}" in text
    for word in ("red", "circle", "blue", "square", "embedding dimension", "token"):
        assert word in text
    record = prompt_record(pipe, PROMPT)  # the probe: same tokens, same vectors
    again = figures.tokens_and_embeddings(record)
    assert again.get_suptitle() == fig.get_suptitle()
    a, b = (list(iter_axes(f))[2].images[0].get_array() for f in (fig, again))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    with pytest.raises(TypeError, match="prompt_record"):
        figures.tokens_and_embeddings(pipe)
    with pytest.raises(KeyError, match="prompt_embeds"):
        figures.tokens_and_embeddings({"pipeline.prompt": PROMPT})


def test_denoising_filmstrip_decoded_and_previewed(run, pipe):
    images = probes.step_images(run, pipe)
    assert images.decoded and images.steps == list(range(STEPS))
    fig = figures.denoising_filmstrip(run, [0, 2, -1], images=images)
    assert_drawn(fig, 9)  # x_t's linear preview, x_t decoded, x̂0 decoded
    text = texts(fig).replace("\n", " ")
    assert "x_t, linear preview" in text and "x_t, vae-decoded" in text
    assert "x̂0, vae-decoded" in text
    assert f"numbered 0…{STEPS - 1}" in text  # steps counted from 0, said once
    t = run["scheduler.step_timestep"]
    assert f"step 0, t={int(t[0])}" in text and f"step {STEPS - 1}, t={int(t[-1])}" in text
    axes = list(iter_axes(fig))
    preview, decoded = axes[0].images[0].get_array(), axes[3].images[0].get_array()
    assert preview.shape[:2] == tuple(run["denoiser.latents"].shape[-2:])  # one px per latent
    assert decoded.shape[:2] == tuple(run["vae.image"].shape[1:])  # VAE output size
    np.testing.assert_allclose(
        np.asarray(preview), run.preview("latents", steps=[0])[0].permute(1, 2, 0), atol=1e-6
    )
    two = figures.denoising_filmstrip(run, [0, 2, -1], images=images, show=["x_t", "x0"])
    assert_drawn(two, 6)
    assert "linear preview" not in texts(two)
    with pytest.raises(ValueError, match="show picks rows"):
        figures.denoising_filmstrip(run, images=images, show=["noise"])
    preview = figures.denoising_filmstrip(run)  # no images: the cheap preview, 5 steps
    assert_drawn(preview, 10)
    assert "linear preview" in texts(preview) and "vae-decoded" not in texts(preview)
    few = probes.step_images(run, pipe, steps=[1, 3])  # a chosen few: all of them drawn
    assert_drawn(figures.denoising_filmstrip(run, images=few), 6)
    with pytest.raises(ValueError, match="not among the decoded"):
        figures.denoising_filmstrip(run, [0], images=few)
    with pytest.raises(IndexError, match="out of range"):
        figures.denoising_filmstrip(run, steps=[STEPS])
    with pytest.raises(TypeError, match="step_images"):
        figures.denoising_filmstrip(run, images=pipe)


def test_denoising_animation_writes_one_gif_frame_per_step(run, pipe, tmp_path):
    path = figures.denoising_animation(run, tmp_path / "run.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == STEPS
        gif.seek(STEPS - 1)
        assert np.asarray(gif.convert("RGB")).std() > MIN_PIXEL_STD
    images = probes.step_images(run, pipe, steps=[0, 2, 4])
    path = figures.denoising_animation(run, tmp_path / "decoded.gif", images=images)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        three = gif.size  # three panels: x_t previewed, x_t decoded, x̂0 decoded
    path = figures.denoising_animation(run, tmp_path / "two.gif", images=images, show=["x_t", "x0"])
    with Image.open(path) as gif:
        assert gif.size[0] < three[0] and gif.size[1] == three[1]
    with pytest.raises(ValueError, match=".gif or .mp4"):
        figures.denoising_animation(run, tmp_path / "run.avi")
    from sdviz.figures.animation import mp4_available

    if not mp4_available():
        with pytest.raises(RuntimeError, match="ffmpeg"):
            figures.denoising_animation(run, tmp_path / "run.mp4")
        assert not (tmp_path / "run.mp4").exists()


def test_forward_noising_labels_t_and_alpha_bar(run, pipe):
    noised = probes.noised_images(pipe, run, timesteps=[0, 500, 999])
    fig = figures.forward_noising(noised)
    assert_drawn(fig, 9)  # pixels, latent preview, latent decoded
    text = texts(fig).replace("\n", " ")
    abar = pipe.scheduler.alphas_cumprod
    for t in (0, 500, 999):
        assert f"t={t}, ᾱ={float(abar[t]):.3f}" in text
    assert "pixel space" in text and "linear preview" in text and "vae-decoded" in text
    axes = list(iter_axes(fig))
    top = [ax.images[0].get_array() for ax in axes[:3]]
    clean = np.asarray(run["vae.image"].permute(1, 2, 0))
    # more noise with t: the pixel panel drifts further from the clean image
    errors = [np.abs(np.asarray(x) - clean).mean() for x in top]
    assert errors[0] < errors[1] < errors[2]
    preview = axes[3].images[0].get_array()
    assert preview.shape[:2] == noised.latent_shape[1:]  # one pixel per latent position
    only = figures.forward_noising(noised, show=["preview", "decoded"])
    assert_drawn(only, 6)
    assert "pixel space" not in texts(only)
    with pytest.raises(ValueError, match="show picks rows"):
        figures.forward_noising(noised, show=["latent"])
    with pytest.raises(ValueError, match="0..999"):
        probes.noised_images(pipe, run, timesteps=[1000])
    with pytest.raises(TypeError, match="noised_images"):
        figures.forward_noising(pipe)


def test_training_example_predicts_and_scores_noise(run, pipe):
    example = probes.noise_predictions(pipe, run, t=300, timesteps=[0, 300, 600, 999])
    fig = figures.training_example(example)
    assert_drawn(fig, 6)
    text = texts(fig)
    for word in ("true noise ε", "predicted ε̂", "error ε̂ − ε", "mse", "timestep t", "t=300"):
        assert word in text
    curve = list(iter_axes(fig))[-1].lines[0]
    assert list(curve.get_xdata()) == [0, 300, 600, 999]
    assert np.all(np.asarray(curve.get_ydata()) > 0)
    with pytest.raises(IndexError, match="channel"):
        figures.training_example(example, channel=99)
    with pytest.raises(ValueError, match="caption"):
        probes.noise_predictions(pipe, run["vae.image"])
    with pytest.raises(TypeError, match="noise_predictions"):
        figures.training_example(pipe)


def test_latent_space_channels_and_compression(run, pipe):
    fig = figures.latent_space(reconstruct(pipe, run))
    c = pipe.unet.config.in_channels
    assert_drawn(fig, c + 2)
    text = texts(fig)
    H, W = run["vae.image"].shape[1:]
    h, w = H // pipe.vae_scale_factor, W // pipe.vae_scale_factor
    assert f"{3 * H * W / (c * h * w):.0f}× fewer" in text
    assert "latent channel 0" in text and "reconstruction" in text and "psnr" in text
    with pytest.raises(ValueError, match="divisible"):
        reconstruct(pipe, torch.rand(3, 60, 60))


def test_guidance_sweep_from_probe_and_from_runs(pipe, run, plain_run):
    fig = figures.guidance_sweep(probes.guidance_runs(pipe, "a red circle", [1, 5], steps=2))
    assert_drawn(fig, 2)
    text = texts(fig)
    assert "guidance g = 1 (no guidance)" in text and "guidance g = 5" in text
    assert "'a red circle'" in text and "seed 0" in text
    from_runs = figures.guidance_sweep([plain_run, run])
    assert_drawn(from_runs, 2)
    with pytest.raises(ValueError, match="numbers >= 0"):
        probes.guidance_runs(pipe, "a red circle", scales=[-1])
    with pytest.raises(TypeError, match="guidance_runs"):
        figures.guidance_sweep(pipe)


def test_clip_similarity_with_a_model_and_with_embeddings(run, pipe):
    from transformers import CLIPConfig, CLIPModel

    tok = pipe.tokenizer
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(vocab_size=len(tok), max_position_embeddings=77, **ids, **small),
            vision_config=dict(image_size=32, patch_size=8, **small),
            projection_dim=16,
        )
    )
    captions = [PROMPT, "a green triangle", "a photo of a cat"]
    images = [run, torch.rand(3, 64, 64), torch.zeros(3, 64, 64) + 0.5]
    embeddings = probes.clip_embeddings(images, captions, model=clip, tokenizer=tok)
    fig = figures.clip_similarity(embeddings)
    assert_drawn(fig, 1)
    text = texts(fig)
    assert "cosine similarity" in text and "green triangle" in text
    sim = np.asarray(list(iter_axes(fig))[0].images[0].get_array())
    assert sim.shape == (3, 3) and np.all(np.abs(sim) <= 1 + 1e-6) and np.ptp(sim) > 0
    img, txt = torch.randn(2, 8), torch.randn(3, 8)
    fig = figures.clip_similarity(probes.ClipEmbeddings([], ["a", "b", "c"], img, txt))
    got = np.asarray(list(iter_axes(fig))[0].images[0].get_array())
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    np.testing.assert_allclose(got, (unit(img) @ unit(txt).T).numpy(), rtol=1e-5)
    assert "image 1" in texts(fig)  # no thumbnails: rows are numbered
    with pytest.raises(ValueError, match="width"):
        probes.ClipEmbeddings([], ["a"], img, torch.randn(1, 4))
    with pytest.raises(ValueError, match="captions"):
        probes.clip_embeddings(images, model=clip, tokenizer=tok)  # tensors carry no prompt
    with pytest.raises(TypeError, match="clip_embeddings"):
        figures.clip_similarity(images)


def test_figures_only_draw_no_network_runs(run, pipe):
    """Every figure drawn from a run or a probe's record: the networks are never called."""
    noised = probes.noised_images(pipe, run, [0, 999])
    example = probes.noise_predictions(pipe, run, timesteps=[0, 999])
    rec = reconstruct(pipe, run)
    images = probes.step_images(run, pipe, [0, STEPS - 1])
    text = prompt_record(pipe, PROMPT)
    calls = []
    nets = (pipe.unet, pipe.vae, pipe.text_encoder)
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in nets]
    try:
        figures.forward_noising(noised)
        figures.training_example(example)
        figures.latent_space(rec)
        figures.denoising_filmstrip(run, images=images)
        figures.tokens_and_embeddings(text)
        figures.guidance_sweep([run])
        figures.components(pipe, run)
        figures.unet_diagram(pipe)
    finally:
        for h in handles:
            h.remove()
    assert not calls


def test_low_precision_pipeline(pipe):
    """A bfloat16 pipeline (as fp16 on CUDA): inputs are cast to it, results drawn in fp32."""
    low = tiny_pipeline(seed=0).to(dtype=torch.bfloat16)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    example = probes.noise_predictions(low, image, prompt="a red circle", timesteps=[0, 999])
    assert example.predicted.dtype == torch.float32
    assert_drawn(figures.training_example(example), 6)
    assert_drawn(figures.latent_space(reconstruct(low, image)), low.unet.config.in_channels + 2)
