"""sdviz.load on SDXL, SD3 and Flux folders: the class model_index.json names, a generation,
and the errors for an unsupported class and an uncached hub id (offline, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionXLPipeline

from sdviz.builder import (
    TINY_RESOLUTION,
    count_parameters,
    t5_tokenizer,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sdxl_pipeline,
)
from sdviz.pipeline import FAMILIES, denoiser, family, load, recommended, set_scheduler

BUILDERS = {
    "sdxl": (tiny_sdxl_pipeline, StableDiffusionXLPipeline),
    "sd3": (tiny_sd3_pipeline, StableDiffusion3Pipeline),
    "flux": (tiny_flux_pipeline, FluxPipeline),
}
SIZE = dict(height=TINY_RESOLUTION, width=TINY_RESOLUTION)  # Flux would default to 1024


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request, tmp_path_factory):
    """(name, the pipeline built in code, its save_pretrained folder)."""
    build, _ = BUILDERS[request.param]
    pipe = build()
    folder = tmp_path_factory.mktemp(request.param) / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    return request.param, pipe, folder


def _image(pipe, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a red circle",
        num_inference_steps=4,
        generator=generator,
        output_type="pt",
        **SIZE,
        **kwargs,
    ).images  # (1, 3, H, W)


def test_folder_loads_as_its_class_and_generates_the_same_image(built):
    name, pipe, folder = built
    loaded = load(folder, device="cpu")
    assert type(loaded) is BUILDERS[name][1]
    assert family(loaded) == FAMILIES[type(pipe).__name__]
    assert count_parameters(denoiser(loaded)) == count_parameters(denoiser(pipe)) > 0
    image = _image(loaded)
    assert image.shape == (1, 3, TINY_RESOLUTION, TINY_RESOLUTION)
    torch.testing.assert_close(image, _image(pipe), atol=1e-5, rtol=0)


def test_reserved_tiny_names_build_each_family():
    for name, cls in [
        ("sdviz-tiny-sdxl", StableDiffusionXLPipeline),
        ("sdviz-tiny-sd3", StableDiffusion3Pipeline),
        ("sdviz-tiny-flux", FluxPipeline),
    ]:
        assert type(load(name, device="cpu")) is cls


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builders_are_seeded_and_leave_the_global_rng_alone(name):
    build, _ = BUILDERS[name]
    state = torch.random.get_rng_state()
    a, b, c = build(seed=0), build(seed=0), build(seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    wa, wb, wc = (torch.cat([w.flatten() for w in denoiser(p).parameters()]) for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_guidance_kinds():
    """SD3 runs classifier-free guidance; Flux-dev is guidance-distilled (an embedding)."""
    assert tiny_flux_pipeline().transformer.config.guidance_embeds
    assert not tiny_flux_pipeline(guidance_embeds=False).transformer.config.guidance_embeds
    sd3 = tiny_sd3_pipeline()
    sd3._guidance_scale = 7.0  # what __call__ sets from guidance_scale
    assert sd3.do_classifier_free_guidance


def test_t5_tokenizer_knows_the_words_and_spells_the_rest():
    tok = t5_tokenizer()
    known = tok.convert_ids_to_tokens(tok("a red circle").input_ids)
    assert known == ["▁a", "▁red", "▁circle", tok.eos_token]
    spelled = tok.convert_ids_to_tokens(tok("zebra").input_ids)[:-1]
    assert len(spelled) > 1 and tok.unk_token not in spelled
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1


def test_unsupported_pipeline_class_is_refused_with_the_families(built, tmp_path):
    import shutil

    _, _, folder = built
    other = shutil.copytree(folder, tmp_path / "other")
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "KandinskyPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="KandinskyPipeline") as err:
        load(other, device="cpu")
    for cls in FAMILIES:
        assert cls in str(err.value)


def test_uncached_sdxl_hub_id_gives_the_offline_error(tmp_path):
    code = textwrap.dedent(
        """
        import sdviz
        try:
            sdviz.load("stabilityai/stable-diffusion-xl-base-1.0")
        except OSError as e:
            print("ERROR:", e)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing is reachable
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    msg = out.stdout
    assert "ERROR:" in msg, out.stderr[-2000:]
    assert "stabilityai/stable-diffusion-xl-base-1.0" in msg
    assert "sdviz.load()" in msg and "HF_HUB_OFFLINE" in msg


def test_recommended_settings_are_the_family_defaults(built):
    """No sdviz.json: SDXL, SD3 and Flux recommend their pipeline class's own defaults."""
    import inspect

    _, pipe, folder = built
    defaults = inspect.signature(type(pipe).__call__).parameters
    for model in (pipe, folder, load(folder, device="cpu")):
        settings = recommended(model)
        assert settings.guidance_scale == defaults["guidance_scale"].default
        assert settings.num_inference_steps == defaults["num_inference_steps"].default
        assert type(pipe).__name__ in settings.source
    assert recommended(tiny_flux_pipeline()).guidance_scale != recommended().guidance_scale


@pytest.mark.parametrize("build", [tiny_sd3_pipeline, tiny_flux_pipeline])
def test_flow_matching_pipelines_keep_their_scheduler(build):
    pipe = build()
    before = pipe.scheduler
    with pytest.raises(ValueError, match="flow matching"):
        set_scheduler(pipe, "ddim")
    assert pipe.scheduler is before


def test_cached_hub_id_loads_as_its_class_offline(tmp_path):
    """A hub id in the local cache (laid out as huggingface_hub does) loads offline, as the
    class its cached model_index.json names; the same with another class is refused."""
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-sd3"
    commit = "0" * 40
    tiny_sd3_pipeline().save_pretrained(repo / "snapshots" / commit, safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = textwrap.dedent(
        """
        import json, pathlib, sys
        import sdviz
        print("LOADED", type(sdviz.load("someone/tiny-sd3", device="cpu")).__name__)
        index = pathlib.Path(sys.argv[1])
        index.write_text(json.dumps(dict(json.loads(index.read_text()), _class_name="Other")))
        try:
            sdviz.load("someone/tiny-sd3", device="cpu")
        except ValueError as e:
            print("REFUSED", e)
        """
    )
    index = repo / "snapshots" / commit / "model_index.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing is reachable
    out = subprocess.run(
        [sys.executable, "-c", code, str(index)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "LOADED StableDiffusion3Pipeline" in out.stdout, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "'Other'" in out.stdout and "FluxPipeline" in out.stdout


def test_sd3_saved_without_t5_loads_with_the_slots_empty(tmp_path):
    """save_pretrained writes a None component as [null, null]; diffusers' from_pretrained
    would then ask for it, so sdviz.load passes None, and the pipeline still generates."""
    built = tiny_sd3_pipeline()
    no_t5 = StableDiffusion3Pipeline(
        **{**built.components, "text_encoder_3": None, "tokenizer_3": None}
    )
    no_t5.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None]
    pipe = load(tmp_path)
    assert isinstance(pipe, StableDiffusion3Pipeline) and pipe.text_encoder_3 is None
    out = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="pt")
    assert out.images.shape[-2:] == (64, 64) and torch.isfinite(out.images).all()
