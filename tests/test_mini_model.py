"""The shipped sdviz-mini model: loads offline, generates, and its weights match its card."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdviz.training.card import read_checksums, weight_checksums

MODEL = Path(__file__).resolve().parents[1] / "sdviz" / "models" / "sdviz-mini"
pytestmark = pytest.mark.skipif(
    not (MODEL / "model_index.json").is_file(),
    reason=f"the trained sdviz-mini model is not shipped in {MODEL} (run `sdviz train`)",
)


def test_loads_offline_and_generates_right_size():
    code = f"""
import socket
def _no_network(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = _no_network
import torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained({str(MODEL)!r}, use_safetensors=True)
pipe.set_progress_bar_config(disable=True)
img = pipe("a red circle", num_inference_steps=5, guidance_scale=2.0, output_type="np",
           generator=torch.Generator().manual_seed(0)).images[0]
side = pipe.unet.config.sample_size * pipe.vae_scale_factor
assert img.shape == (side, side, 3), img.shape
assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01
print("OK", side)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK 64" in out.stdout


def test_weight_files_match_the_card_checksums():
    recorded = read_checksums((MODEL / "README.md").read_text())
    actual = weight_checksums(MODEL)
    assert recorded, "the model card records no checksums"
    assert recorded == actual


def test_size_budget_and_safetensors_only():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert (MODEL / "clip" / "config.json").is_file()


def test_text_encoder_is_the_shipped_clips_text_tower():
    import torch
    from transformers import CLIPModel, CLIPTextModel

    text = CLIPTextModel.from_pretrained(MODEL / "text_encoder").state_dict()
    tower = CLIPModel.from_pretrained(MODEL / "clip").text_model.state_dict()
    assert text.keys() == tower.keys()
    for key, value in tower.items():
        assert torch.equal(text[key], value), key


def test_shipped_clip_reads_relations_not_a_bag_of_words(benchmark_module):
    """Trained with counterfactual captions: it must prefer the true one well above 50%."""
    from transformers import CLIPModel, CLIPTokenizer

    mq = benchmark_module("mini_quality")
    clip = CLIPModel.from_pretrained(MODEL / "clip").eval()
    wins = mq.clip_contrasts(clip, CLIPTokenizer.from_pretrained(MODEL / "clip"), n=256)
    # the CLIP trained without them scored 49% and 84% here, this one 65% and 86%
    assert wins["relation"] >= 0.6 and wins["colours"] >= 0.8, wins


def test_shipped_unet_puts_objects_where_the_prompt_says(benchmark_module):
    """Position words must move the object: before the `where` fine-tune, "on the left"
    and "on the right" came out at the same mean x (0.41 and 0.43 of the width)."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    mq = benchmark_module("mini_quality")
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    classify = mq.ShapeClassifier()
    mean_x = {}
    for side in ("left", "right"):
        prompts = [
            (f"a {c} {s} on the {side}", 700 + i, None)
            for i, (c, s) in enumerate(
                [
                    ("red", "circle"),
                    ("blue", "square"),
                    ("green", "star"),
                    ("orange", "triangle"),
                    ("purple", "square"),
                    ("yellow", "circle"),
                ]
            )
        ]
        with torch.no_grad():
            images = mq.generate(pipe, prompts, 3.0)
        xs = [found[0]["x"] for im in images if (found := mq.find_objects(im, classify))]
        assert len(xs) >= 4, side
        mean_x[side] = float(np.mean(xs))
    # training images put them at 0.18-0.30 and 0.70-0.82 of the width
    assert mean_x["left"] < 0.4 and mean_x["right"] > 0.6, mean_x
