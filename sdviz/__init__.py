"""sdviz — The Illustrated Stable Diffusion, runnable.

Load a real Stable Diffusion pipeline (the embedded mini model, a hub id or a local
folder), trace a generation through every stage — CLIP text encoder, UNet and
scheduler, cross-attention, VAE decoder — and draw figures and widgets from the trace.

    import sdviz
    pipe = sdviz.load()                      # the embedded model, offline, on CPU
    run = sdviz.generate(pipe, "a red circle to the left of a blue square")
    run                                      # lists what was recorded, with meanings

Data flows one way: load (`pipeline`, `schedulers`; `checkpoints` and `weights` check a
model folder before and after loading; `threads` picks torch's CPU threads) -> stages (`text`, `diffusion`,
`attention`, `autoencoder`) -> trace (`tracing`: hooks -> record -> Run; its `keys`
table names every value) -> `probes` (computations outside a generation) -> `figures`
-> `widgets` -> lessons (`course`); the command line (`commands`) sits on top and
nothing below imports it. Names are imported lazily so that `import sdviz` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"


class _NoTorchvisionFallbackNotice(logging.Filter):
    """Drop transformers' notice that CLIPImageProcessor falls back to its PIL version.

    Diffusers' pipelines name a CLIPImageProcessor (the safety checker's input), so
    every load printed this notice when torchvision is not installed. sdviz never
    preprocesses images with it, and the fallback is exactly what it needs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNotice())

# public name -> module that defines it
_API = {
    "load": "sdviz.pipeline",
    "trace": "sdviz.tracing",
    "generate": "sdviz.tracing",
    "Trace": "sdviz.tracing",
    "Run": "sdviz.tracing",
    "TraceBudgetError": "sdviz.tracing",
    "tokenize": "sdviz.text",
    "embed": "sdviz.text",
    "add_noise": "sdviz.diffusion",
    "denoise_step": "sdviz.diffusion",
    "encode": "sdviz.autoencoder",
    "decode": "sdviz.autoencoder",
    "set_scheduler": "sdviz.pipeline",
    "recommended": "sdviz.pipeline",
    "scheduler_names": "sdviz.schedulers",
    "tiny_pipeline": "sdviz.builder",
    "sd_architecture": "sdviz.builder",
}

# submodules reachable as attributes without an import (`sdviz.figures.components(...)`)
_MODULES = (
    "architectures",
    "attention",
    "autoencoder",
    "builder",
    "diffusion",
    "figures",
    "pipeline",
    "probes",
    "schedulers",
    "shapes",
    "text",
    "tracing",
    "training",
    "widgets",
)

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'sdviz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_MODULES))
