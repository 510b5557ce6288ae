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
costs nothing and changes nothing. A local folder's files are checked before loading
(`sdviz.checkpoints`) and its networks after: every weight must equal its tensor in the
folder's safetensors, so a library version that names the weights differently (and
would leave them random, with only a warning) is refused with the fix instead of
returning a model that ignores its prompt (`sdviz.weights`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import PICKLE_SUFFIXES, check_folder, index_components
from .schedulers import canonical_name, make_scheduler, scheduler_class
from .weights import check_weights, load_tokenizers

EMBEDDED_MODEL = Path(__file__).parent / "models" / "sdviz-mini"
TINY = "sdviz-tiny"  # reserved name: the random tiny pipeline built in code
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

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


def _looks_like_path(model: str) -> bool:
    """Not shaped like a hub id ("name" or "owner/name"), or named like a weights file."""
    return not _HUB_ID.match(model) or model.endswith((".safetensors", *PICKLE_SUFFIXES))


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


def _load_folder(folder: Path, dtype: torch.dtype):
    """A local save_pretrained folder, its tokenizers and weights checked."""
    components = index_components(folder)
    pipe = _from_pretrained(str(folder), dtype, **load_tokenizers(folder, components))
    check_weights(folder, pipe, components)
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
        check_folder(path)
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
