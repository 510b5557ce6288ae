"""`sdviz train --flow`: sdviz-mini-flow's recipe (rectified flow, SD3 transformer) and the
folder it writes, which borrows sdviz-mini's VAE and CLIP (`sdviz.borrowed`)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import sdviz
from sdviz.borrowed import load_borrowed
from sdviz.pipeline import EMBEDDED_MODEL, recommended
from sdviz.training import recipe
from sdviz.training.config import FLOW_QUICK
from sdviz.training.flow import (
    FlowData,
    build_transformer,
    learning_rate,
    noisy_and_target,
    sample_sigmas,
    train_flow,
)


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory) -> tuple[Path, Path]:
    """The quick flow recipe, end to end, on one thread (no data-parallel processes)."""
    root = tmp_path_factory.mktemp("flow")
    out, work = root / "sdviz-mini-flow", root / "work"
    args = ["--flow", "--quick", "--out", str(out), "--work", str(work), "--threads", "1"]
    assert recipe.main(args) == 0
    return out, work


def test_the_folder_holds_only_its_own_parts(flow_run):
    out, _ = flow_run
    assert sorted(p.name for p in out.iterdir()) == [
        "model_index.json",
        "scheduler",
        "sdviz.json",
        "training_record.json",
        "transformer",
    ]
    settings = json.loads((out / "sdviz.json").read_text())
    assert (out / settings["borrowed"]["folder"]).resolve() == EMBEDDED_MODEL.resolve()
    assert not Path(settings["borrowed"]["folder"]).is_absolute()  # the folder can move
    assert settings["max_sequence_length"] == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == [None, None]


def test_the_transformer_is_stored_in_half_precision_and_loads_as_trained(flow_run):
    out, work = flow_run
    path = out / "transformer" / "diffusion_pytorch_model.safetensors"
    with safe_open(path, "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    assert dtypes == {torch.float16}
    pipe = sdviz.load(out, device="cpu", dtype="fp32")
    assert type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert pipe.text_encoder is pipe.text_encoder_2  # one CLIP encoder in both slots
    assert pipe.text_encoder_3 is None
    assert pipe.vae.config.shift_factor == 0.0
    snapshot = sorted(work.glob("flow_ema_*.safetensors"))[-1]
    trained = load_file(snapshot)
    loaded = pipe.transformer.state_dict()
    for name, value in trained.items():
        assert torch.equal(loaded[name], value.half().float()), name


def test_the_borrowed_parts_are_sdviz_minis(flow_run):
    out, _ = flow_run
    pipe = sdviz.load(out, device="cpu", dtype="fp32")
    mini = sdviz.load(EMBEDDED_MODEL, device="cpu", dtype="fp32")
    for name, value in mini.vae.state_dict().items():
        assert torch.equal(pipe.vae.state_dict()[name], value), name
    ids = mini.tokenizer("a red circle", return_tensors="pt").input_ids
    with torch.no_grad():  # the same token features as sdviz-mini's own text encoder
        ours = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-1]
        theirs = mini.text_encoder(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(ours, theirs)


def test_generation_reads_no_t5_positions(flow_run):
    out, _ = flow_run
    pipe = sdviz.load(out, device="cpu", dtype="fp32")
    advice = recommended(pipe)
    assert advice.call_arguments() == {"max_sequence_length": 0}
    run = sdviz.generate(pipe, "a red circle", steps=2, guidance_scale=2.0)
    embeds = run["pipeline.prompt_embeds"]  # (batch, tokens, width)
    assert embeds.shape[-2] == pipe.tokenizer.model_max_length  # CLIP's tokens only
    image = run["vae.image"]
    assert torch.isfinite(image).all()


def test_the_record_counts_the_steps(flow_run):
    _, work = flow_run
    rec = json.loads((work / "record.json").read_text())
    assert rec["flow_steps_done"] == FLOW_QUICK.steps
    assert rec["flow_encode_seconds"] > 0


def test_sigmas_follow_the_shifted_logit_normal():
    gen = torch.Generator().manual_seed(0)
    plain = sample_sigmas(20_000, replace(FLOW_QUICK, shift=1.0), gen)
    shifted = sample_sigmas(20_000, replace(FLOW_QUICK, shift=3.0), gen)
    assert 0 < plain.min() and plain.max() < 1
    assert abs(plain.median().item() - 0.5) < 0.02  # logit-normal(0, 1): median 1/2
    assert abs(shifted.median().item() - 0.75) < 0.02  # 3 u / (1 + 2 u) at u = 1/2


def test_the_path_is_a_straight_line():
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.0, 0.5, 1.0])
    xt, v = noisy_and_target(x0, noise, sigma)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], noise[2])
    assert torch.allclose(xt, x0 + sigma.view(-1, 1, 1, 1) * v)  # moving along v from x0


def test_learning_rate_warms_up_then_decays_to_its_floor():
    cfg = replace(FLOW_QUICK, lr=1e-3, warmup=10, final_lr_fraction=0.1)
    assert learning_rate(0, 100, cfg) == pytest.approx(1e-4)
    at_peak = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 100))  # warm-up over, cosine begun
    assert learning_rate(9, 100, cfg) == pytest.approx(1e-3 * at_peak)
    assert learning_rate(100, 100, cfg) == pytest.approx(1e-4)
    assert learning_rate(50, 100, cfg) == pytest.approx(5.5e-4)


def _tiny_data(n: int = 16) -> FlowData:
    g = torch.Generator().manual_seed(1)
    return FlowData(
        latents=torch.randn(n, 4, 8, 8, generator=g).half(),
        row_text=torch.arange(n) % 3,
        texts=torch.randn(3, 5, 16, generator=g),
        pooled=torch.randn(3, 8, generator=g),
        empty_text=torch.zeros(5, 16),
        empty_pooled=torch.zeros(8),
    )


def test_a_resumed_run_takes_the_same_steps(tmp_path):
    cfg = replace(FLOW_QUICK, steps=4, snapshot_every=2, batch=4)
    data = _tiny_data()

    def fresh():
        torch.manual_seed(0)
        return build_transformer(cfg, 8, 4, 16, 8)

    whole, done = train_flow(fresh(), data, cfg, tmp_path / "a", log=lambda m: None)
    assert done == 4
    # a run stopped (by its deadline) after its first step, then resumed
    _, stopped = train_flow(fresh(), data, cfg, tmp_path / "b", deadline=0.0, log=lambda m: None)
    assert stopped == 1
    resumed, done = train_flow(fresh(), data, cfg, tmp_path / "b", resume=True, log=lambda m: None)
    assert done == 4
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_flow_recipe_explains_a_missing_base(tmp_path):
    args = ["--flow", "--quick", "--out", str(tmp_path / "o"), "--base", str(tmp_path / "none")]
    with pytest.raises(FileNotFoundError, match="borrows the VAE"):
        recipe.main(args)


def test_borrowing_explains_bad_settings(tmp_path):
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "X"}))
    spec = {"folder": os.path.relpath(tmp_path / "nowhere", folder), "components": {}}
    with pytest.raises(OSError, match="not a pipeline folder"):
        load_borrowed(folder, spec)
    spec = {
        "folder": os.path.relpath(EMBEDDED_MODEL, folder),
        "components": {"tokenizer_2": "tokenizer"},
    }
    with pytest.raises(OSError, match="does not borrow"):
        load_borrowed(folder, spec)
    spec["components"] = {"vae": {"subfolder": "vae"}}
    with pytest.raises(OSError, match="names no class"):
        load_borrowed(folder, spec)
