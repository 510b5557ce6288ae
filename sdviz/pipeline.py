"""Load a Stable Diffusion pipeline to trace: embedded model, local folder or hub id.

Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models") is a `diffusers.StableDiffusionPipeline`: CLIP text encoder, UNet,
scheduler and VAE. `load` returns one, ready for `sdviz.trace`:

    pipe = sdviz.load()                                   # embedded model, offline
    pipe = sdviz.load("path/to/folder")                   # a save_pretrained folder
    pipe = sdviz.load("stable-diffusion-v1-5/stable-diffusion-v1-5", scheduler="euler")

Weights are read from safetensors only (never pickle) and no remote code runs. SD 1.x
and 2.x load alike; 2.x "v-prediction" models carry `prediction_type` in their
scheduler config. Everything is checked before anything is loaded, so a bad argument
costs nothing and changes nothing. A local folder's networks are checked after loading:
every weight must equal its tensor in the folder's safetensors, so a library version
that names the weights differently (and would leave them random, with only a warning)
is refused with the fix instead of returning a model that ignores its prompt.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .schedulers import canonical_name, make_scheduler, scheduler_class

EMBEDDED_MODEL = Path(__file__).parent / "models" / "sdviz-mini"
TINY = "sdviz-tiny"  # reserved name: the random tiny pipeline built in code
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# The lowest versions that load the embedded model with its own weights (the lower bounds
# in pyproject.toml, which a test keeps equal): transformers 5.0-5.5 leave its text
# encoder random, diffusers 0.35.1 and older do not import under transformers 5.
MIN_VERSIONS = {"transformers": "5.6.0", "diffusers": "0.35.2"}

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


# Settings a model folder recommends live in `sdviz.json` beside `model_index.json`
# (diffusers ignores the file); models that say nothing get Stable Diffusion's usual ones.
RECOMMENDED_FILE = "sdviz.json"


@dataclass(frozen=True)
class Recommended:
    """What a model is meant to be sampled with, and where that was read."""

    guidance_scale: float = 7.5  # Stable Diffusion's usual classifier-free guidance
    num_inference_steps: int = 25
    # the tokenizer holds whole words only for the model's training captions: any other
    # word is spelled in letters the model never learned (sdviz-mini knows ShapesWorld)
    closed_vocabulary: bool = False
    source: str = "Stable Diffusion's defaults (the model folder recommends nothing)"


def recommended(model: Any = None) -> Recommended:
    """The settings `model` recommends: a pipeline, a folder, a hub id, or None (embedded).

    Read from the model folder's `sdviz.json` (so a copy of sdviz-mini recommends what
    the original does); Stable Diffusion's 7.5 and 25 steps when there is none.
    """
    if model is None:
        folder: Any = EMBEDDED_MODEL
    elif isinstance(model, str | os.PathLike):
        folder = model
    else:  # a pipeline: diffusers keeps the folder it was loaded from
        folder = getattr(model, "config", {}).get("_name_or_path") or getattr(
            model, "name_or_path", None
        )
    path = Path(folder) / RECOMMENDED_FILE if folder else None
    if path is None or not path.is_file():
        return Recommended()
    try:
        data = json.loads(path.read_text())
        return Recommended(
            guidance_scale=float(data.get("guidance_scale", Recommended.guidance_scale)),
            num_inference_steps=int(
                data.get("num_inference_steps", Recommended.num_inference_steps)
            ),
            closed_vocabulary=bool(data.get("closed_vocabulary", False)),
            source=str(path),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a valid sdviz settings file ({e}); it should hold JSON such as "
            '{"guidance_scale": 3.0, "num_inference_steps": 25}. Fix or delete it.'
        ) from None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, else mps, else cpu; otherwise check the request."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"Unknown device {device!r}. Use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available (torch {torch.__version__} "
            "sees no GPU). Use device='auto' or 'cpu', or install a CUDA build of torch."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device={device!r} but Apple MPS is not available here.")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Unsupported device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'.")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None):
    """``"auto"`` -> float16 on CUDA, float32 elsewhere; accepts 'fp32', 'fp16', 'bf16'."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported: use float32, float16 or bfloat16.")
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key == "auto":
            cuda = device is not None and torch.device(device).type == "cuda"
            return torch.float16 if cuda else torch.float32
        if key in _DTYPES:
            return _DTYPES[key]
    raise ValueError(
        f"Unknown dtype {dtype!r}. Use 'auto' (fp16 on CUDA, fp32 elsewhere), "
        f"one of {sorted(_DTYPES)}, or a torch.dtype."
    )


