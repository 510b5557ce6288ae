"""Processor swap: wrap attention layers' processors and watch their projections, undoably.

diffusers' public extension point for attention is the processor (`Attention.
set_processor`, one layer at a time); a wrapped processor still runs the original, so
a layer's output is untouched. PyTorch's fused attention (Vaswani et al. 2017's
softmax(q k^T / sqrt(d)) V in one kernel) never exposes the probabilities, so captures
also watch the layer's query/key projections with forward hooks and recompute them.
`ProcessorSwap` does both for a list of layers and undoes both, restoring each
processor by identity (and saying so when it cannot). Used by sdviz.attention (the
UNet's cross-attention) and sdviz.joint_attention (SD3's and Flux's joint attention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class ProcessorSwap:
    """Wraps `names`' processors with `wrap(name, original)` and stashes `projections`' outputs.

    `stash[(layer, projection)]` holds each watched projection's latest output until the
    capture pops it.
    """

    def __init__(
        self,
        names: Sequence[str],
        wrap: Callable[[str, Any], Any],
        projections: Sequence[str],
    ):
        self.names = list(names)
        self.wrap = wrap
        self.projections = tuple(projections)
        self.stash: dict[tuple[str, str], torch.Tensor] = {}
        self._saved: dict[str, Any] | None = None
        self._handles: list = []

    def install(self, model: torch.nn.Module) -> None:
        """Swap every layer's processor and hook its projections (undone on any error)."""
        self._saved = {n: model.get_submodule(n).processor for n in self.names}
        try:
            for name in self.names:
                attn = model.get_submodule(name)
                attn.set_processor(self.wrap(name, self._saved[name]))
                for proj in self.projections:
                    module = getattr(attn, proj, None)
                    if module is not None:
                        hook = self._stash_hook(name, proj)
                        self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self.restore(model)
            raise

    def _stash_hook(self, name: str, proj: str):
        def hook(module, args, output):
            self.stash[(name, proj)] = output

        return hook

    def restore(self, model: torch.nn.Module) -> None:
        """Remove the hooks and put every original processor back, checked by identity."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.stash.clear()
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        for name, processor in saved.items():
            model.get_submodule(name).set_processor(processor)
        changed = [n for n, p in saved.items() if model.get_submodule(n).processor is not p]
        if changed:
            raise RuntimeError(f"sdviz could not restore attention processors: {changed[:3]}")
