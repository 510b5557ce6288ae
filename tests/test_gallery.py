"""`sdviz figures`: every file written and linked, reproducible bytes, clean failures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import re
from pathlib import Path

import pytest

from sdviz.cli import main

MODEL = "sdviz-tiny"  # the tiny pipeline built in code: fast, always available
ARGS = ["--model", MODEL, "--steps", "2", "--seed", "0"]
FIGURES = (
    "01_components",
    "02_forward_noising",
    "03_noise_schedule",
    "04_training_example",
    "05_denoising_filmstrip",
    "06_latent_space",
    "07_tokens_and_embeddings",
    "09_unet_diagram",
    "10_cross_attention",
    "10b_attention_drilldown",
    "11_guidance_terms",
    "11b_guidance_sweep",
)  # fmt: skip  (08_clip_similarity needs a CLIP model shipped beside the model)


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    """The same command run twice into two folders."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp("gallery") / name
        assert main(["figures", *ARGS, "--out", str(out), "--format", "png,svg"]) == 0
        outs.append(out)
    return outs


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


def test_writes_every_figure_and_links_all_files(galleries):
    out = galleries[0]
    files = {p.name for p in out.iterdir()}
    for name in FIGURES:
        assert {f"{name}.png", f"{name}.svg"} <= files, name
    assert "05b_denoising_animation.gif" in files
    html = (out / "index.html").read_text(encoding="utf-8")
    links = set(re.findall(r'href="([^"]+)"', html))
    assert links == files - {"index.html"}  # every file linked, no dead link
    assert html.count("<figcaption>") == len(FIGURES) + 2  # + animation + skipped CLIP
    assert "a red circle to the left of a blue square" in html
    assert not leftovers(out.parent)


def test_same_seed_same_bytes(galleries):
    a, b = galleries
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    differ = [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
    assert not differ


def test_unknown_format_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["figures", *ARGS, "--out", str(out), "--format", "png,jpg"]) == 2
    assert "unknown format jpg" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_folder_fails_cleanly(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert main(["figures", *ARGS, "--out", str(blocker / "g")]) == 1
    assert "sdviz figures: error:" in capsys.readouterr().err
    assert main(["figures", *ARGS, "--out", str(blocker)]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder" and not leftovers(tmp_path)


def test_unknown_model_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "g"
    rc = main(["figures", "--model", str(tmp_path / "no-such-model"), "--out", str(out)])
    assert rc == 1
    assert "no-such-model" in capsys.readouterr().err
    assert not out.exists() and not leftovers(tmp_path)


def test_prompt_the_model_cannot_take(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["figures", *ARGS, "--out", str(out), "--prompt", " "]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    long_prompt = " ".join(["a red circle"] * 40)
    assert main(["figures", *ARGS, "--out", str(out), "--prompt", long_prompt]) == 1
    assert "longer than" in capsys.readouterr().err
    assert not out.exists() and not leftovers(tmp_path)
