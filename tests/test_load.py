"""sdviz.load and the scheduler registry: local folders, schedulers, bad input (offline, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import DDIMScheduler

from sdviz import pipeline as sdpipe
from sdviz.builder import tiny_pipeline
from sdviz.checkpoints import check_safetensors
from sdviz.pipeline import load, resolve_device, resolve_dtype, set_scheduler
from sdviz.schedulers import canonical_name, make_scheduler, scheduler_name, scheduler_names

EXPECTED_CLASSES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm_single": "DPMSolverSinglestepScheduler",
    "dpm2": "KDPM2DiscreteScheduler",
    "dpm2_ancestral": "KDPM2AncestralDiscreteScheduler",
    "deis": "DEISMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@pytest.fixture(scope="module")
def tiny():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    tiny.save_pretrained(folder, safe_serialization=True)
    return folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_local_folder_round_trip(tiny, saved):
    pipe = load(saved, device="cpu", dtype="auto")
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.safety_checker is None
    for a, b in zip(tiny.unet.state_dict().values(), pipe.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert pipe.tokenizer("a red circle").input_ids == tiny.tokenizer("a red circle").input_ids
    assert type(pipe.scheduler) is DDIMScheduler
    gen = dict(num_inference_steps=2, output_type="pt")
    a = tiny("a red circle", generator=torch.Generator().manual_seed(0), **gen).images
    b = pipe("a red circle", generator=torch.Generator().manual_seed(0), **gen).images
    assert torch.allclose(a, b, atol=1e-6)


def test_string_path_and_pickle_free(saved):
    assert not list(saved.rglob("*.bin"))
    pipe = load(str(saved), dtype="fp32")
    assert pipe.text_encoder.dtype == torch.float32


def test_v_prediction_folder(tmp_path):
    tiny_pipeline(prediction_type="v_prediction").save_pretrained(tmp_path / "v")
    pipe = load(tmp_path / "v", scheduler="euler")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    image = pipe("a cat", num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_default_is_tiny_until_embedded_model_ships(monkeypatch, tmp_path, saved):
    monkeypatch.setattr(sdpipe, "EMBEDDED_MODEL", tmp_path / "absent")
    pipe = load()
    assert list(pipe.unet.config.block_out_channels) == [32, 64]  # the tiny pipeline
    monkeypatch.setattr(sdpipe, "EMBEDDED_MODEL", saved)
    pipe = load()
    assert os.path.samefile(pipe.config._name_or_path, saved)


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_every_scheduler_swaps_in(tiny, name):
    sched = make_scheduler(name, tiny.scheduler.config)
    assert type(sched).__name__ == EXPECTED_CLASSES[name]
    assert scheduler_name(sched) == name
    assert torch.allclose(sched.betas, tiny.scheduler.betas)
    assert torch.allclose(sched.alphas_cumprod, tiny.scheduler.alphas_cumprod)
    assert sched.config.prediction_type == tiny.scheduler.config.prediction_type
    original = tiny.scheduler
    try:
        tiny.scheduler = sched
        image = tiny("a red circle", num_inference_steps=4, output_type="pt").images
    finally:
        tiny.scheduler = original
    assert torch.isfinite(image).all()


def test_registry_covers_expected_names():
    assert set(scheduler_names()) == set(EXPECTED_CLASSES)


@pytest.mark.parametrize(
    "spelling,canonical",
    [
        ("DDIM", "ddim"),
        ("Euler A", "euler_ancestral"),
        ("euler-ancestral", "euler_ancestral"),
        ("DPM-Solver++", "dpm++"),
        ("dpmsolver++", "dpm++"),
        ("DPMSolverMultistepScheduler", "dpm++"),
        ("EulerDiscreteScheduler", "euler"),
        (" k_lms ", "lms"),
        ("UniPC", "unipc"),
    ],
)
def test_scheduler_aliases(spelling, canonical):
    assert canonical_name(spelling) == canonical


def test_unknown_scheduler_name_lists_valid_names(tiny, saved):
    with pytest.raises(ValueError, match="Valid names: ddpm, ddim") as err:
        make_scheduler("eulr", tiny.scheduler.config)
    assert "dpm++" in str(err.value)
    with pytest.raises(ValueError, match="Unknown scheduler 'nope'"):
        load(saved, scheduler="nope")
    with pytest.raises(TypeError, match="must be a string"):
        canonical_name(3)


def test_failed_swap_leaves_pipe_untouched(tiny):
    before, config = tiny.scheduler, dict(tiny.scheduler.config)
    with pytest.raises(ValueError):
        set_scheduler(tiny, "warp-drive")
    assert tiny.scheduler is before and dict(tiny.scheduler.config) == config
    pipe = tiny_pipeline()
    new = set_scheduler(pipe, "dpm++")
    assert pipe.scheduler is new and pipe.config.scheduler[1] == "DPMSolverMultistepScheduler"


@pytest.mark.parametrize("path", ["./no-such-model", "~/no/such/model", "a/b/c", "w.safetensors"])
def test_missing_local_folder(path):
    with pytest.raises(FileNotFoundError, match="No such model folder"):
        load(path)


def test_single_file_and_not_a_pipeline_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(OSError, match="single file"):
        load(tmp_path / "model.safetensors")
    with pytest.raises(OSError, match="no model_index.json"):
        load(tmp_path)


def test_pickle_only_folder_refused(tmp_path, saved):
    folder = _copy(saved, tmp_path / "p")
    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    st.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(OSError, match="pickle"):
        load(folder)


def test_truncated_weights_named(tmp_path, saved):
    folder = _copy(saved, tmp_path / "t")
    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="Truncated weights file .*unet.*diffusion_pytorch_model"):
        load(folder)
    st.write_bytes(data[:5])
    with pytest.raises(OSError, match="Truncated"):
        check_safetensors(st)


def test_corrupt_weights_named(tmp_path, saved):
    folder = _copy(saved, tmp_path / "c")
    st = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(st.read_bytes())
    data[8:40] = b"\xff" * 32  # scribble over the JSON header
    st.write_bytes(bytes(data))
    with pytest.raises(OSError, match="Corrupt weights file .*vae"):
        load(folder)
    st.write_bytes(b"\xff" * 64)  # header length far beyond the file
    with pytest.raises(OSError, match="Corrupt or truncated .*vae"):
        load(folder)


def test_offline_hub_id_gives_clear_error(tmp_path):
    """A hub id that is not cached, with HF_HUB_OFFLINE=1: no network, a teaching error."""
    code = textwrap.dedent(
        """
        import sdviz
        try:
            sdviz.load("stable-diffusion-v1-5/stable-diffusion-v1-5")
        except OSError as e:
            print("ERROR:", e)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # belt and braces: nothing is reachable
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    msg = out.stdout
    assert "ERROR:" in msg, out.stderr[-2000:]
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg
    assert "sdviz.load()" in msg and "embedded" in msg
    assert "HF_HUB_OFFLINE" in msg and "no login" in msg


