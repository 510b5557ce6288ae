"""Probes outside a generation: noising, x0/eps/v algebra, one denoising step, VAE, text.

The records the figures draw: test_probe_records.py; one helper per job: test_helpers.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from sdviz.autoencoder import decode, encode
from sdviz.builder import tiny_pipeline
from sdviz.diffusion import (
    add_noise,
    alpha_bar,
    denoise_step,
    predicted_x0,
    timesteps,
    to_epsilon,
)
from sdviz.pipeline import load
from sdviz.schedulers import make_scheduler
from sdviz.text import check_prompt, embed, tokenize

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def vpipe():
    return tiny_pipeline(prediction_type="v_prediction")


# ---------------------------------------------------------------- forward noising


def test_add_noise_matches_closed_form(pipe):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ab = pipe.scheduler.alphas_cumprod[torch.tensor([10, 700])].float().view(2, 1, 1, 1)
    expected = ab.sqrt() * x + (1 - ab).sqrt() * eps
    assert torch.allclose(add_noise(x, [10, 700], pipe.scheduler, noise=eps), expected, atol=1e-6)
    # the pipeline is accepted in place of its scheduler, and an int t applies to the batch
    one = add_noise(x, 700, pipe, noise=eps)
    assert torch.allclose(one[1], expected[1], atol=1e-6)


def test_add_noise_extremes_and_levels(pipe):
    x = torch.rand(3, 16, 16) * 2 - 1
    near = add_noise(x, 0, pipe.scheduler, generator=torch.Generator().manual_seed(0))
    assert (near - x).abs().max() < 0.15  # alpha_bar_0 = 1 - beta_0 ~ 0.99915
    eps = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3))
    far = add_noise(x, 999, pipe.scheduler, noise=eps)
    assert torch.corrcoef(torch.stack([far.flatten(), eps.flatten()]))[0, 1] > 0.99
    levels = add_noise(x, [0, 250, 500, 999], pipe.scheduler, generator=torch.Generator())
    assert levels.shape == (4, 3, 16, 16)  # one sample at four noise levels
    errs = [(lv - x).pow(2).mean().item() for lv in levels]
    assert errs == sorted(errs)  # more noise at larger t
    a = torch.Generator().manual_seed(5)
    b = torch.Generator().manual_seed(5)
    assert torch.equal(add_noise(x, 300, pipe, generator=a), add_noise(x, 300, pipe, generator=b))


def test_add_noise_bad_input(pipe):
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        add_noise(x, 1000, pipe.scheduler)
    with pytest.raises(ValueError, match="3 timesteps for a batch of 2"):
        add_noise(x, [1, 2, 3], pipe.scheduler)
    with pytest.raises(TypeError, match="ints"):
        add_noise(x, 0.5, pipe.scheduler)
    with pytest.raises(ValueError, match="noise has shape"):
        add_noise(x, 5, pipe.scheduler, noise=torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match=r"\(c, h, w\)"):
        add_noise(torch.zeros(8, 8), 5, pipe.scheduler)
    with pytest.raises(TypeError, match="alphas_cumprod"):
        add_noise(x, 5, object())


def test_prediction_type_algebra_round_trips(pipe):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    ab = alpha_bar(pipe.scheduler, [100, 800])
    a = ab.view(2, 1, 1, 1)
    xt = add_noise(x0, [100, 800], pipe.scheduler, noise=eps)
    v = a.sqrt() * eps - (1 - a).sqrt() * x0  # Salimans & Ho 2022
    for kind, out in [("epsilon", eps), ("v_prediction", v), ("sample", x0)]:
        assert torch.allclose(predicted_x0(xt, out, ab, kind), x0, atol=1e-4), kind
        assert torch.allclose(to_epsilon(xt, out, ab, kind), eps, atol=1e-3), kind
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        predicted_x0(xt, eps, ab, "flow")


# ---------------------------------------------------------------- one denoising step


def _pipeline_latents(pipe, steps):
    """Latents after every step of a real pipeline call (scheduler space)."""
    seen = []

    def keep(p, i, t, kw):
        seen.append((int(t), kw["latents"].clone()))
        return kw

    pipe(
        PROMPT,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=keep,
        output_type="latent",
    )
    return seen


def test_denoise_step_reproduces_ddim_pipeline_step(pipe):
    steps = 5
    seen = _pipeline_latents(pipe, steps)
    grid = timesteps(pipe, steps)
    assert grid == [t for t, _ in seen]
    before_ts = pipe.scheduler.timesteps.clone()
    out = denoise_step(pipe, seen[1][1][0], grid[2], PROMPT, num_inference_steps=steps)
    assert torch.allclose(out["prev_sample"], seen[2][1][0], atol=1e-5)
    assert out["prev_t"] == grid[3] and out["t"] == grid[2]
    assert torch.equal(pipe.scheduler.timesteps, before_ts)  # the user's scheduler untouched


def test_denoise_step_reproduces_euler_pipeline_step():
    pipe = tiny_pipeline()
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    seen = _pipeline_latents(pipe, 4)
    sig = pipe.scheduler.sigmas
    to_vp = [1 / (s**2 + 1).sqrt() for s in sig]  # Euler keeps x / sqrt(abar)
    t = timesteps(pipe, 4)[2]
    out = denoise_step(pipe, seen[1][1] * to_vp[2], t, PROMPT, num_inference_steps=4)
    assert torch.allclose(out["prev_sample"], seen[2][1] * to_vp[3], atol=1e-4)
    assert abs(out["alpha_bar"] - float(to_vp[2] ** 2)) < 1e-6


@pytest.mark.parametrize("which", ["pipe", "vpipe"])
def test_denoise_step_x0_is_consistent(which, request):
    pipe = request.getfixturevalue(which)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = timesteps(pipe, 10)[4]
    out = denoise_step(pipe, x, t, PROMPT, guidance_scale=5.0, num_inference_steps=10)
    ab = out["alpha_bar"]
    assert abs(ab - float(pipe.scheduler.alphas_cumprod[t])) < 1e-7
    x0 = (x - (1 - ab) ** 0.5 * out["noise_pred"]) / ab**0.5
    assert torch.allclose(out["pred_original_sample"], x0, atol=1e-4)
    guided = out["noise_pred_uncond"] + 5.0 * (out["noise_pred_text"] - out["noise_pred_uncond"])
    assert torch.allclose(out["noise_pred"], guided, atol=1e-4)
    assert not torch.allclose(out["noise_pred_uncond"], out["noise_pred_text"])
    # DDIM's own x0 estimate agrees (an independent computation inside diffusers)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    raw = out["noise_pred"]
    if sched.config.prediction_type == "v_prediction":
        raw = ab**0.5 * out["noise_pred"] - (1 - ab) ** 0.5 * out["pred_original_sample"]
    ref = sched.step(raw, t, x).pred_original_sample
    assert torch.allclose(out["pred_original_sample"], ref, atol=1e-4)
    assert out["prev_sample"].shape == x.shape


def test_denoise_step_unbatched_and_no_guidance(pipe):
    x = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = timesteps(pipe, 10)[0]
    out = denoise_step(pipe, x, t, PROMPT, guidance_scale=1.0, num_inference_steps=10)
    assert out["noise_pred"].shape == (4, 8, 8) and out["noise_pred"].dtype == torch.float32
    assert torch.allclose(out["noise_pred"], out["noise_pred_text"], atol=1e-6)
    same = denoise_step(
        pipe, x, t, PROMPT, guidance_scale=1.0, negative_prompt=None, num_inference_steps=10
    )
    assert torch.allclose(same["noise_pred_uncond"], out["noise_pred_uncond"])
    other = denoise_step(
        pipe, x, t, PROMPT, negative_prompt="a blue square", num_inference_steps=10
    )
    assert not torch.allclose(other["noise_pred_uncond"], out["noise_pred_uncond"])


def test_denoise_step_bad_input(pipe):
    x = torch.zeros(4, 8, 8)
    sched_before = pipe.scheduler
    with pytest.raises(ValueError, match="not a timestep .*nearest: \\[501, 401\\]"):
        denoise_step(pipe, x, 500, PROMPT, num_inference_steps=10)
    with pytest.raises(ValueError, match="channels"):
        denoise_step(pipe, torch.zeros(3, 64, 64), timesteps(pipe, 10)[0], PROMPT)
    with pytest.raises(ValueError, match="empty"):
        denoise_step(pipe, x, timesteps(pipe, 50)[0], "   ")
    with pytest.raises(TypeError, match="negative_prompt must be a string"):
        denoise_step(pipe, x, timesteps(pipe, 50)[0], PROMPT, negative_prompt=3)
    with pytest.raises(TypeError, match="guidance_scale"):
        denoise_step(pipe, x, timesteps(pipe, 50)[0], PROMPT, guidance_scale="high")
    assert pipe.scheduler is sched_before


# ---------------------------------------------------------------- VAE


def test_encode_decode_shapes_and_range(pipe):
    f = pipe.vae_scale_factor
    images = torch.rand(2, 3, 8 * f, 4 * f, generator=torch.Generator().manual_seed(0))
    z = encode(pipe, images)
    assert z.shape == (2, pipe.vae.config.latent_channels, 8, 4) and z.dtype == torch.float32
    raw = pipe.vae.encode(images * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    assert torch.allclose(z, raw, atol=1e-5)  # posterior mean times scaling_factor
    back = decode(pipe, z)
    assert back.shape == images.shape and back.device.type == "cpu"
    assert back.min() >= 0 and back.max() <= 1
    assert decode(pipe, z[0]).shape == (3, 8 * f, 4 * f)  # unbatched in, unbatched out
    sampled = encode(pipe, images, sample=True, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == z.shape and not torch.allclose(sampled, z)


def test_encode_accepts_uint8_and_pil(pipe):
    from PIL import Image

    f = pipe.vae_scale_factor
    arr = np.random.default_rng(0).integers(0, 256, (4 * f, 4 * f, 3), dtype=np.uint8)
    as_float = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    z_float = encode(pipe, as_float)
    assert z_float.shape == (4, 4, 4)
    assert torch.allclose(encode(pipe, Image.fromarray(arr)), z_float, atol=1e-6)
    assert torch.allclose(encode(pipe, torch.from_numpy(arr).permute(2, 0, 1)), z_float, atol=1e-6)
    assert encode(pipe, [Image.fromarray(arr)] * 2).shape == (2, 4, 4, 4)


def test_vae_bad_input(pipe):
    f = pipe.vae_scale_factor
    with pytest.raises(ValueError, match=f"divisible by the VAE factor {f}"):
        encode(pipe, torch.rand(3, 4 * f + 3, 4 * f))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode(pipe, torch.rand(3, 4 * f, 4 * f) * 2 - 1)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        encode(pipe, torch.rand(1, 4, 4 * f, 4 * f))
    with pytest.raises(TypeError, match="PIL"):
        encode(pipe, "cat.png")
    with pytest.raises(ValueError, match="channels"):
        decode(pipe, torch.rand(1, 3, 4 * f, 4 * f))


# ---------------------------------------------------------------- text


def test_tokenize_pads_and_counts(pipe):
    out = tokenize(pipe, PROMPT)
    L = pipe.tokenizer.model_max_length
    assert out["input_ids"].shape == (L,) and out["input_ids"].dtype == torch.long
    assert len(out["tokens"]) == L
    assert out["tokens"][:5] == [
        "<|startoftext|>",
        "a</w>",
        "red</w>",
        "circle</w>",
        "<|endoftext|>",
    ]
    assert out["n_tokens"] == 5 and out["truncated"] == []


def test_tokenize_reports_truncation():
    pipe = tiny_pipeline(model_max_length=8)
    out = tokenize(pipe, "a red circle and a blue square on the left")
    assert len(out["tokens"]) == 8 and out["n_tokens"] == 8
    assert out["tokens"][-1] == "<|endoftext|>"
    assert out["truncated"] == ["square</w>", "on</w>", "the</w>", "left</w>"]


def test_embed_shape_and_causality(pipe):
    e1, e2 = embed(pipe, PROMPT), embed(pipe, "a blue square")
    L, d = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    assert e1.shape == (L, d) and e1.dtype == torch.float32 and e1.device.type == "cpu"
    # CLIP's text encoder is causal: position 0 (the start token) sees only itself
    assert torch.allclose(e1[0], e2[0], atol=1e-6)
    assert not torch.allclose(e1[2], e2[2])
    ids = tokenize(pipe, PROMPT)["input_ids"][None]
    ref = pipe.text_encoder(ids)[0][0]
    assert torch.allclose(e1, ref, atol=1e-6)


@pytest.mark.parametrize(
    "bad,err,msg",
    [
        ("", ValueError, "empty"),
        ("  \n", ValueError, "empty"),
        (None, TypeError, "string"),
        (["a"], TypeError, "string"),
    ],
)
def test_bad_prompts(pipe, bad, err, msg):
    with pytest.raises(err, match=msg):
        check_prompt(bad)
    with pytest.raises(err, match=msg):
        tokenize(pipe, bad)
    with pytest.raises(err, match=msg):
        embed(pipe, bad)


def test_low_precision_pipeline_returns_cpu_float32():
    """Probes on a half-precision pipeline (bf16 here; fp16 on CUDA) give CPU float32."""
    low = load("sdviz-tiny", device="cpu", dtype="bf16")
    f = low.vae_scale_factor
    z = encode(low, torch.rand(1, 3, 4 * f, 4 * f))
    assert z.dtype == torch.float32 and z.shape == (1, 4, 4, 4)
    image = decode(low, z)
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert embed(low, PROMPT).dtype == torch.float32
    out = denoise_step(low, z[0], timesteps(low, 10)[3], PROMPT, num_inference_steps=10)
    assert all(out[k].dtype == torch.float32 for k in ("noise_pred", "prev_sample"))
    assert torch.isfinite(out["pred_original_sample"]).all()


def test_probes_on_the_test_device(device):
    """On the suite's device (SDVIZ_DEVICE=cuda: fp16 via dtype='auto') probes give CPU float32."""
    on = load("sdviz-tiny", device=device, dtype="auto")
    assert on.device.type == device.type
    f = on.vae_scale_factor
    z = encode(on, torch.rand(2, 3, 4 * f, 4 * f))
    assert z.device.type == "cpu" and z.dtype == torch.float32
    image = decode(on, z)
    assert image.device.type == "cpu" and image.dtype == torch.float32
    assert embed(on, PROMPT).dtype == torch.float32
    noisy = add_noise(z.to(device), [100, 900], on, generator=torch.Generator().manual_seed(0))
    assert noisy.device.type == device.type
    out = denoise_step(on, noisy.cpu(), timesteps(on, 10)[2], PROMPT, num_inference_steps=10)
    assert out["noise_pred"].device.type == "cpu" and out["noise_pred"].dtype == torch.float32
    assert torch.isfinite(out["prev_sample"]).all()
