"""sdviz.generate: checked inputs, one traced run, truncation reported."""

from __future__ import annotations

import warnings

import pytest
import torch

from sdviz.builder import tiny_pipeline
from sdviz.tracing import generate


@pytest.fixture(scope="module")
def pipe(device):
    return tiny_pipeline().to(device)


def _untouched(pipe):
    return {k: id(v) for k, v in pipe.unet.attn_processors.items()}, [
        (len(m._forward_hooks), len(m._forward_pre_hooks))
        for m in (pipe.unet, pipe.vae.decoder, pipe.vae.post_quant_conv, pipe.text_encoder)
    ]


def test_generate_records_its_inputs_and_matches_the_pipeline(pipe):
    run = generate(pipe, "a red circle", steps=4, guidance_scale=5.0, seed=3)
    assert run["pipeline.prompt"] == "a red circle" and run["pipeline.seed"] == 3
    assert run["pipeline.guidance_scale"] == 5.0 and run["pipeline.num_inference_steps"] == 4
    assert (
        run["pipeline.height"] == run["pipeline.width"] == 64 and run["tokenizer.truncated"] == []
    )
    gen = torch.Generator(pipe.device).manual_seed(3)
    image = pipe(
        "a red circle", num_inference_steps=4, guidance_scale=5.0, generator=gen, output_type="pt"
    ).images[0]
    assert torch.allclose(run["vae.image"], image.cpu(), atol=1e-5)
    other = generate(pipe, "a red circle", steps=4, guidance_scale=5.0, seed=4)
    assert not torch.allclose(other["vae.image"], run["vae.image"])


def test_generate_options(pipe):
    run = generate(pipe, "a cat", negative_prompt="a dog", steps=2, seed=None, height=48, width=80)
    assert run["pipeline.negative_prompt"] == "a dog" and run["pipeline.seed"] is None
    assert run["vae.image"].shape == (3, 48, 80) and run["denoiser.latents"].shape[-2:] == (6, 10)
    assert run["attention.maps"].shape[-2:] == (6, 10)
    neg = pipe.tokenizer.convert_ids_to_tokens(run["tokenizer.negative_input_ids"][:3].tolist())
    assert neg[1:] == ["a</w>", "dog</w>"]
    no_cfg = generate(pipe, "a cat", steps=2, guidance_scale=0.5, attention=None)
    assert (
        no_cfg["pipeline.guidance_scale"] == 0.5
        and not no_cfg["pipeline.do_classifier_free_guidance"]
    )
    assert torch.equal(no_cfg["denoiser.noise_pred"], no_cfg["denoiser.noise_pred_text"])
    assert "text_encoder.negative_prompt_embeds" not in no_cfg
    assert "attention.maps" not in no_cfg


def test_v_prediction_model(device):
    run = generate(tiny_pipeline(prediction_type="v_prediction").to(device), "a star", steps=3)
    assert run["denoiser.prediction_type"] == "v_prediction"
    abar = run["scheduler.step_alpha_bar"][:, None, None, None]
    x = run["denoiser.latents"][:-1]
    rebuilt = (
        abar.sqrt() * run["denoiser.pred_original_sample"]
        + (1 - abar).sqrt() * run["denoiser.noise_pred"]
    )
    assert torch.allclose(rebuilt, x, atol=1e-4)


def test_long_prompt_is_truncated_loudly(pipe):
    limit = pipe.tokenizer.model_max_length
    words = ["red", "circle", "blue", "square"] * (limit // 4) + ["horse", "riding"]
    with pytest.warns(UserWarning, match="cut off"):
        run = generate(pipe, " ".join(words), steps=1)
    assert run["tokenizer.n_tokens"] == limit
    assert run["tokenizer.truncated"][-2:] == ["horse</w>", "riding</w>"]
    assert len(run["tokenizer.truncated"]) == len(words) - (limit - 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(pipe, "a red circle", steps=1)  # a short prompt warns about nothing


BAD = [
    (dict(prompt=""), ValueError, "empty"),
    (dict(prompt="   "), ValueError, "empty"),
    (dict(prompt=None), TypeError, "string"),
    (dict(prompt=["a cat"]), TypeError, "string"),
    (dict(negative_prompt=3), TypeError, "negative_prompt"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), ValueError, "steps"),
    (dict(steps=True), ValueError, "steps"),
    (dict(guidance_scale=-1), ValueError, "guidance_scale"),
    (dict(guidance_scale="7"), ValueError, "guidance_scale"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
    (dict(height=65), ValueError, "use 64 or 72"),
    (dict(width=4), ValueError, "use 8"),
    (dict(width=0), ValueError, "positive"),
    (dict(height=64.0), ValueError, "positive int"),
    (dict(seed="1"), ValueError, "seed"),
    (dict(seed=1.5), ValueError, "seed"),
    (dict(attention="heads"), ValueError, "attention must be"),
    (dict(attention_layers="nowhere"), ValueError, "matches none"),
    (dict(budget_mb=-1), ValueError, "budget_mb"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_inputs_leave_the_pipeline_untouched(pipe, kwargs, error, message):
    before = _untouched(pipe)
    kwargs = {"prompt": "a red circle", "steps": 1, **kwargs}
    with pytest.raises(error, match=message):
        generate(pipe, kwargs.pop("prompt"), **kwargs)
    assert _untouched(pipe) == before


def test_long_prompt_says_so_once_and_readably(device, capfd):
    pipe = tiny_pipeline().to(device)  # fresh: transformers warns once per tokenizer
    limit = pipe.tokenizer.model_max_length
    words = ["red", "circle", "blue", "square"] * (limit // 4) + ["horse", "riding"]
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(pipe, " ".join(words), steps=1)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "horse riding" in messages[0] and "</w>" not in messages[0]
    err = capfd.readouterr().err
    assert "truncated because" not in err  # diffusers' own line is held back meanwhile
    assert "indexing errors" not in err  # transformers' misleading one is never triggered


def test_raw_trace_records_truncation_honestly(pipe):
    from sdviz.tracing import trace

    limit = pipe.tokenizer.model_max_length
    long_prompt = " ".join(["red", "circle"] * limit)
    with trace(pipe) as tr:
        pipe(long_prompt, num_inference_steps=1)
        pipe("a red circle", num_inference_steps=1)
    cut, fits = tr
    assert cut["tokenizer.n_tokens"] == limit
    assert cut["tokenizer.truncated"] is None  # filled every position: words may be cut
    assert fits["tokenizer.truncated"] == []


def test_sizes_follow_the_pipelines_own_rule(device):
    import sdviz

    mini = sdviz.load()  # VAE factor 4, but diffusers' pipeline wants multiples of 8
    assert mini.vae_scale_factor == 4
    with pytest.raises(ValueError, match="use 24 or 32"):
        generate(mini, "a red circle", steps=1, width=30)
    run = generate(mini, "a red circle", steps=1, width=24, height=32)  # what we suggested
    assert run["vae.image"].shape == (3, 32, 24)


def test_recommended_settings_and_unknown_words(pipe):
    import sdviz

    mini = sdviz.load()
    with pytest.warns(UserWarning, match="'astronaut', 'riding', 'horse'") as record:
        run = generate(mini, "a photo of an astronaut riding a horse", steps=1)
    assert "never learned" in str(record[0].message)
    assert run["pipeline.guidance_scale"] == sdviz.pipeline.recommended(mini).guidance_scale
    assert generate(mini, "a red circle")["pipeline.num_inference_steps"] == 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model without sdviz.json: no vocabulary notice
        run = generate(pipe, "a photo of an astronaut", steps=1)
    assert run["pipeline.guidance_scale"] == 7.5
