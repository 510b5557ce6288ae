"""Components a model folder borrows from another folder: `sdviz.json`'s "borrowed" entry.

sdviz-mini-flow (an SD3-style rectified-flow transformer, Esser et al. 2024) is drawn with
sdviz-mini's VAE and CLIP text encoder: the same autoencoder and the same words, only the
denoiser changes. `model_index.json` cannot point at another folder (diffusers loads each
component from the subfolder of its own name), so the flow folder holds only its
transformer and scheduler, and its `sdviz.json` says where the rest comes from:

    {"borrowed": {"folder": "../sdviz-mini",
                  "components": {
                      "vae": {"subfolder": "vae", "config": {"shift_factor": 0.0}},
                      "text_encoder": {"subfolder": "clip", "config": {"projection_dim": 128}},
                      "text_encoder_2": "text_encoder",
                      "tokenizer": {"subfolder": "tokenizer", "config": {"model_max_length": 24}},
                      "tokenizer_2": "tokenizer"}}}

Each component is loaded with the class `model_index.json` names for it,
`cls.from_pretrained(folder / subfolder, **config)`; a component named by a string is the
same object as the one it names (one CLIP encoder in both of SD3's CLIP slots).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

BORROWED_KEY = "borrowed"


def borrowed_spec(folder: Path) -> dict[str, Any] | None:
    """The "borrowed" entry of `folder/sdviz.json`, or None when it has none."""
    path = Path(folder) / "sdviz.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(BORROWED_KEY)
    except (ValueError, AttributeError):
        return None  # sdviz.pipeline.recommended explains a broken sdviz.json


def _class(index: dict[str, Any], name: str, folder: Path) -> Any:
    spec = index.get(name)
    if not (isinstance(spec, list) and len(spec) == 2 and all(spec)):
        raise OSError(
            f"{folder}/sdviz.json borrows {name!r}, but model_index.json names no class for it "
            f"(it says {spec!r}). List the component there as [library, class], e.g. "
            '["diffusers", "AutoencoderKL"].'
        )
    return getattr(importlib.import_module(spec[0]), spec[1])


def load_borrowed(
    folder: Path, spec: dict[str, Any] | None = None, index: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The borrowed components of `folder` (name -> loaded object), {} when it borrows none.

    `spec` defaults to the folder's own `sdviz.json` entry and `index` (component ->
    [library, class]) to its `model_index.json`; the training recipe passes the ones it will
    write, to encode with exactly the parts the shipped folder will load.
    """
    import transformers

    folder = Path(folder)
    spec = borrowed_spec(folder) if spec is None else spec
    if not spec:
        return {}
    source = (folder / spec["folder"]).resolve()
    if not (source / "model_index.json").is_file():
        raise OSError(
            f"{folder} borrows its {', '.join(spec['components'])} from {source}, which is not "
            "a pipeline folder (no model_index.json). Keep the two folders side by side as "
            "sdviz ships them, or fix 'folder' in sdviz.json."
        )
    if index is None:
        index = json.loads((folder / "model_index.json").read_text())
    loaded: dict[str, Any] = {}
    aliases = {k: v for k, v in spec["components"].items() if isinstance(v, str)}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the CLIP checkpoint's vision weights: unused
    try:
        for name, part in spec["components"].items():
            if name in aliases:
                continue
            cls = _class(index, name, folder)
            loaded[name] = cls.from_pretrained(source / part["subfolder"], **part.get("config", {}))
    finally:
        transformers.logging.set_verbosity(verbosity)
    for name, same in aliases.items():
        if same not in loaded:
            raise OSError(
                f"{folder}/sdviz.json: {name!r} is to be the same as {same!r}, which it does not "
                f"borrow (it borrows {sorted(loaded)})."
            )
        loaded[name] = loaded[same]
    for module in loaded.values():
        if hasattr(module, "eval"):
            module.eval()
    return loaded