def check_safetensors(path: str | os.PathLike) -> None:
    """Check a .safetensors file's header against its size (cheap: reads the header only).

    Catches truncated downloads and corrupt headers, naming the file; a flipped bit
    inside the tensor data cannot be detected without a checksum.
    """
    path = Path(path)
    size = path.stat().st_size
    hint = "Re-download or re-save it (pipe.save_pretrained(folder, safe_serialization=True))."
    with open(path, "rb") as f:
        if size < 8:
            raise OSError(f"Truncated weights file {path} ({size} bytes). {hint}")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise OSError(
                f"Corrupt or truncated weights file {path}: its header claims {n} bytes "
                f"but the file has {size}. {hint}"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise OSError(
                f"Corrupt weights file {path}: unreadable safetensors header. {hint}"
            ) from None
    data = size - 8 - n
    need = max(ends, default=0)
    if need > data:
        raise OSError(
            f"Truncated weights file {path}: tensors need {need} bytes of data, "
            f"the file holds {data}. {hint}"
        )
    if need != data:
        raise OSError(f"Corrupt weights file {path}: {data - need} unexpected bytes. {hint}")


def _check_folder(folder: Path) -> None:
    """A diffusers pipeline folder with safetensors weights, each file intact."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise OSError(
            f"{folder} is not a diffusers pipeline folder: it has no model_index.json. "
            "Save one with pipe.save_pretrained(folder), or pass a hub id."
        )
    components = [k for k, v in json.loads(index.read_text()).items() if isinstance(v, list)]
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            continue
        files = [p for p in sub.iterdir() if p.is_file()]
        weights = [p for p in files if p.suffix == ".safetensors"]
        pickles = [p for p in files if p.suffix in _PICKLE_SUFFIXES]
        if pickles and not weights:
            raise OSError(
                f"{sub} holds only pickle weights ({pickles[0].name}); sdviz loads safetensors "
                "only, since unpickling can run arbitrary code. Convert them: load in diffusers "
                "and call save_pretrained(folder, safe_serialization=True)."
            )
        for p in weights:
            check_safetensors(p)


def _looks_like_path(model: str) -> bool:
    """Not shaped like a hub id ("name" or "owner/name"), or named like a weights file."""
    return not _HUB_ID.match(model) or model.endswith((".safetensors", *_PICKLE_SUFFIXES))


def _from_pretrained(source: str, dtype: torch.dtype, **components):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        safety_checker=None,
        requires_safety_checker=False,
        trust_remote_code=False,
        **components,
    )


class WeightsNotLoadedError(OSError):
    """A network of a local folder came out of loading without the folder's weights."""


def _components(folder: Path) -> dict[str, tuple[str, str]]:
    """model_index.json's components: name -> (library, class name), for present folders."""
    index = json.loads((folder / "model_index.json").read_text())
    return {
        name: (spec[0], spec[1])
        for name, spec in index.items()
        if isinstance(spec, list) and len(spec) == 2 and spec[0] and (folder / name).is_dir()
    }


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


def _load_tokenizers(folder: Path, components: dict[str, tuple[str, str]]) -> dict[str, Any]:
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
    tied: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        ptr = tensor.data_ptr()
        tied.setdefault((ptr, tuple(tensor.shape)) if ptr else (name,), []).append(name)
    prefixed: dict[str, list[str]] = {}  # "b.c" -> ["a.b.c"]: file keys by their suffixes
    for key in where:
        parts = key.split(".")
        for i in range(1, len(parts)):
            prefixed.setdefault(".".join(parts[i:]), []).append(key)

    def equal(name: str, key: str) -> bool:
        tensor = state[name]
        if tensor.is_meta or list(where[key].get_slice(key).get_shape()) != list(tensor.shape):
            return False
        stored = where[key].get_tensor(key).to(dtype=tensor.dtype, device=tensor.device)
        return torch.equal(tensor, stored)

    used: set[str] = set()
    unmatched: list[tuple[str, bool]] = []  # (name, whether a file key was a prefixed form)
    for names in tied.values():
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
    buffers = {n for n, _ in module.named_buffers()} - set(state)
    skip = _patterns(module, "_keys_to_ignore_on_load_unexpected")
    unused = [
        key
        for key in where
        if key not in used
        and not any(f".{b}".endswith(f".{key}") or f".{key}".endswith(f".{b}") for b in buffers)
        and not any(p.search(key) for p in skip)
    ]
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
    return missing, unused


def _suffixes(name: str) -> list[str]:
    """The name without each of its leading parts: "a.b.c" -> ["b.c", "c"]."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(1, len(parts))]


def _examples(names: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _check_weights(folder: Path, pipe: Any, components: dict[str, tuple[str, str]]) -> None:
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


def _load_folder(folder: Path, dtype: torch.dtype):
    """A local save_pretrained folder, its tokenizers and weights checked."""
    components = _components(folder)
    pipe = _from_pretrained(str(folder), dtype, **_load_tokenizers(folder, components))
    _check_weights(folder, pipe, components)
    return pipe


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def _load_hub(model: str, dtype: torch.dtype):
    try:
        return _from_pretrained(model, dtype)
    except OSError as err:
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache"
            if _offline()
            else "it is not in the local cache and the Hugging Face Hub could not serve it"
        )
        raise OSError(
            f"Could not load {model!r}: {why}. Options: sdviz.load() uses the embedded model "
            "(no download); sdviz.load('path/to/folder') loads a local save_pretrained folder; "
            "to download, go online: unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE), check the "
            "network, and check the id at https://huggingface.co/" + model + " - SD 1.5 "
            "(stable-diffusion-v1-5/stable-diffusion-v1-5) needs no login; gated models need "
            "`hf auth login`. (No local folder of that name exists either.)"
        ) from err


def load(
    model: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    scheduler: str | None = None,
):
    """Load a `StableDiffusionPipeline` ready to trace.

    Args:
        model: None for the embedded mini model (the random tiny pipeline until that
            ships), ``"sdviz-tiny"`` for the tiny pipeline built in code, a local folder
            written by ``save_pretrained``, or a hub id such as
            ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` (online or cached).
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"mps"``...
        dtype: ``"auto"`` (fp16 on CUDA, fp32 elsewhere), ``"fp32"``, ``"fp16"``, ``"bf16"``.
        scheduler: a name from `sdviz.schedulers.scheduler_names()` (``"ddim"``,
            ``"euler"``, ``"dpm++"``...), built from the model's own scheduler config.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if scheduler is not None:
        scheduler_class(scheduler)  # unknown name / missing scipy: fail before loading
    if model is None:
        model = EMBEDDED_MODEL if (EMBEDDED_MODEL / "model_index.json").is_file() else TINY
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be None, a folder path or a hub id string, got {type(model).__name__}."
        )
    path = Path(os.path.expanduser(os.fspath(model)))
    if os.fspath(model) == TINY and not path.exists():
        from .builder import tiny_pipeline

        pipe = tiny_pipeline()
    elif path.is_dir():
        _check_folder(path)
        pipe = _load_folder(path, dt)
    elif path.is_file():
        raise OSError(
            f"{path} is a single file; sdviz.load takes a diffusers pipeline folder "
            "(model_index.json + unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a hub id."
        )
    elif isinstance(model, os.PathLike) or _looks_like_path(str(model)):
        raise FileNotFoundError(
            f"No such model folder: {os.fspath(model)!r} ({path.absolute()}). Pass an existing save_pretrained folder, a hub id "
            "such as 'stable-diffusion-v1-5/stable-diffusion-v1-5', or None for the embedded model."
        )
    else:
        pipe = _load_hub(str(model), dt)
    if pipe.unet.dtype != dt:  # from_pretrained already used dt; .to(dtype=) warns needlessly
        pipe = pipe.to(dtype=dt)
    if pipe.device != dev:
        pipe = pipe.to(device=dev)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    return pipe


def set_scheduler(pipe: Any, name: str):
    """Swap ``pipe.scheduler`` for the scheduler called `name`, built from its config.

    The new scheduler is built first, so a bad name leaves the pipeline untouched.
    Returns the new scheduler.
    """
    canonical_name(name)
    new = make_scheduler(name, pipe.scheduler.config)
    pipe.scheduler = new
    return new
