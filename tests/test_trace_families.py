"""sdviz.trace on SDXL, SD3 and Flux: faithful records, the same grammar, nothing left behind.

Tiny pipelines of each family (sdviz.builder: the real diffusers/transformers classes,
random weights under fixed seeds, a T5 tokenizer built in code) generate at 64 px.
"""

from __future__ import annotations

import pytest
import torch

from sdviz.builder import (
    TINY_RESOLUTION,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sdxl_pipeline,
)
from sdviz.joint_attention import joint_attention_layers, joint_queries_keys
from sdviz.pipeline import family as pipeline_family
from sdviz.tracing import TraceBudgetError, trace
from sdviz.tracing.keys import expected_keys

PROMPT = "a red circle"
STEPS = 3
BUILDERS = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline, "sdxl": tiny_sdxl_pipeline}
FAMILIES = list(BUILDERS)
FAMILY = {"sd3": "stable-diffusion-3", "sd3.5": "stable-diffusion-3", "flux": "flux"}
FAMILY["sdxl"] = "stable-diffusion-xl"  # the names sdviz.pipeline.family gives


def tiny_sd35_pipeline(seed: int = 0):
    """The tiny SD3 with an SD3.5-style transformer: RMS q/k norms and a dual-attention
    block (an extra image-only self-attention `attn2`, which does not attend to text)."""
    from diffusers import SD3Transformer2DModel

    from sdviz.seeding import drawing_from

    pipe = tiny_sd3_pipeline(seed)
    config = dict(pipe.transformer.config)
    config.update(qk_norm="rms_norm", dual_attention_layers=(0,))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with drawing_from(torch.Generator().manual_seed(seed)):
        transformer = SD3Transformer2DModel(**config)
    pipe.register_modules(transformer=transformer)
    return pipe


@pytest.fixture(scope="module")
def pipes() -> dict:
    built = {family: build(seed=0) for family, build in BUILDERS.items()}
    built["sd3.5"] = tiny_sd35_pipeline(seed=0)
    return built


def _call(pipe, steps=STEPS, **kw):
    kw.setdefault("output_type", "pt")
    size = dict(height=TINY_RESOLUTION, width=TINY_RESOLUTION)
    generator = torch.Generator().manual_seed(0)
    return pipe(PROMPT, num_inference_steps=steps, generator=generator, **size, **kw).images


def _denoiser(pipe):
    return getattr(pipe, "unet", None) or pipe.transformer


def _state(pipe):
    """Processors by identity and every hook dict of every component a trace touches."""
    procs = {k: id(v) for k, v in _denoiser(pipe).attn_processors.items()}
    hooks = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            for sub_name, sub in component.named_modules():
                for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs"):
                    if getattr(sub, attr):
                        hooks[(name, sub_name, attr)] = list(getattr(sub, attr))
    return procs, hooks


@pytest.mark.parametrize("family", [*FAMILIES, "sd3.5"])
def test_traced_image_equals_untraced_and_everything_is_restored(pipes, family):
    pipe = pipes[family]
    plain = _call(pipe)  # transformers installs its own output hooks on a first call
    before = _state(pipe)
    with trace(pipe, image_to_text=family != "sdxl") as tr:
        traced = _call(pipe)
    assert (traced - plain).abs().max() <= 1e-5
    assert torch.allclose(tr.last["vae.image"], plain[0].float(), atol=1e-5)
    assert tr.last["pipeline.family"] == FAMILY[family] == pipeline_family(pipe)
    assert _state(pipe) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_restored_after_an_exception_and_a_refused_budget(pipes, family):
    pipe = pipes[family]
    _call(pipe, steps=1)
    before = _state(pipe)

    def boom(pipe, i, t, kwargs):
        raise RuntimeError("stop at step 1")

    with pytest.raises(RuntimeError, match="stop at step 1"):
        with trace(pipe):
            _call(pipe, callback_on_step_end=boom)
    assert _state(pipe) == before
    with pytest.raises(TraceBudgetError, match="Nothing was denoised"):
        with trace(pipe, budget_mb=1e-3):
            _call(pipe)
    assert _state(pipe) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_x0_hat_of_the_last_step_is_the_final_latent(pipes, family):
    pipe = pipes[family]
    with trace(pipe) as tr:
        _call(pipe)
    run = tr.last
    assert run["scheduler.sigmas"][-1] == 0  # the schedule lands on sigma = 0
    final, x0 = run["denoiser.latents"][-1], run["denoiser.pred_original_sample"][-1]
    assert torch.allclose(x0, final, atol=1e-4)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_matching_records_sigma_velocity_and_x0(pipes, family):
    pipe = pipes[family]
    with trace(pipe) as tr:
        _call(pipe)
    run = tr.last
    sched = pipe.scheduler
    sigma = run["scheduler.step_sigma"]
    assert torch.allclose(sigma, sched.sigmas[:-1].float())
    assert torch.allclose(run["scheduler.step_timestep"], sched.timesteps.float())
    assert "scheduler.step_alpha_bar" not in run and run["denoiser.prediction_type"] == "flow"
    x, v = run["denoiser.latents"], run["denoiser.velocity"]
    # Euler on the flow: x_next = x + (sigma_next - sigma) v, with the velocity recorded
    dsigma = run["scheduler.sigmas"].diff()[:, None, None, None]
    assert torch.allclose(x[1:], x[:-1] + dsigma * v, atol=1e-4)
    assert torch.allclose(
        run["denoiser.pred_original_sample"], x[:-1] - sigma[:, None, None, None] * v, atol=1e-5
    )


