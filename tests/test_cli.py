"""The `sdviz` command line, run in-process on the tiny pipeline."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from sdviz.commands import SUBCOMMANDS, build_parser, main
from sdviz.figures.image_row import filmstrip_steps

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trace", "--model", "sdviz-tiny", "--steps", "4", "--frames", "3"]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_trace_writes_image_filmstrip_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--prompt", "a red circle", "--seed", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["filmstrip.png", "image.png", "summary.txt"]
    with Image.open(out / "image.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    with Image.open(out / "filmstrip.png") as strip:
        assert strip.size[0] > 3 * 64  # three panels side by side
    text = (out / "summary.txt").read_text()
    assert "Run('a red circle', 4 steps" in text
    assert "denoiser.pred_original_sample" in text and "timings (s)" in text
    assert re.search(r"seed: 3\b", text) and "DDIMScheduler" in text
    assert "wrote" in capsys.readouterr().out
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("model", ["sdviz-tiny-sd3", "sdviz-tiny-flux", "sdviz-tiny-sdxl"])
def test_trace_runs_the_newer_families(model, tmp_path):
    """`sdviz trace` on SD3, Flux and SDXL: their denoiser is a transformer or another UNet,
    and the summary names the model and the family's flow or diffusion scheduler."""
    out = tmp_path / "run"
    args = [model, "--prompt", "a red circle", "--steps", "2", "--height", "64", "--width", "64"]
    assert main(["trace", "--model", *args, "--out", str(out)]) == 0
    text = (out / "summary.txt").read_text()
    assert f"model: {model} (a random tiny pipeline" in text
    flow = model != "sdviz-tiny-sdxl"
    assert ("FlowMatchEulerDiscreteScheduler" in text) == flow
    assert ("denoiser.velocity" in text) == flow and "Run('a red circle', 2 steps" in text