def test_device_and_dtype_validation():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="Unsupported device"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("FP16") == torch.float16
    assert resolve_dtype("torch.bfloat16") == torch.bfloat16
    assert resolve_dtype(torch.float32) == torch.float32
    with pytest.raises(ValueError, match="Unknown dtype 'fp8'"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="not supported"):
        resolve_dtype(torch.int8)
    with pytest.raises(ValueError, match="Unknown dtype"):
        load(dtype="double")
    with pytest.raises(TypeError, match="model must be"):
        load(42)


def test_dtype_applied_to_tiny():
    pipe = load("sdviz-tiny", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16


def test_recommended_settings_come_from_the_model_folder(tmp_path):
    import shutil

    from sdviz.pipeline import EMBEDDED_MODEL, RECOMMENDED_FILE, Recommended, recommended

    assert recommended() == recommended(EMBEDDED_MODEL)
    assert recommended().guidance_scale == 2.0 and recommended().closed_vocabulary  # measured
    # a copy of the folder recommends what the original does: the file, not the path
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(EMBEDDED_MODEL / RECOMMENDED_FILE, copy / RECOMMENDED_FILE)
    assert recommended(copy).guidance_scale == recommended().guidance_scale
    assert recommended(str(copy)).source == str(copy / RECOMMENDED_FILE)
    # nothing said: Stable Diffusion's usual settings
    assert recommended(tmp_path) == Recommended()
    assert recommended("stable-diffusion-v1-5/stable-diffusion-v1-5").guidance_scale == 7.5
    (copy / RECOMMENDED_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid sdviz settings file"):
        recommended(copy)


def test_import_silences_the_torchvision_fallback_notice():
    """Loading a pipeline must not print transformers' CLIPImageProcessor fallback notice."""
    code = "import sdviz\nfrom transformers import CLIPImageProcessor\nprint(CLIPImageProcessor)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ImageProcessor" in done.stdout
    assert "requires torchvision" not in done.stderr + done.stdout
