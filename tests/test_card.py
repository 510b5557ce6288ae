"""sdviz.training.card: a model card measured from the files it describes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sdviz.training.card import (
    parameter_counts,
    read_checksums,
    weight_checksums,
    write_model_card,
)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X"}))
    for part, shapes in {"unet": [(3, 4), (5,)], "vae": [(2, 2, 2)]}.items():
        (tmp_path / part).mkdir()
        tensors = {f"w{i}": torch.randn(shape) for i, shape in enumerate(shapes)}
        save_file(tensors, tmp_path / part / "model.safetensors")
    config = {"unet": {"sample_size": 16, "in_channels": 4}, "vae": {"block_out_channels": [8] * 3}}
    for part, values in config.items():
        (tmp_path / part / "config.json").write_text(json.dumps(values))
    return tmp_path


def test_card_records_what_the_files_hold(folder):
    text = write_model_card(
        folder,
        guidance=3.0,
        quality_table="| metric | value |\n|---|---|\n| one object | 99% |",
        sections=["## Recipe\n\nstep one", "## Training cost\n\n12 min"],
        status="**Status: every bar met.**",
    )
    assert (folder / "README.md").read_text() == text
    from sdviz.pipeline import recommended

    settings = recommended(folder)  # what generate, the commands and the lessons will use
    assert settings.guidance_scale == 3.0 and settings.num_inference_steps == 25
    assert settings.closed_vocabulary
    assert read_checksums(text) == weight_checksums(folder) and len(read_checksums(text)) == 2
    assert parameter_counts(folder) == {"unet": 17, "vae": 8}
    assert "| unet | 0.00 M |" in text and "guidance scale 3**" in text
    assert "64x64 images <-> 4x16x16 latents" in text  # from the configs: 16 x 2**2
    order = [text.index(s) for s in ("Status", "## Quality", "## Recipe", "## Training cost")]
    assert order == sorted(order)  # the caller's sections in the caller's order
    (folder / "vae" / "model.safetensors").write_bytes(b"changed")  # the card then lies
    assert read_checksums(text) != weight_checksums(folder)


def test_card_refuses_what_is_not_a_pipeline_or_a_guidance(folder, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        write_model_card(empty, guidance=3.0, quality_table="")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="guidance"):
            write_model_card(folder, guidance=bad, quality_table="")
    assert not (folder / "README.md").exists() and not (empty / "README.md").exists()
    assert not (folder / "sdviz.json").exists()  # refused before anything was written
