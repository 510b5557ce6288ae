"""Check that the installed transformers and diffusers read a model folder as it was saved.

A weight that transformers or diffusers cannot find by name is left newly initialized
(random), with only a warning: sdviz-mini's text encoder, saved by transformers 5.6+
(without CLIP's `text_model.` prefix), loads under transformers 4.x or 5.0-5.5 with
random weights, and the pipeline silently ignores its prompt. So after loading a local
folder, `check_weights` compares every network weight with its tensor in the folder's
safetensors and refuses a pipeline that does not hold them (`WeightsNotLoadedError`),
naming the component, the weights and the fix: usually an upgrade to `MIN_VERSIONS`,
the lowest versions that load the embedded model with its own weights.

Tokenizers are loaded first (`load_tokenizers`): one that this transformers cannot read
(transformers 5 saves `tokenizer.json` without the `vocab.json` and `merges.txt` that
4.x's CLIPTokenizer needs) fails with that reason and the fix, not deep inside
transformers. The folder's files themselves are checked before loading, in
`sdviz.checkpoints`.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The lowest versions that load the embedded model with its own weights (the lower bounds
# in pyproject.toml, which a test keeps equal): transformers 5.0-5.5 leave its text
# encoder random, diffusers 0.35.1 and older do not import under transformers 5.
MIN_VERSIONS = {"transformers": "5.6.0", "diffusers": "0.35.2"}

Equal = Callable[[str, str], bool]  # (model weight name, file key) -> same tensor?


class WeightsNotLoadedError(OSError):
    """A network of a local folder came out of loading without the folder's weights."""


def _version(library: str) -> str:
    try:
        return importlib.import_module(library).__version__
    except (ImportError, AttributeError):
        return "(not installed)"


