"""The model card (README.md) of a trained sdviz-mini folder: recipe, cost, metrics, checksums.

Model cards (Mitchell et al. 2019) say what a model is for, how it was made and how
well it does. This one also records the sha256 of every weight file, which the tests
check, so that the shipped weights are known to be the ones described.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path


def weight_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every `*.safetensors` file under `folder`, keyed by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


def read_checksums(card: str) -> dict[str, str]:
    """The checksums recorded in a model card's table (`| path | sha256 |` rows)."""
    return dict(re.findall(r"^\| `([^`]+\.safetensors)` \| `([0-9a-f]{64})` \|", card, re.M))


def _params(folder: Path) -> dict[str, int]:
    from safetensors import safe_open

    counts = {}
    for p in sorted(folder.rglob("*.safetensors")):
        with safe_open(p, "pt") as f:
            part = str(p.parent.relative_to(folder))
            counts[part] = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())
    return counts


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def write_model_card(folder: Path, table: str, results: dict, record: dict, notes: str) -> str:
    """Write `folder/README.md`; returns its text."""
    sizes = _params(folder)
    total_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    minutes = {k[: -len("_seconds")]: v / 60 for k, v in record.items() if k.endswith("_seconds")}
    time_rows = "\n".join(f"| {k} | {v:.1f} min |" for k, v in minutes.items())
    param_rows = "\n".join(f"| {k} | {v / 1e6:.2f} M |" for k, v in sizes.items())
    sums = "\n".join(f"| `{k}` | `{v}` |" for k, v in weight_checksums(folder).items())
    text = f"""# sdviz-mini

A miniature Stable Diffusion trained from scratch by `sdviz train` on ShapesWorld
(`sdviz.shapes`): the same three parts and classes as SD — a `CLIPTextModel` text
encoder (the text tower of a contrastively trained `CLIPModel`, shipped whole in
`clip/`), a `UNet2DConditionModel` with cross-attention and an `AutoencoderKL` — and
SD's DDIM scheduler configuration. 64x64 images <-> 4x16x16 latents. Folder size
{total_mb:.1f} MB. Loads offline with
`StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True)` or `sdviz.load()`.

**Use it at guidance scale {results.get("guidance", "?")}** with 25 steps: small models want
low guidance; at SD's usual 7.5 the images show the classic over-guidance artefacts
(see the guidance table below).

It knows only ShapesWorld: one to three circles, squares, triangles or stars in red,
orange, yellow, green, blue or purple, small or big, with positions ("at the top")
and relations ("to the left of"). The colour-shape pairs yellow square, blue
triangle and purple circle were never shown in training.

## Quality (`python benchmarks/mini_quality.py`, scored from pixels, not with CLIP)

{table}

## Recipe

{notes}

## Training cost

Hardware: {platform.machine()} CPU, 2 cores shared with other jobs, no GPU, fp32,
PyTorch {results.get("torch", "?")}.

| stage | wall time |
|---|---|
{time_rows}

| part | parameters |
|---|---|
{param_rows}

## Weight checksums (sha256)

| file | sha256 |
|---|---|
{sums}
"""
    (folder / "README.md").write_text(text)
    return text


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
