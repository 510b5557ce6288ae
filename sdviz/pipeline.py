"""Load a Stable Diffusion pipeline to trace: embedded model, local folder or hub id.

Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models") is a `diffusers.StableDiffusionPipeline`: CLIP text encoder, UNet,
scheduler and VAE. Its successors keep the three parts with bigger pieces, and load
alike: SDXL (Podell et al. 2023; `StableDiffusionXLPipeline`, two CLIP encoders), SD3
(Esser et al. 2024; `StableDiffusion3Pipeline`, CLIP-L + CLIP-G + T5 into an MMDiT
transformer) and Flux (Black Forest Labs 2024; `FluxPipeline`, CLIP + T5 into a
double/single-stream transformer). The class comes from the folder's `model_index.json`
(`FAMILIES`); any other class is refused with the list. `load` returns one, ready for
`sdviz.trace`:

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
from typing import Any, NoReturn

import torch

from .borrowed import load_borrowed
from .checkpoints import PICKLE_SUFFIXES, check_folder, index_components
from .schedulers import canonical_name, make_scheduler, scheduler_class
from .weights import check_weights, load_tokenizers

EMBEDDED_MODEL = Path(__file__).parent / "models" / "sdviz-mini"
# the embedded rectified-flow twin (SD3's transformer on sdviz-mini's VAE and CLIP)
EMBEDDED_FLOW_MODEL = Path(__file__).parent / "models" / "sdviz-mini-flow"
EMBEDDED_NAMES = {"sdviz-mini": EMBEDDED_MODEL, "sdviz-mini-flow": EMBEDDED_FLOW_MODEL}
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


# The pipeline classes sdviz loads (model_index.json's `_class_name`) -> their family
FAMILIES = {
    "StableDiffusionPipeline": "stable-diffusion",
    "StableDiffusionXLPipeline": "stable-diffusion-xl",
    "StableDiffusion3Pipeline": "stable-diffusion-3",
    "FluxPipeline": "flux",
}
FAMILY_NAMES = {  # family -> what a student knows it as
    "stable-diffusion": "SD 1.x / 2.x",
    "stable-diffusion-xl": "SDXL",
    "stable-diffusion-3": "SD3 / SD3.5",
    "flux": "Flux",
}
# reserved names: the random tiny pipelines built in code, by family
TINY_FAMILIES = {
    TINY: "stable-diffusion",
    "sdviz-tiny-sdxl": "stable-diffusion-xl",
    "sdviz-tiny-sd3": "stable-diffusion-3",
    "sdviz-tiny-flux": "flux",
}


def family(pipe: Any) -> str:
    """The family of a loaded pipeline ('stable-diffusion', 'stable-diffusion-xl',
    'stable-diffusion-3', 'flux'), from its class; a teaching error for any other."""
    return FAMILIES[_supported(type(pipe).__name__, f"a {type(pipe).__name__}")]


def _supported(class_name: Any, what: str) -> str:
    if class_name in FAMILIES:
        return class_name
    listed = "; ".join(f"{FAMILY_NAMES[f]}: {c}" for c, f in FAMILIES.items())
    raise ValueError(
        f"sdviz cannot load {what}: its pipeline class is {class_name!r}, and sdviz traces "
        f"the Stable Diffusion families only ({listed}). Their three parts (text encoders, "
        "a UNet or transformer denoising latents under a scheduler, a VAE) are what sdviz "
        "records; pass a folder or hub id of one of these classes."
    )


def pipeline_class(class_name: Any, what: str = "this model"):
    """The diffusers pipeline class named `class_name` (model_index.json's `_class_name`),
    if sdviz supports its family; else a ValueError listing the supported ones."""
    import diffusers

    return getattr(diffusers, _supported(class_name, what))


def denoiser(pipe: Any) -> Any:
    """The network that denoises: `pipe.unet` (SD 1.x/2.x, SDXL) or `pipe.transformer`."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


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
    # SD3 without T5: how many (zero) T5 token positions to append to CLIP's; sdviz-mini-flow
    # was trained with none (0), the pipeline's default 256 makes it slower and worse
    max_sequence_length: int | None = None
    source: str = "Stable Diffusion's defaults (the model folder recommends nothing)"

    def call_arguments(self) -> dict[str, Any]:
        """Pipeline-call arguments besides steps and guidance that the model needs."""
        if self.max_sequence_length is None:
            return {}
        return {"max_sequence_length": self.max_sequence_length}


def recommended(model: Any = None) -> Recommended:
    """The settings `model` recommends: a pipeline, a folder, a hub id, or None (embedded).

    Read from the model folder's `sdviz.json` (so a copy of sdviz-mini recommends what
    the original does); when there is none, Stable Diffusion's 7.5 and 25 steps for SD
    1.x/2.x, and the pipeline class's own defaults for SDXL, SD3 and Flux (Flux-dev's
    guidance 3.5 is an input of a distilled model, not SD's classifier-free 7.5).
    """
    class_name = None
    if model is None:
        folder: Any = EMBEDDED_MODEL
    elif isinstance(model, str | os.PathLike):
        folder = _embedded(model)
    else:  # a pipeline: diffusers keeps the folder it was loaded from
        class_name = type(model).__name__
        folder = getattr(model, "config", {}).get("_name_or_path") or getattr(
            model, "name_or_path", None
        )
    index = Path(folder) / "model_index.json" if folder else None
    if class_name is None and index is not None and index.is_file():
        try:
            class_name = json.loads(index.read_text()).get("_class_name")
        except (ValueError, AttributeError):
            class_name = None  # sdviz.load explains a broken index
    base = _family_defaults(class_name)
    path = Path(folder) / RECOMMENDED_FILE if folder else None
    if path is None or not path.is_file():
        return base
    try:
        data = json.loads(path.read_text())
        return Recommended(
            guidance_scale=float(data.get("guidance_scale", base.guidance_scale)),
            num_inference_steps=int(data.get("num_inference_steps", base.num_inference_steps)),
            closed_vocabulary=bool(data.get("closed_vocabulary", False)),
            max_sequence_length=(
                None
                if data.get("max_sequence_length") is None
                else int(data["max_sequence_length"])
            ),
            source=str(path),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a valid sdviz settings file ({e}); it should hold JSON such as "
            '{"guidance_scale": 3.0, "num_inference_steps": 25}. Fix or delete it.'
        ) from None


def pipeline_default(class_name: str, argument: str) -> Any:
    """A default of a diffusers pipeline class's `__call__` (``num_inference_steps``,
    ``guidance_scale``, T5's ``max_sequence_length``...); None when it has no such one."""
    import inspect

    import diffusers

    cls = getattr(diffusers, class_name)
    parameter = inspect.signature(cls.__call__).parameters.get(argument)
    return None if parameter is None else parameter.default


def _family_defaults(class_name: Any) -> Recommended:
    if class_name not in FAMILIES or class_name == "StableDiffusionPipeline":
        return Recommended()
    return Recommended(
        guidance_scale=float(pipeline_default(class_name, "guidance_scale")),
        num_inference_steps=int(pipeline_default(class_name, "num_inference_steps")),
        source=f"{class_name}'s defaults (the model folder recommends nothing)",
    )


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


# what each class is loaded without: SD's safety checker, SDXL's invisible watermark
# (which would change the pixels the trace records)
_WITHOUT = {
    "StableDiffusionPipeline": dict(safety_checker=None, requires_safety_checker=False),
    "StableDiffusionXLPipeline": dict(add_watermarker=False),
}


def _from_pretrained(source: str, dtype: torch.dtype, cls: Any, **components):
    return cls.from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        **{**_WITHOUT.get(cls.__name__, {}), **components},
    )


