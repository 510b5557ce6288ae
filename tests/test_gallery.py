"""`sdviz figures`: every file written and linked, reproducible bytes, clean failures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import json
import re
from pathlib import Path

import pytest
import torch

from sdviz.commands import main

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
    "09b_timestep_embedding",
    "10_cross_attention",
    "10b_attention_drilldown",
    "11_guidance_terms",
    "11b_guidance_sweep",
)  # fmt: skip  (08_clip_similarity needs a CLIP model shipped beside the model)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (the gallery itself does the same)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# the tiny pipeline saved as a folder whose sdviz.json recommends its own settings, as
# sdviz-mini's does: `sdviz figures` must use them when --steps and --guidance are absent
RECOMMENDED = {"guidance_scale": 2.0, "num_inference_steps": 2, "closed_vocabulary": True}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from sdviz.builder import tiny_pipeline

    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(seed=0).save_pretrained(folder)
    (folder / "sdviz.json").write_text(json.dumps(RECOMMENDED))
    return folder


class Recorded:
    """What the gallery runs did: progress bars, sdviz.generate calls, thread settings."""

    def __init__(self):
        self.bars, self.generate_calls, self.threads = [], [], []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        import tqdm.auto

        import sdviz.threads
        import sdviz.tracing

        bars, calls, threads = self.bars, self.generate_calls, self.threads

        class Bar(tqdm.auto.tqdm):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.totals = [self.total]
                bars.append(self)

            def update(self, n=1):
                done = super().update(n)
                self.totals.append(self.total)
                return done

        generate, configure = sdviz.tracing.generate, sdviz.threads.configure_threads

        def recording_generate(pipe, prompt, **kwargs):
            calls.append(dict(kwargs, prompt=prompt))
            return generate(pipe, prompt, **kwargs)

        def recording_configure(n=None, **kwargs):
            threads.append(n)
            return configure(n, **kwargs)

        mp.setattr(tqdm.auto, "tqdm", Bar)
        mp.setattr(sdviz.tracing, "generate", recording_generate)
        mp.setattr(sdviz.threads, "configure_threads", recording_configure)


@pytest.fixture(scope="module")
def recorded(tiny_folder, tmp_path_factory):
    """The same command run twice into two folders (the second writes PNG only), on the
    folder model with its recommended settings (no --steps, no --guidance)."""
    record = Recorded()
    record.outs = []
    with pytest.MonkeyPatch.context() as mp:
        record.install(mp)
        for name, formats in (("a", "png,svg"), ("b", "png")):
            out = tmp_path_factory.mktemp("gallery") / name
            argv = ["figures", "--model", str(tiny_folder), "--seed", "0", "--out", str(out)]
            assert main([*argv, "--format", formats]) == 0
            record.outs.append(out)
    return record


@pytest.fixture(scope="module")
def galleries(recorded):
    return recorded.outs


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
    # + the animation, and the CLIP and measured-guidance figures skipped with a note
    assert html.count("<figcaption>") == len(FIGURES) + 3
    assert "ships no guidance measurements" in html
    assert "a red circle to the left of a blue square" in html
    assert not leftovers(out.parent)


def test_same_seed_same_bytes(galleries):
    a, b = galleries
    names = sorted(p.name for p in b.iterdir() if p.name != "index.html")
    assert names == sorted(p.name for p in a.iterdir() if p.suffix in (".png", ".gif"))
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
    err = capsys.readouterr().err
    assert "more than the text encoder's" in err and "shorten the prompt" in err  # too long
    assert not out.exists() and not leftovers(tmp_path)


def test_clip_figure_uses_a_clip_model_shipped_beside_the_model(tmp_path):
    import argparse
    import json

    from transformers import CLIPConfig, CLIPModel

    import sdviz
    from sdviz.builder import tiny_pipeline
    from sdviz.commands.figures import CLIP_CAPTIONS, find_clip, plan

    folder = tmp_path / "model"
    tiny = tiny_pipeline(seed=0)
    tiny.save_pretrained(folder)
    tok = tiny.tokenizer
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(vocab_size=len(tok), max_position_embeddings=tok.model_max_length, **small)
    vision = dict(image_size=32, patch_size=8, **small)
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).save_pretrained(folder / "clip")
    pipe = sdviz.load(str(folder))
    found = find_clip(pipe)
    assert found is not None and tuple(found[2]) == (0.5, 0.5, 0.5)  # sdviz CLIPs: [-1, 1]
    (folder / "clip" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2]})
    )
    assert tuple(find_clip(pipe)[3]) == (0.2, 0.2, 0.2)
    assert find_clip(tiny) is None  # built in code: no folder, no CLIP
    args = argparse.Namespace(prompt="a red circle", seed=0, steps=2, guidance=7.5, model=None)
    run = sdviz.generate(pipe, args.prompt, steps=2, seed=0, attention_layers="attn2")
    make = dict((e.name, m) for e, m in plan(pipe, run, args))["08_clip_similarity"]
    fig = make()
    sim = fig.axes[0].images[0].get_array()
    assert sim.shape == (1 + len(CLIP_CAPTIONS),) * 2
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "a red circle" and len(fig.axes[0].artists) == sim.shape[0]  # thumbnails

    # without guidance there is no ε_uncond: that figure is skipped with a note, not failed
    args.guidance = 1.0
    plain = sdviz.generate(pipe, args.prompt, steps=2, seed=0, guidance_scale=1.0)
    entries = {e.name: (e, m) for e, m in plan(pipe, plain, args)}
    entry, make = entries["11_guidance_terms"]
    assert make is None and "no guidance" in entry.note
    assert entries["11b_guidance_sweep"][1] is not None


def test_measured_guidance_figure_when_the_model_ships_its_sweep(tmp_path):
    import argparse

    import sdviz
    from sdviz.builder import tiny_pipeline
    from sdviz.commands.figures import plan

    folder = tmp_path / "model"
    tiny_pipeline(seed=0).save_pretrained(folder)
    scales = [1.0, 2.0, 7.5]
    measured = {
        "steps": 2,
        "n": {"one_object": 4, "two_objects": 4, "held_out_pairs": 2},
        "scales": scales,
        "accuracy": {"one_object": [50.0, 75.0, 75.0], "two_objects": [25.0, 50.0, 50.0]},
        "quality": {"palette_error": [20.0, 15.0, 18.0], "extra_objects": [0.1, 0.0, 0.2]},
        "reference": {"palette_error": 0.0, "extra_objects": 0.0},
        "recommended": {"guidance_scale": 2.0, "rule": "the smallest g near the best"},
    }
    (folder / "guidance.json").write_text(json.dumps(measured))
    pipe = sdviz.load(str(folder))
    args = argparse.Namespace(prompt="a red circle", seed=0, steps=2, guidance=2.0, model=None)
    run = sdviz.generate(pipe, args.prompt, steps=2, seed=0, guidance_scale=2.0)
    entry, make = {e.name: (e, m) for e, m in plan(pipe, run, args)}["11c_guidance_benefit"]
    assert make is not None and not entry.note
    fig = make()
    titles = [ax.get_title() for ax in fig.get_axes() if ax.images]
    assert titles == ["g = 1", "g = 2", "g = 7.5"]  # the run itself at its own g, 2 more


def test_progress_bar_total_is_right_from_the_start(recorded):
    bars = [b for b in recorded.bars if b.desc == "sdviz figures"]
    assert len(bars) == 2
    for bar in bars:
        assert len(set(bar.totals)) == 1, bar.totals  # never raised along the way
        assert bar.n == bar.total == bar.totals[0]  # ends at total/total


def test_uses_the_models_recommended_steps_and_guidance_everywhere(recorded, tiny_folder):
    from sdviz.commands.figures import SWEEP_SCALES

    steps, guidance = RECOMMENDED["num_inference_steps"], RECOMMENDED["guidance_scale"]
    calls = recorded.generate_calls
    main_runs = [c for c in calls if c.get("attention_layers") == "attn2"]
    assert len(main_runs) == 2
    assert all(c["guidance_scale"] == guidance for c in main_runs)
    assert all(c["steps"] == steps for c in calls)  # the sweep's runs too
    assert {c["guidance_scale"] for c in calls} == {guidance, *SWEEP_SCALES}
    html = (recorded.outs[0] / "index.html").read_text(encoding="utf-8")
    source = str(tiny_folder / "sdviz.json")
    assert f"{steps} steps (from {source})" in html
    assert f"guidance {guidance:g} (from {source})" in html


def test_threads_follow_sdviz_threads(recorded, tmp_path, capsys):
    assert recorded.threads == [None, None]  # sdviz.threads' default, no ad-hoc rule
    before = torch.get_num_threads()
    assert main(["figures", *ARGS, "--threads", "0", "--out", str(tmp_path / "g")]) == 2
    assert "--threads: expected a whole number >= 1" in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_out_of_vocabulary_words_get_a_note(tiny_folder, tmp_path, capfd):
    prompt = "a zebra " + "circle " * 80  # one unknown word, and too long: refused after
    argv = ["figures", "--model", str(tiny_folder), "--prompt", prompt]
    assert main([*argv, "--out", str(tmp_path / "g")]) == 1
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if "note: " in line]  # tqdm.write's lines
    assert len(notes) == 1 and "'zebra'" in notes[0]
    assert "more than the text encoder's" in err


def test_chinese_gallery_has_the_same_files_in_chinese(tiny_folder, galleries, tmp_path):
    """`--lang zh`: the same files as the English gallery, drawn with no missing glyph, and
    an index.html in Chinese (lang="zh-CN", every title and caption from the zh table)."""
    import warnings

    from sdviz.commands.figures import FIGURES, T, out_folder

    out = tmp_path / "zh"
    argv = ["figures", "--model", str(tiny_folder), "--seed", "0", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")  # a box, not a glyph
        assert main([*argv, "--format", "png", "--lang", "zh"]) == 0
    english = galleries[1]  # the same run, PNG only, in English
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in english.iterdir())
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.startswith('<!doctype html>\n<html lang="zh-CN">')
    assert "图解 Stable Diffusion" in html and "文件：" in html
    for name in FIGURES:
        assert T(f"{name}.title", "zh") in html and T(f"{name}.title", "en") not in html, name
    assert T("11c_guidance_benefit.skipped", "zh") in html  # the tiny model ships no sweep
    assert "“a red circle to the left of a blue square”" in html  # the prompt stays English
    # the figures' words differ, so their pictures do; the animation too (its step titles)
    same = [p.name for p in out.glob("*.png") if p.read_bytes() == (english / p.name).read_bytes()]
    assert not same, same
    assert out_folder(None, "zh").name == "sdviz-figures-zh" and out_folder(None, "en").name == (
        "sdviz-figures"
    )
