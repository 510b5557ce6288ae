"""sdviz.load refuses a folder whose networks would come out with random weights (CPU).

transformers and diffusers load a weight they cannot find by name as newly initialized,
with only a warning: a text encoder saved by transformers 5 loaded by 4.44 or 5.0-5.5
gave a pipeline that silently ignored its prompt. These tests build the tiny pipeline,
save it, break one safetensors file as such a version mismatch would, and check that
`load` names the component, the weights and the fix; and that the embedded model loads
exactly the weights on disk and generates.

All of them are marked `lowest`: CI runs them a second time with the lowest transformers
and diffusers pyproject.toml declares (.ci/lowest_versions.sh).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sdviz
from sdviz.builder import tiny_pipeline
from sdviz.pipeline import EMBEDDED_MODEL, load
from sdviz.weights import MIN_VERSIONS, WeightsNotLoadedError, _unloaded

pytestmark = pytest.mark.lowest

ROOT = Path(__file__).resolve().parents[1]
TEXT_WEIGHTS = Path("text_encoder") / "model.safetensors"
UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
VAE_WEIGHTS = Path("vae") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny pipeline's save_pretrained folder (read-only: tests break copies)."""
    folder = tmp_path_factory.mktemp("weights") / "pipe"
    tiny_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    return Path(shutil.copytree(saved, tmp_path / "pipe"))


def _assert_holds_files(pipe, folder: Path) -> None:
    """Every network weight equals its tensor in the folder; every tensor is used.

    Independent of sdviz.weights' check: file names map to model names as
    transformers 4 and 5 save them (CLIP's `text_model.` prefix present or not).
    """
    for name in ("text_encoder", "unet", "vae"):
        state = getattr(pipe, name).state_dict()
        stored = {}
        for path in sorted((folder / name).glob("*.safetensors")):
            stored.update(load_file(path))
        names = {k: [k, f"text_model.{k}", k.removeprefix("text_model.")] for k in stored}
        stored = {next((n for n in names[k] if n in state), k): v for k, v in stored.items()}
        assert stored.keys() == state.keys(), name
        for key, tensor in state.items():
            assert torch.equal(tensor, stored[key].to(tensor.dtype)), f"{name}: {key}"


def _rewrite(path: Path, edit) -> None:
    """Load a safetensors file, let `edit` change its dict of tensors, save it back."""
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _renamed(tensors: dict, old: str, new: str) -> None:
    tensors[new] = tensors.pop(old)


def test_embedded_model_loads_its_weights_and_generates():
    pipe = load()
    _assert_holds_files(pipe, EMBEDDED_MODEL)
    assert pipe.tokenizer("a red circle").input_ids[0] == pipe.tokenizer.bos_token_id
    run = sdviz.generate(pipe, "a red circle", steps=2, guidance_scale=3.0)
    images = [run[k] for k in run if isinstance(run[k], torch.Tensor) and run[k].ndim >= 3]
    decoded = [t for t in images if tuple(t.shape[-3:]) == (3, 64, 64)]  # the image
    assert decoded and all(torch.isfinite(t).all() for t in decoded)


def test_untouched_folder_loads_its_weights(saved):
    _assert_holds_files(load(saved), saved)


def test_renamed_text_encoder_weight_refused(copy):
    key = next(k for k in load_file(copy / TEXT_WEIGHTS) if k.endswith("q_proj.weight"))
    _rewrite(copy / TEXT_WEIGHTS, lambda t: _renamed(t, key, key.replace("q_proj", "query")))
    with pytest.raises(WeightsNotLoadedError) as err:
        load(copy)
    msg = str(err.value)
    assert "text_encoder did not load into CLIPTextModel" in msg
    assert "1 of its" in msg and "q_proj.weight" in msg and "random" in msg
    assert f"Unused in its safetensors: '{key.replace('q_proj', 'query')}'" in msg
    assert "save_pretrained" in msg  # the versions are supported: the folder is at fault


def test_dropped_unet_weight_refused(copy):
    _rewrite(copy / UNET_WEIGHTS, lambda t: t.pop("conv_in.weight"))
    with pytest.raises(WeightsNotLoadedError, match=r"unet did not load .*Not loaded: 'conv_in"):
        load(copy)


def test_extra_vae_tensor_refused(copy):
    _rewrite(copy / VAE_WEIGHTS, lambda t: t.update(extra=torch.zeros(3)))
    with pytest.raises(WeightsNotLoadedError, match=r"vae .*more than the model uses.*'extra'"):
        load(copy)


def test_old_library_named_with_the_fix(copy, monkeypatch):
    """Below the declared lower bound, the error says to upgrade, naming the version."""
    monkeypatch.setitem(MIN_VERSIONS, "transformers", "99.0")
    key = next(k for k in load_file(copy / TEXT_WEIGHTS) if k.endswith("final_layer_norm.bias"))
    _rewrite(copy / TEXT_WEIGHTS, lambda t: t.pop(key))
    with pytest.raises(WeightsNotLoadedError) as err:
        load(copy)
    msg = str(err.value)
    assert "older than sdviz supports" in msg
    assert 'pip install -U "transformers>=99.0"' in msg


def test_prefixed_names_load(copy):
    """Text encoder keys with `text_model.` (as transformers 4 saved them) load too."""
    _rewrite(
        copy / TEXT_WEIGHTS,
        lambda t: t.update(
            {f"text_model.{k.removeprefix('text_model.')}": t.pop(k) for k in list(t)}
        ),
    )
    _assert_holds_files(load(copy), copy)


def test_old_position_ids_accepted(copy):
    """SD 1.5's text encoder file holds `position_ids`, a buffer transformers no longer saves."""
    ids = torch.arange(77).unsqueeze(0)
    _rewrite(copy / TEXT_WEIGHTS, lambda t: t.update({"text_model.embeddings.position_ids": ids}))
    load(copy)


def test_renamed_but_equal_weights_accepted(tmp_path):
    """A library that renames a weight on load (diffusers' old attention names) is fine."""
    linear = torch.nn.Linear(2, 2)
    path = tmp_path / "model.safetensors"
    state = {"old_name.weight": linear.weight.detach(), "bias": linear.bias.detach()}
    save_file(state, path)
    assert _unloaded(linear, [path]) == ([], [])
    state["old_name.weight"] = state["old_name.weight"] + 1
    save_file(state, path)
    assert _unloaded(linear, [path]) == (["weight"], ["old_name.weight"])


def test_unreadable_tokenizer_named(copy, monkeypatch):
    (copy / "tokenizer" / "tokenizer.json").write_text("{not json")
    with pytest.raises(OSError, match=r"Could not load the tokenizer .*tokenizer_config.json"):
        load(copy)
    monkeypatch.setitem(MIN_VERSIONS, "transformers", "99.0")
    with pytest.raises(OSError, match=r"no vocab.json or merges.txt.*transformers>=99.0"):
        load(copy)


def test_min_versions_are_the_declared_lower_bounds():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for library, version in MIN_VERSIONS.items():
        spec = next(d for d in deps if re.match(rf"{library}\b", d))
        assert f">={version}" in spec, (spec, version)