def _older(version: str, than: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False


def _upgrade(library: str) -> str:
    return f'pip install -U "{library}>={MIN_VERSIONS[library]}" (what sdviz declares)'


def load_tokenizers(folder: Path, components: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Load the transformers tokenizers first, so that one this version cannot read fails
    with the reason and the fix, not deep inside transformers."""
    loaded = {}
    for name, (library, cls_name) in components.items():
        if library != "transformers" or "Tokenizer" not in cls_name:
            continue
        sub = folder / name
        try:
            cls = getattr(importlib.import_module(library), cls_name)
            loaded[name] = cls.from_pretrained(str(sub))
        except Exception as err:  # 4.x raises TypeError, the tokenizers library Exception
            names = sorted(p.name for p in sub.iterdir() if p.is_file())
            version = _version("transformers")
            if not _older(version, MIN_VERSIONS["transformers"]):
                cause = "Check that the folder is complete, or re-save it: pipe.save_pretrained."
            elif "vocab.json" not in names:
                cause = (
                    "It was saved by transformers 5 (tokenizer.json, no vocab.json or "
                    f"merges.txt, which 4.x's {cls_name} needs), and transformers {version} is "
                    f"older than sdviz supports. Fix: {_upgrade('transformers')}."
                )
            else:
                cause = (
                    f"transformers {version} is older than sdviz supports. "
                    f"Fix: {_upgrade('transformers')}."
                )
            raise OSError(
                f"Could not load the tokenizer {sub} ({cls_name}; it holds "
                f"{', '.join(names) or 'no files'}) with transformers {version}: "
                f"{type(err).__name__}: {err}. {cause}"
            ) from err
    return loaded


def _weight_files(sub: Path) -> list[Path]:
    """The safetensors a component loads: sharded or whole, not variants (model.fp16.*)."""
    return sorted(p for p in sub.glob("*.safetensors") if "." not in p.stem)


def _patterns(module: Any, attr: str) -> list[re.Pattern]:
    return [re.compile(p) for p in getattr(module, attr, None) or ()]


def _suffixes(name: str) -> list[str]:
    """The name without each of its leading parts: "a.b.c" -> ["b.c", "c"]."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(1, len(parts))]


def _tied(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """The state dict's names, grouped by the storage they share (tied weights count once)."""
    tied: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        ptr = tensor.data_ptr()
        tied.setdefault((ptr, tuple(tensor.shape)) if ptr else (name,), []).append(name)
    return list(tied.values())


def _match_names(
    groups: list[list[str]], where: dict[str, Any], equal: Equal
) -> tuple[set[str], list[tuple[str, bool]]]:
    """Match each group of tied weights to file keys by name: (keys used, unmatched).

    An exact name is loaded; else a file key that is the name with a prefix added or
    removed must hold an equal tensor. Unmatched: (the group's first name, whether such
    a prefixed form was in the files).
    """
    prefixed: dict[str, list[str]] = {}  # "b.c" -> ["a.b.c"]: file keys by their suffixes
    for key in where:
        for suffix in _suffixes(key):
            prefixed.setdefault(suffix, []).append(key)
    used: set[str] = set()
    unmatched: list[tuple[str, bool]] = []
    for names in groups:
        exact = [n for n in names if n in where]
        if exact:
            used.update(exact)
            continue
        near = {k for n in names for k in prefixed.get(n, ())}
        near |= {s for n in names for s in _suffixes(n) if s in where}
        found = [k for k in near if equal(names[0], k)]
        if found:
            used.update(found)
        else:
            unmatched.append((names[0], bool(near)))
    return used, unmatched


def _unused(module: torch.nn.Module, keys, state: dict, used: set[str]) -> list[str]:
    """File keys no weight used, less non-persistent buffers and the ignore-list's."""
    buffers = {n for n, _ in module.named_buffers()} - set(state)
    skip = _patterns(module, "_keys_to_ignore_on_load_unexpected")
    return [
        key
        for key in keys
        if key not in used
        and not any(f".{b}".endswith(f".{key}") or f".{key}".endswith(f".{b}") for b in buffers)
        and not any(p.search(key) for p in skip)
    ]


def _match_values(
    module: torch.nn.Module, unmatched: list[tuple[str, bool]], unused: list[str], equal: Equal
) -> list[str]:
    """The unmatched weights equal to no unused file tensor (renamed layers), less the
    ignore-list's; a file tensor that matches one is taken out of `unused`."""
    skip = _patterns(module, "_keys_to_ignore_on_load_missing")
    missing = []
    for name, near in unmatched:
        if any(p.search(name) for p in skip):
            continue
        match = None if near else next((k for k in unused if equal(name, k)), None)
        if match is None:
            missing.append(name)
        else:
            unused.remove(match)
    return missing


def _unloaded(module: torch.nn.Module, files: list[Path]) -> tuple[list[str], list[str]]:
    """(model weights that differ from the folder's, file tensors the model did not use).

    A weight whose exact name is in a file was loaded from it: every library version
    loads exact names, so this costs only the files' key lists. A weight named otherwise
    is compared by value with the file tensors whose name is its name with a prefix
    added or removed (transformers 5.6+ saves a CLIP text encoder without `text_model.`;
    5.0-5.5 then leave it random), else with the unused file tensors of its shape
    (renamed layers). Tied weights count once; the libraries' ignore-lists and
    non-persistent buffers (`position_ids` in old CLIP checkpoints) are honoured.
    """
    from safetensors import safe_open

    handles = [safe_open(str(f), framework="pt") for f in files]
    where = {key: h for h in handles for key in h.keys()}
    state = module.state_dict()

    def equal(name: str, key: str) -> bool:
        tensor = state[name]
        if tensor.is_meta or list(where[key].get_slice(key).get_shape()) != list(tensor.shape):
            return False
        stored = where[key].get_tensor(key).to(dtype=tensor.dtype, device=tensor.device)
        return torch.equal(tensor, stored)

    used, unmatched = _match_names(_tied(state), where, equal)
    unused = _unused(module, where, state, used)
    missing = _match_values(module, unmatched, unused, equal)
    return missing, unused


def _examples(names: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" ... ({len(names)} in all)" if len(names) > n else "")


def check_weights(folder: Path, pipe: Any, components: dict[str, tuple[str, str]]) -> None:
    """Refuse a pipeline whose networks do not hold their folder's weights."""
    for name, (library, cls_name) in components.items():
        module = getattr(pipe, name, None)
        files = _weight_files(folder / name)
        if not isinstance(module, torch.nn.Module) or not files:
            continue
        missing, unused = _unloaded(module, files)
        if not missing and not unused:
            continue
        total = len(module.state_dict())
        config = folder / name / "config.json"
        saved_key = "_diffusers_version" if library == "diffusers" else f"{library}_version"
        saved = json.loads(config.read_text()).get(saved_key) if config.is_file() else None
        version = _version(library)
        if library in MIN_VERSIONS and _older(version, MIN_VERSIONS[library]):
            cause = (
                f"Likely cause: {library} {version} is older than sdviz supports and names "
                f"these weights differently from the {library} {saved or '(unknown)'} that "
                f"saved the folder. Fix: {_upgrade(library)}."
            )
        else:
            cause = (
                f"Likely cause: the folder does not match {cls_name} under {library} {version}: "
                f"{library} {saved or '(unknown version)'} saved it from another class or config, "
                "or its files were edited. Fix: load it with the versions that saved it and "
                "re-save it with pipe.save_pretrained(folder)."
            )
        what = (
            f"{len(missing)} of its {total} weights are not the folder's: {library} {version} "
            "left them newly initialized (random), so its output would be noise (a text "
            f"encoder's would ignore the prompt). Not loaded: {_examples(missing)}. "
            if missing
            else "every weight loaded, but the folder holds more than the model uses. "
        )
        raise WeightsNotLoadedError(
            f"{folder / name} did not load into {cls_name} as saved: {what}"
            + (f"Unused in its safetensors: {_examples(unused)}. " if unused else "")
            + cause
        )