def test_trace_with_scheduler_into_existing_folder(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "image.png").write_bytes(b"old")
    assert main([*TINY, "--scheduler", "Euler A", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    with Image.open(out / "image.png") as im:
        assert im.size == (64, 64)
    assert "EulerAncestralDiscreteScheduler" in (out / "summary.txt").read_text()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "0"], "--steps: expected a whole number >= 1"),
        (["--steps", "many"], "--steps: expected a whole number"),
        (["--guidance", "-1"], "--guidance: expected a number >= 0"),
        (["--scheduler", "warp"], "Valid names: ddpm, ddim"),
        (["--prompt", "   "], "the prompt is empty"),
        (["--frames", "0"], "--frames"),
        (["--height", "60"], "not a multiple of 8"),
        (["--height", "100"], "height=100 is not a multiple of 8"),
        (["--width", "wide"], "expected a whole number of pixels"),
        (["--threads", "0"], "--threads: expected a whole number >= 1"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main([*TINY, *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "./no-such-folder"], "No such model folder"),
        (["--device", "gpu"], "Unknown device"),
    ],
)
def test_failures_exit_1_and_leave_no_output(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main([*TINY, *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sdviz trace: error:") and message in err
    assert not out.exists() and not _leftovers(tmp_path)


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main([*TINY, "--out", str(target)]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_no_command_and_help(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "trace" in capsys.readouterr().out


def test_subcommands_come_from_the_registry():
    assert SUBCOMMANDS[0] == "sdviz.commands.trace:add_parser"
    parser = build_parser()
    assert parser.parse_args(["trace"]).command == "trace"


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    """The tiny pipeline as a folder whose sdviz.json recommends settings (as sdviz-mini's)."""
    from sdviz.builder import tiny_pipeline

    folder = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(seed=0).save_pretrained(folder)
    advice = {"guidance_scale": 2.0, "num_inference_steps": 2, "closed_vocabulary": True}
    (folder / "sdviz.json").write_text(json.dumps(advice))
    return folder


def _settings(summary: str) -> dict[str, str]:
    """summary.txt's settings block: {name: value}."""
    block = summary.split("timings (s)")[0]
    return dict(line.strip().split(": ", 1) for line in block.splitlines() if ": " in line)


def test_summary_says_what_the_run_used(folder_model, tmp_path):
    out = tmp_path / "run"
    argv = ["trace", "--model", str(folder_model), "--frames", "2", "--prompt", "a red circle"]
    assert main([*argv, "--out", str(out)]) == 0
    text = (out / "summary.txt").read_text(encoding="utf-8")
    rows = _settings(text)
    source = str(folder_model / "sdviz.json")
    assert "None" not in "".join(rows.values())  # resolved values, not raw arguments
    assert rows["model"] == str(folder_model)
    assert rows["scheduler"] == "DDIMScheduler (the model's own)"
    assert rows["image"] == "64×64 pixels (height×width)"
    assert rows["guidance"] == f"2, from {source}" and rows["steps"] == f"2, from {source}"
    assert rows["CPU threads"].endswith("from sdviz.threads' default")
    assert "Run('a red circle', 2 steps" in text
    assert text.rstrip().endswith("the meaning of each key is in sdviz.tracing.keys.")

    before = torch.get_num_threads()
    flags = ["--guidance", "5", "--steps", "3", "--threads", "2", "--scheduler", "euler"]
    assert main([*argv, *flags, "--out", str(out)]) == 0
    rows = _settings((out / "summary.txt").read_text(encoding="utf-8"))
    assert rows["guidance"] == "5, from --guidance" and rows["steps"] == "3, from --steps"
    assert rows["scheduler"] == "EulerDiscreteScheduler (--scheduler euler)"
    assert rows["CPU threads"] == "2, from --threads"
    assert torch.get_num_threads() == before  # restored after the command


def test_model_description():
    from sdviz.commands.common import model_description
    from sdviz.pipeline import EMBEDDED_MODEL

    embedded = SimpleNamespace(config={"_name_or_path": str(EMBEDDED_MODEL)})
    assert model_description(None, embedded).startswith("embedded sdviz-mini (")
    assert model_description("sdviz-tiny", SimpleNamespace(config={})).startswith("sdviz-tiny")


def test_prompt_notices_are_one_note_each(folder_model, tmp_path, capfd, recwarn):
    out = tmp_path / "run"
    prompt = "a red zebra " + "circle " * 80  # an unknown word, and too long
    argv = ["trace", "--model", str(folder_model), "--frames", "1", "--prompt", prompt]
    assert main([*argv, "--out", str(out)]) == 0  # the generation still runs
    err = capfd.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, err
    assert "'zebra'" in notes[0] and "more than the text encoder's 77" in notes[1]
    assert "Warning" not in err and "Token indices" not in err  # no Python warning, no log
    assert not [w for w in recwarn if "zebra" in str(w.message) or "cut off" in str(w.message)]
    assert (out / "image.png").is_file()


def test_filmstrip_steps():
    assert filmstrip_steps(25, 6) == [0, 5, 10, 14, 19, 24]
    assert filmstrip_steps(4, 6) == [0, 1, 2, 3]
    assert filmstrip_steps(10, 1) == [9]


def test_filmstrip_wraps_a_title_wider_than_the_strip():
    """Two frames are 3.8 inches wide: a long prompt in the title goes onto two lines
    instead of running off both edges (lesson 10's two-model strip)."""
    import torch

    from sdviz.figures.image_row import filmstrip

    title = "'a red circle to the left of a blue square', seed 0, 8 steps"
    fig = filmstrip(torch.rand(2, 3, 8, 8), ["a", "b"], title, lang="en")
    lines = fig._suptitle.get_text().split("\n")
    assert len(lines) == 2 and " ".join(lines) == title
    short = filmstrip(torch.rand(6, 3, 8, 8), list("abcdef"), "x0-hat: a red circle", lang="en")
    assert short._suptitle.get_text() == "x0-hat: a red circle"  # fits: unchanged


def test_readme_trace_command_parses():
    readme = (ROOT / "README.md").read_text()
    command = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[0].strip()
    argv = shlex.split(command[command.index("sdviz trace") :])[1:]
    args = build_parser().parse_args(argv)
    assert args.command == "trace" and args.prompt


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "sdviz"
    if not script.exists():
        pytest.skip("the sdviz console script is not installed in this environment")
    done = subprocess.run([str(script), "trace", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--scheduler" in done.stdout