def test_sd3_cfg_identity_and_its_three_text_encoders(pipes):
    pipe = pipes["sd3"]
    with trace(pipe) as tr:
        _call(pipe, guidance_scale=4.0, negative_prompt="blue")
    run = tr.last
    u, t, g = run["denoiser.velocity_uncond"], run["denoiser.velocity_text"], 4.0
    assert run["pipeline.do_classifier_free_guidance"] and run["pipeline.guidance_scale"] == g
    assert torch.allclose(run["denoiser.velocity"], u + g * (t - u), atol=1e-5)
    assert run["pipeline.negative_prompt"] == "blue" and run["pipeline.prompt"] == PROMPT
    # CLIP-L | CLIP-G along channels (77 tokens), then T5's tokens: the sequence read
    seq = run["pipeline.prompt_embeds"]
    n_clip = pipe.tokenizer.model_max_length
    d1 = pipe.text_encoder.config.hidden_size
    assert torch.equal(run["text_encoder.prompt_embeds"], seq[:n_clip, :d1])
    assert run["text_encoder_3.prompt_embeds"].shape[0] == seq.shape[0] - n_clip
    assert run["attention.text_sequence"] == {
        "tokenizer": (0, n_clip),
        "tokenizer_2": (0, n_clip),
        "tokenizer_3": (n_clip, seq.shape[0]),
    }
    assert run["tokenizer_3.tokens"][: run["tokenizer_3.n_tokens"]][-1] == "</s>"
    t5_red = run.token_index("red", tokenizer="tokenizer_3")
    assert t5_red >= n_clip and run.token_index("red") < n_clip
    assert torch.equal(
        run.word_map("red", step=0, tokenizer="tokenizer_3"), run["attention.maps"][0, t5_red]
    )


