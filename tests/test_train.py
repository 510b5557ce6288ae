"""`sdviz train --quick`: the whole recipe end to end in under a minute, then load and generate."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel, CLIPTokenizer

from sdviz.cli import main as cli_main

# Libraries are imported above, so the timing below measures the recipe itself.


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "mini"
    t0 = time.perf_counter()
    code = cli_main(["train", "--quick", "--out", str(out), "--threads", "1"])
    return out, code, time.perf_counter() - t0


def test_quick_training_runs_in_under_a_minute(quick_run):
    out, code, seconds = quick_run
    assert code == 0
    assert seconds < 60, f"sdviz train --quick took {seconds:.1f} s"
    record = json.loads((out / "training_record.json").read_text())
    assert record["unet_steps_done"] == 4 and record["unet_snapshot"].endswith(".safetensors")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip"):
        assert (out / part).is_dir(), part
    assert not list(out.rglob("*.bin")), "weights must be saved as safetensors"


def test_quick_pipeline_loads_and_generates(quick_run):
    out, _, _ = quick_run
    pipe = StableDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the data
    image = pipe(
        "a red circle",
        num_inference_steps=3,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_quick_clip_ranks_with_both_towers(quick_run):
    out, _, _ = quick_run
    clip = CLIPModel.from_pretrained(out / "clip")
    tok = CLIPTokenizer.from_pretrained(out / "clip")
    ids = tok(["a red circle", "a blue square"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        out_ = clip(input_ids=ids.input_ids, pixel_values=torch.zeros(1, 3, 64, 64))
    assert out_.logits_per_image.shape == (1, 2)


def test_resume_skips_finished_stages(quick_run):
    out, _, _ = quick_run
    code = cli_main(
        ["train", "--quick", "--out", str(out), "--resume", "--stage", "vae", "--threads", "1"]
    )
    assert code == 0
    log = (out.parent / "mini.work" / "train.log").read_text()
    assert "vae: already done" in log


def test_unet_learning_rate_steps_down(quick_run):
    from sdviz.training.data import warmup_lr
    from sdviz.training.recipe import QUICK

    out, _, _ = quick_run
    state = torch.load(out.parent / "mini.work" / "unet_state.pt", weights_only=False)
    (drop_at, dropped), last = QUICK["unet_lr_drops"][-1], state["step"] - 1
    assert last >= drop_at, "the quick run must pass its learning-rate drop"
    lr = state["opt"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(dropped * warmup_lr(last, 300))
