"""The shipped sdviz-mini-flow: loads offline through sdviz.load and through plain diffusers
(as its card shows), generates, stays within its size budget, matches its card's checksums,
and borrows sdviz-mini's parts rather than copying them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdviz.training.card import read_checksums, weight_checksums

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sdviz" / "models" / "sdviz-mini-flow"
MINI = ROOT / "sdviz" / "models" / "sdviz-mini"
pytestmark = pytest.mark.skipif(
    not (MODEL / "model_index.json").is_file(),
    reason=f"sdviz-mini-flow is not shipped in {MODEL} (run `sdviz train --flow`)",
)

_NO_NETWORK = """
import socket
def _no_network(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = _no_network
"""


def _run(code: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_loads_offline_by_name_and_generates_right_size():
    out = _run(
        """
import sdviz
pipe = sdviz.load("sdviz-mini-flow", device="cpu")
run = sdviz.generate(pipe, "a red circle", steps=4)
image = run["vae.image"]
side = pipe.transformer.config.sample_size * pipe.vae_scale_factor
assert tuple(image.shape[-2:]) == (side, side), image.shape
assert pipe.text_encoder is pipe.text_encoder_2 and pipe.text_encoder_3 is None
print("OK", side, type(pipe).__name__)
"""
    )
    assert "OK 64 StableDiffusion3Pipeline" in out


def test_the_cards_plain_diffusers_recipe_loads_it():
    card = (MODEL / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]  # the card's own snippet
    code = code.replace('"sdviz/models/', f'"{ROOT}/sdviz/models/')
    out = _run(code + "\nprint('OK', image.size)\n")
    assert "OK (64, 64)" in out


def test_weight_files_match_the_card_checksums():
    recorded = read_checksums((MODEL / "README.md").read_text())
    assert recorded, "the model card records no checksums"
    assert recorded == weight_checksums(MODEL)


def test_size_budget_and_only_its_own_parts():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20  # the issue's budget
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert not (MODEL / "vae").exists() and not (MODEL / "text_encoder").exists()
    borrowed = json.loads((MODEL / "sdviz.json").read_text())["borrowed"]
    assert (MODEL / borrowed["folder"]).resolve() == MINI.resolve()


def test_the_card_reports_the_issues_bars_as_met():
    card = (MODEL / "README.md").read_text()
    rows = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in card.splitlines()
        if line.startswith("| ") and line.count("|") >= 5
    }
    met = [name for name, verdict in rows.items() if verdict == "yes"]
    assert any(name.startswith("One object") for name in met), rows
    assert any(name.startswith("Two objects") for name in met), rows
    assert any(name.startswith("Left/right placement") for name in met), rows