def test_flux_is_guidance_distilled_and_unpacked(pipes):
    pipe = pipes["flux"]
    with trace(pipe) as tr:
        _call(pipe, guidance_scale=2.5)
    run = tr.last
    assert not run["pipeline.do_classifier_free_guidance"]
    assert run["denoiser.guidance"] == 2.5 and "denoiser.velocity_uncond" not in run
    assert torch.equal(run["denoiser.velocity"], run["denoiser.velocity_text"])
    c = pipe.vae.config.latent_channels
    h = TINY_RESOLUTION // pipe.vae_scale_factor
    assert run["denoiser.latents"].shape == (STEPS + 1, c, h, h)  # packed 2x2 -> latent grid
    assert run["attention.maps"].shape[-2:] == (h // 2, h // 2)  # one map cell per token
    # the unpacked final latents decode to the pipeline's image
    assert torch.allclose(run.decode(pipe, "latents", steps=-1)[0], run["vae.image"], atol=1e-4)
    assert run["attention.text_sequence"] == {"tokenizer_2": (0, run["attention.maps"].shape[1])}
    assert run.words[-1] == "</s>" and "red" in run.words
    # Flux's dynamic shift grows with the token count: 16 tokens are far below its base 256
    assert run["scheduler.shift"] < pipe.scheduler.config.shift


def test_flux_true_cfg_records_both_branches_and_solves_its_scale(pipes):
    """true_cfg_scale > 1 with a negative prompt: a second transformer call per step."""
    pipe = pipes["flux"]
    _call(pipe, steps=1)
    before = _state(pipe)
    with trace(pipe) as tr:
        _call(pipe, true_cfg_scale=2.0, negative_prompt="blue")
    assert _state(pipe) == before
    run = tr.last
    conditions = {"text", "negative", "cfg", "flow", "sigmas", "distilled", "decoded", "attention"}
    assert set(run) == expected_keys("flux", conditions)
    assert run["pipeline.do_classifier_free_guidance"] and run["pipeline.negative_prompt"] == "blue"
    assert abs(run["pipeline.true_cfg_scale"] - 2.0) < 1e-3  # solved, not read
    u, t, v = (run[f"denoiser.velocity{k}"] for k in ("_uncond", "_text", ""))
    assert not torch.allclose(u, t)  # the negative prompt's own call
    assert torch.allclose(v, u + run["pipeline.true_cfg_scale"] * (t - u), atol=1e-6)
    x, dsigma = run["denoiser.latents"], run["scheduler.sigmas"].diff()[:, None, None, None]
    assert torch.allclose(x[1:], x[:-1] + dsigma * v, atol=1e-4)
    assert torch.allclose(run["denoiser.pred_original_sample"][-1], x[-1], atol=1e-4)
    assert run["attention.maps"].shape[0] == STEPS  # maps of the prompt's calls only


def test_sdxl_records_both_encoders_pooled_and_time_ids(pipes):
    pipe = pipes["sdxl"]
    with trace(pipe) as tr:
        _call(pipe, guidance_scale=5.0)
    run = tr.last
    seq = run["pipeline.prompt_embeds"]
    d1 = pipe.text_encoder.config.hidden_size
    assert seq.shape[1] == d1 + pipe.text_encoder_2.config.hidden_size
    assert torch.equal(
        torch.cat([run["text_encoder.prompt_embeds"], run["text_encoder_2.prompt_embeds"]], 1), seq
    )
    size = float(TINY_RESOLUTION)
    assert run["pipeline.add_time_ids"].tolist() == [size, size, 0.0, 0.0, size, size]
    assert run["pipeline.pooled_prompt_embeds"].shape == (
        pipe.text_encoder_2.config.projection_dim,
    )
    # an empty negative prompt is zeroed, not encoded (force_zeros_for_empty_prompt)
    assert "tokenizer_2.negative_tokens" not in run
    assert not run["pipeline.negative_prompt_embeds"].any()
    u, t = run["denoiser.noise_pred_uncond"], run["denoiser.noise_pred_text"]
    assert torch.allclose(run["denoiser.noise_pred"], u + 5.0 * (t - u), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_rows_sum_to_one_over_the_text_tokens(pipes, family):
    pipe = pipes[family]
    joint = family != "sdxl"
    with trace(pipe, image_to_text=joint, text_share=joint) as tr:
        _call(pipe)
    run = tr.last
    maps = run["attention.maps"]  # (S, L, h_a, w_a)
    assert maps.shape[:2] == (
        STEPS,
        run["pipeline.prompt_embeds" if family != "flux" else "text_encoder_2.prompt_embeds"].shape[
            0
        ],
    )
    assert torch.allclose(maps.sum(1), torch.ones(()), atol=1e-5)  # softmax over text only
    if joint:
        share = run["attention.text_share"]  # softmax over text + image: text's part
        assert share.shape == (STEPS, *maps.shape[-2:]) and (share > 0).all() and (share < 1).all()
        back = run["attention.image_to_text_maps"]  # text queries over image keys
        assert torch.allclose(back.sum((2, 3)), torch.ones(()), atol=1e-5)
        assert run["attention.n_layers"] == len(joint_attention_layers(pipe.transformer))


@pytest.mark.parametrize("family", ["sd3", "sd3.5", "flux"])
def test_rebuilt_queries_and_keys_reproduce_each_layers_output(pipes, family):
    """softmax(q k^T / sqrt(d)) V from the rebuilt q, k equals what the layer computed, and
    the recorded maps and text share are that softmax's text columns."""
    pipe = pipes[family]
    transformer = pipe.transformer
    seen: dict = {}
    handles = []
    names = joint_attention_layers(transformer)
    for name in names:
        attn = transformer.get_submodule(name)
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            if getattr(attn, proj, None) is not None:
                hook = lambda m, a, out, key=(name, proj): seen.setdefault(key, out)  # noqa: E731
                handles.append(getattr(attn, proj).register_forward_hook(hook))
        if getattr(attn, "to_out", None) is not None:  # joint: the image part enters to_out
            hook = lambda m, a, key=(name, "out"): seen.setdefault(key, a[0])  # noqa: E731
            handles.append(attn.to_out[0].register_forward_pre_hook(hook))
        else:  # single-stream: the layer returns the attention output itself
            hook = lambda m, a, out, key=(name, "out"): seen.setdefault(key, out)  # noqa: E731
            handles.append(attn.register_forward_hook(hook))
    if family == "flux":
        hook = lambda m, a, out: seen.setdefault("rope", out)  # noqa: E731
        handles.append(transformer.pos_embed.register_forward_hook(hook))
    try:
        with (
            torch.no_grad(),
            trace(pipe, attention_layers="*", attention_heads=True, text_share=True) as tr,
        ):
            _call(pipe, steps=1, guidance_scale=1.0)
    finally:
        for h in handles:
            h.remove()
    run = tr.last
    n_text = seen[(names[0], "add_k_proj")].shape[1]
    shares = []
    assert all(n.endswith(".attn") for n in names)  # SD3.5's image-only attn2 is left out
    for name in names:
        attn = transformer.get_submodule(name)
        projections = {p: seen.get((name, p)) for p in ("to_q", "to_k", "add_q_proj", "add_k_proj")}
        q_img, k_img, q_txt, k_txt = joint_queries_keys(
            attn, projections, 0, n_text, seen.get("rope")
        )
        v = seen[(name, "to_v")][0].reshape(-1, attn.heads, q_img.shape[-1])  # single: all
        if getattr(attn, "add_v_proj", None) is not None:  # joint: text's own values first
            v = torch.cat([seen[(name, "add_v_proj")][0].reshape(n_text, attn.heads, -1), v])
        q, k = torch.cat([q_txt, q_img]).transpose(0, 1), torch.cat([k_txt, k_img]).transpose(0, 1)
        probs = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(-1)  # (heads, n, n)
        out = (probs @ v.float().transpose(0, 1)).transpose(0, 1).flatten(1)  # (n, heads*d)
        image_part = out[n_text:]
        actual = seen[(name, "out")][0]
        actual = actual[n_text:] if actual.shape[0] == out.shape[0] else actual
        assert torch.allclose(image_part, actual.float(), atol=1e-5), name
        # recorded: image queries' rows over the text keys, re-normalised over the text
        on_text = probs[:, n_text:, :n_text]  # (heads, N, L) of the full joint softmax
        share = on_text.sum(-1)  # (heads, N)
        recorded = run["attention." + name][0]  # (heads, L, h_p, w_p)
        expected = (on_text / share[..., None]).transpose(1, 2).reshape(recorded.shape)
        assert torch.allclose(recorded, expected, atol=1e-5), name
        shares.append(share.mean(0))
    share = torch.stack(shares).mean(0).reshape(run["attention.text_share"].shape[1:])
    assert torch.allclose(run["attention.text_share"][0], share, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_runs_every_family_and_checks_its_size_multiple(pipes, family):
    """`sdviz.generate` (not only `trace`) works on each family; SD3's 2x2 patches and
    Flux's 2x2 packing make their image sides multiples of twice the VAE factor."""
    from sdviz.tracing import generate

    pipe = pipes[family]
    run = generate(pipe, PROMPT, steps=2, height=TINY_RESOLUTION, width=TINY_RESOLUTION)
    assert run["vae.image"].shape[-2:] == (TINY_RESOLUTION, TINY_RESOLUTION)
    assert run["pipeline.family"] == pipeline_family(pipe)
    patch = 1 if family == "sdxl" else 2
    multiple = int(pipe.vae_scale_factor) * patch
    with pytest.raises(ValueError, match=f"not a multiple of {multiple}"):
        generate(pipe, PROMPT, steps=2, height=TINY_RESOLUTION + multiple // 2, width=64)