def _absent_components(index: Path) -> dict[str, None]:
    """Components model_index.json lists as `[null, null]` (saved as None, e.g. SD3 without
    its T5 encoder): passed as None, since diffusers' from_pretrained would ask for them."""
    entries = json.loads(index.read_text())
    return {
        name: None
        for name, spec in entries.items()
        if not name.startswith("_") and isinstance(spec, list) and not any(spec)
    }


def _index_class(index: Path, what: str):
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (ValueError, AttributeError):
        raise OSError(
            f"{index} is not valid JSON: it should name the pipeline class and its components. "
            "Re-save the folder with pipe.save_pretrained(folder)."
        ) from None
    return pipeline_class(class_name, what)


def _load_folder(folder: Path, dtype: torch.dtype):
    """A local save_pretrained folder, its tokenizers and weights checked, with the parts
    its sdviz.json borrows from another folder (`sdviz.borrowed`)."""
    cls = _index_class(folder / "model_index.json", f"the folder {folder}")
    components = index_components(folder)
    absent = _absent_components(folder / "model_index.json")
    borrowed = load_borrowed(folder)
    pipe = _from_pretrained(
        str(folder), dtype, cls, **absent, **load_tokenizers(folder, components), **borrowed
    )
    check_weights(folder, pipe, components)
    return pipe


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def _load_hub(model: str, dtype: torch.dtype):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        index = Path(hf_hub_download(model, "model_index.json"))  # the cache when offline
    except (OSError, EntryNotFoundError) as err:
        _not_loadable(model, err)
    cls = _index_class(index, repr(model))  # an unsupported class fails before any download
    try:
        return _from_pretrained(model, dtype, cls, **_absent_components(index))
    except OSError as err:
        _not_loadable(model, err)


