"""sdviz.trace: faithful records, and the pipeline left exactly as it was."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from sdviz.builder import tiny_pipeline
from sdviz.tracing import Trace, TraceBudgetError, trace

PROMPT = "a red circle to the left of a blue square"
STEPS = 6


@pytest.fixture(scope="module")
def pipe(device):
    return tiny_pipeline().to(device)


def _gen(pipe, seed=0):
    return torch.Generator(pipe.device).manual_seed(seed)


def _call(pipe, prompt=PROMPT, steps=STEPS, **kw):
    kw.setdefault("output_type", "pt")
    return pipe(prompt, num_inference_steps=steps, generator=_gen(pipe), **kw).images


def _state(pipe):
    """Everything a trace touches: processors by identity, and every hook dict."""
    procs = {k: id(v) for k, v in pipe.unet.attn_processors.items()}
    hooks = {}
    for name, mod in [("unet", pipe.unet), ("vae", pipe.vae), ("text", pipe.text_encoder)]:
        for sub_name, sub in mod.named_modules():
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs"):
                d = getattr(sub, attr)
                if d:
                    hooks[(name, sub_name, attr)] = list(d)
    return procs, hooks


def test_traced_image_equals_untraced(pipe):
    plain = _call(pipe)
    with trace(pipe) as tr:
        traced = _call(pipe)
    run = tr.last
    assert (traced - plain).abs().max() <= 1e-5
    assert torch.allclose(run["vae.image"], plain[0].cpu().float(), atol=1e-5)


def test_contract_keys_and_shapes(pipe):
    with trace(pipe) as tr:
        _call(pipe)
    run = tr.last
    L = pipe.tokenizer.model_max_length
    d = pipe.text_encoder.config.hidden_size
    S = len(pipe.scheduler.timesteps)
    c, h, w = pipe.unet.config.in_channels, 64 // 8, 64 // 8
    assert (
        run["tokenizer.input_ids"].shape == (L,) and run["tokenizer.input_ids"].dtype == torch.long
    )
    assert len(run["tokenizer.tokens"]) == L and run["tokenizer.tokens"][0] == "<|startoftext|>"
    assert run.words == ["<start>", *PROMPT.split(), "<end>"]
    assert run["tokenizer.n_tokens"] == len(PROMPT.split()) + 2
    assert run["text_encoder.prompt_embeds"].shape == (L, d)
    assert run["text_encoder.negative_prompt_embeds"].shape == (L, d)
    assert run["scheduler.name"] == type(pipe.scheduler).__name__
    assert torch.equal(run["scheduler.timesteps"], pipe.scheduler.timesteps.float().cpu())
    assert (
        run["scheduler.step_timestep"].shape
        == run["scheduler.step_alpha_bar"].shape
        == run["scheduler.step_sigma"].shape
        == (S,)
    )
    ac = pipe.scheduler.alphas_cumprod
    assert torch.allclose(
        run["scheduler.step_alpha_bar"], ac[pipe.scheduler.timesteps.cpu()].float()
    )
    assert run["denoiser.latents"].shape == (S + 1, c, h, w)
    for key in ("noise_pred_uncond", "noise_pred_text", "noise_pred", "pred_original_sample"):
        assert run[f"denoiser.{key}"].shape == (S, c, h, w)
    assert run["attention.maps"].shape == (S, L, h, w)
    assert run["vae.image"].shape == (3, 64, 64)
    assert 0 <= run["vae.image"].min() and run["vae.image"].max() <= 1
    assert run["pipeline.guidance_scale"] == 7.5 and run["pipeline.prompt"] == PROMPT
    for key, value in run.items():
        if isinstance(value, torch.Tensor):
            assert value.device.type == "cpu" and not value.requires_grad
            assert value.dtype in (torch.float32, torch.long), key
    assert "denoiser.latents" in repr(run) and str((S + 1, c, h, w)) in repr(run)
    assert PROMPT in repr(tr)


def test_guided_noise_and_x0_follow_their_formulas(pipe):
    with trace(pipe) as tr:
        _call(pipe)
    run = tr.last
    u, t, g = (
        run["denoiser.noise_pred_uncond"],
        run["denoiser.noise_pred_text"],
        run["pipeline.guidance_scale"],
    )
    assert torch.allclose(run["denoiser.noise_pred"], u + g * (t - u), atol=1e-4)
    assert not torch.allclose(u, t)  # the text changes the prediction
    abar = run["scheduler.step_alpha_bar"][:, None, None, None]
    x, eps = run["denoiser.latents"][:-1], run["denoiser.noise_pred"]
    rebuilt = abar.sqrt() * run["denoiser.pred_original_sample"] + (1 - abar).sqrt() * eps
    assert torch.allclose(rebuilt, x, atol=1e-4)


def test_attention_rows_sum_to_one(pipe):
    with trace(pipe) as tr:
        _call(pipe)
    maps = tr.last["attention.maps"]  # (S, L, h, w)
    assert torch.allclose(maps.sum(1), torch.ones_like(maps.sum(1)), atol=1e-5)
    assert (maps >= 0).all()
    assert tr.last["attention.n_layers"] == 7


def test_pipeline_restored_after_trace(pipe):
    before = _state(pipe)
    procs = dict(pipe.unet.attn_processors)
    with trace(pipe, attention_layers="up_blocks", attention_heads=True):
        assert _state(pipe) != before  # something was installed
        _call(pipe)
    assert _state(pipe) == before
    assert all(pipe.unet.attn_processors[k] is v for k, v in procs.items())


def test_pipeline_restored_after_exception_inside(pipe):
    before = _state(pipe)

    def boom(p, i, t, kw):
        if i == 2:
            raise KeyboardInterrupt("stop at step 2")
        return kw

    with pytest.raises(KeyboardInterrupt):
        with trace(pipe) as tr:
            _call(pipe, callback_on_step_end=boom)
    assert _state(pipe) == before
    assert len(tr) == 0  # the interrupted run is not kept half-done
    with pytest.raises(ValueError, match="user error"):
        with trace(pipe) as tr:
            _call(pipe)
            raise ValueError("user error")
    assert _state(pipe) == before
    assert len(tr) == 1  # the finished generation is kept


def test_nested_trace_refused(pipe):
    before = _state(pipe)
    with trace(pipe) as outer:
        inside = _state(pipe)
        with pytest.raises(RuntimeError, match="already active"):
            with trace(pipe):
                pass
        assert _state(pipe) == inside  # the refused trace changed nothing
        _call(pipe)
    assert len(outer) == 1 and outer.last.n_steps > 0
    assert _state(pipe) == before
    with trace(pipe) as again:  # usable again afterwards
        _call(pipe, steps=2)
    assert len(again) == 1


def test_several_calls_make_several_runs(pipe):
    with trace(pipe) as tr:
        _call(pipe, "a red circle", steps=3)
        _call(pipe, "a blue square", steps=4, guidance_scale=1.0)
        _call(pipe, "a green star", steps=2, output_type="latent")
    assert isinstance(tr, Trace) and len(tr) == 3
    assert [r["pipeline.prompt"] for r in tr] == ["a red circle", "a blue square", "a green star"]
    assert [r.n_steps for r in tr] == [3, 4, 2]
    no_cfg = tr[1]
    assert "text_encoder.negative_prompt_embeds" not in no_cfg
    assert torch.equal(no_cfg["denoiser.noise_pred"], no_cfg["denoiser.noise_pred_text"])
    assert tr[2]["denoiser.latents"].shape[0] == 2 and "vae.image" not in tr[2]


def test_trace_keeps_no_pipeline_reference(device):
    pipe = tiny_pipeline().to(device)
    with trace(pipe) as tr:
        _call(pipe, steps=2)
    ref = weakref.ref(pipe)
    del pipe
    gc.collect()
    assert ref() is None
    assert tr.last.n_steps == 2


def test_budget_refusal_before_denoising(pipe):
    before = _state(pipe)
    steps_done = []

    def count(p, i, t, kw):
        steps_done.append(i)
        return kw

    with pytest.raises(TraceBudgetError, match="budget_mb") as err:
        with trace(pipe, attention_layers="*", attention_heads=True, budget_mb=0.01) as tr:
            _call(pipe, steps=50, callback_on_step_end=count)
    assert "MiB" in str(err.value) and "attention_layers" in str(err.value)
    assert steps_done == [] and len(tr) == 0
    assert _state(pipe) == before
    with trace(pipe, budget_mb=50) as ok:  # the same call fits a reasonable budget
        _call(pipe, steps=2)
    assert ok.last.n_steps == 2


def test_bad_trace_options(pipe):
    before = _state(pipe)
    with pytest.raises(ValueError, match="attention must be"):
        trace(pipe, attention="all")
    with pytest.raises(ValueError, match="matches none"):
        trace(pipe, attention_layers="no_such_block")
    with pytest.raises(ValueError, match="budget_mb"):
        trace(pipe, budget_mb=0)
    with pytest.raises(ValueError, match="attention='aggregate'"):
        trace(pipe, attention=None, attention_layers="up")
    with pytest.raises(TypeError, match="Stable Diffusion pipeline"):
        trace(object())
    assert _state(pipe) == before


def test_no_attention_capture(pipe):
    procs = dict(pipe.unet.attn_processors)
    with trace(pipe, attention=None) as tr:
        assert all(pipe.unet.attn_processors[k] is v for k, v in procs.items())
        _call(pipe, steps=2)
    assert "attention.maps" not in tr.last and "denoiser.noise_pred" in tr.last


def test_decode_and_preview(pipe, device):
    with trace(pipe) as tr:
        _call(pipe)
    run = tr.last
    images = run.decode(pipe, "latents", steps=[-1])
    assert images.shape == (1, 3, 64, 64)
    # The pipeline's own decode, redone. Bit for bit on the CPU; on an H200 the two differ
    # by 7e-7 in fp32 and by 1.4e-4 with cuDNN's TF32 convolutions (PyTorch's default).
    atol = 1e-6 if device.type == "cpu" else 5e-4 if torch.backends.cudnn.allow_tf32 else 1e-5
    assert torch.allclose(images[0], run["vae.image"], atol=atol)
    x0 = run.decode(pipe.vae, steps=[0, 2])
    assert x0.shape == (2, 3, 64, 64)
    assert run.decode(pipe, steps=2).data_ptr() != x0.data_ptr()
    assert torch.equal(run.decode(pipe, steps=2)[0], x0[1])  # cached
    assert len(run._decoded) == 3
    prev = run.preview("latents")
    assert prev.shape == (STEPS + 1, 3, 8, 8) and 0 <= prev.min() and prev.max() <= 1
    with pytest.raises(ValueError, match="which must be"):
        run.decode(pipe, "noise")
    with pytest.raises(IndexError):
        run.preview(steps=99)


def test_tiled_vae_decode_records_no_partial_image(pipe):
    pipe.vae.enable_tiling()
    try:
        with trace(pipe) as tr:
            image = _call(pipe, steps=2, height=128, width=128)
    finally:
        pipe.vae.disable_tiling()
    run = tr.last
    assert image.shape[-2:] == (128, 128)
    assert run["denoiser.latents"].shape == (2, 4, 16, 16)  # x_t of both steps, no tile
    assert "vae.image" not in run


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_recorded_noise_reproduces_the_next_latents(pipe, rescale):
    """DDIM (eta=0) is deterministic: step(noise_pred[i], t_i, x_i) must give x_{i+1}."""
    with trace(pipe) as tr:
        _call(pipe, guidance_rescale=rescale)
    run = tr.last
    assert run["pipeline.guidance_rescale"] == rescale
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(STEPS)
    x = run["denoiser.latents"]
    for i, t in enumerate(sched.timesteps):
        nxt = sched.step(run["denoiser.noise_pred"][i], t, x[i]).prev_sample
        assert torch.allclose(nxt, x[i + 1], atol=1e-4), i


def test_steps_accept_numpy_and_torch_ints(pipe):
    np = pytest.importorskip("numpy")
    with trace(pipe) as tr:
        _call(pipe, steps=3)
    run = tr.last
    a = run.preview(steps=np.array([0, 2]))
    b = run.preview(steps=[torch.tensor(0), np.int64(2)])
    assert torch.equal(a, b) and a.shape[0] == 2
    assert run.preview(steps=np.int64(-1)).shape[0] == 1
    with pytest.raises(TypeError, match="steps must be ints"):
        run.preview(steps=[0.5])