def _not_loadable(model: str, err: Exception) -> NoReturn:
    """Raise the teaching OSError for a hub id that could not be loaded."""
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


def _embedded(model: str | os.PathLike) -> str | os.PathLike:
    """The folder of a reserved embedded name ("sdviz-mini", "sdviz-mini-flow") unless a
    folder of that name exists here; any other model unchanged."""
    name = os.fspath(model)
    if name in EMBEDDED_NAMES and not Path(name).exists():
        return EMBEDDED_NAMES[name]
    return model


def _tiny(family_name: str):
    from . import builder

    return {
        "stable-diffusion": builder.tiny_pipeline,
        "stable-diffusion-xl": builder.tiny_sdxl_pipeline,
        "stable-diffusion-3": builder.tiny_sd3_pipeline,
        "flux": builder.tiny_flux_pipeline,
    }[family_name]()


def load(
    model: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    scheduler: str | None = None,
):
    """Load a pipeline of a supported family (`FAMILIES`) ready to trace.

    Args:
        model: None for the embedded mini model (the random tiny pipeline until that
            ships), ``"sdviz-tiny"`` for the tiny pipeline built in code
            (``"sdviz-tiny-sdxl"``, ``"sdviz-tiny-sd3"``, ``"sdviz-tiny-flux"``: the tiny
            ones of the other families), a local folder written by ``save_pretrained``,
            or a hub id such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` (online
            or cached). The pipeline class is the one model_index.json names.
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
    if isinstance(model, str | os.PathLike):
        model = _embedded(model)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be None, a folder path or a hub id string, got {type(model).__name__}."
        )
    path = Path(os.path.expanduser(os.fspath(model)))
    if os.fspath(model) in TINY_FAMILIES and not path.exists():
        pipe = _tiny(TINY_FAMILIES[os.fspath(model)])
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
    if denoiser(pipe).dtype != dt:  # from_pretrained already used dt; .to(dtype=) warns needlessly
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
    current = type(pipe.scheduler).__name__
    if current.startswith("FlowMatch"):
        raise ValueError(
            f"{type(pipe).__name__} samples with {current}: it was trained with flow matching "
            "(a straight path from noise to image, velocity prediction), not on the noise "
            f"schedule (betas, alpha-bar) that {name!r} and the other names in "
            "sdviz.scheduler_names() walk. Keep its own scheduler; change "
            "num_inference_steps instead."
        )
    new = make_scheduler(name, pipe.scheduler.config)
    pipe.scheduler = new
    return new
