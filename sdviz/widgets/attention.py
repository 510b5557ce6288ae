"""The attention explorer: where does each word look, in which layer, at which step?

Stable Diffusion conditions the UNet on the prompt through cross-attention: every
latent position (a query) attends over the 77 token embeddings (keys/values), so for
each token there is a map over the image (Rombach et al. 2022, Sec. 3.3; the
"Text conditioning" part of "The Illustrated Stable Diffusion"; DAAM, Tang et al. 2023,
for aggregating these maps). This widget shows one word's map over the generated image
for a chosen layer (or the head- and layer-average) and step, all from a traced Run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ipywidgets as W
import torch

from . import _images

if TYPE_CHECKING:
    from ..tracing import Run
from ._common import image_widget, labelled, resolve_words, set_tagged

AVERAGE = "attention.maps"


class AttentionExplorer(W.VBox):
    """Word, layer and step pickers over a traced Run's cross-attention maps.

    Layers other than the average exist when the run was traced with
    `attention_layers=...` (e.g. `sdviz.generate(pipe, prompt, attention_layers="attn2")`);
    per-head maps are averaged over heads here.

    CSS hooks: sdviz-attention (whole widget), sdviz-attention-word, sdviz-attention-layer
    (dropdowns), sdviz-attention-slider (step), sdviz-attention-image (map over the image),
    sdviz-attention-map (the map alone), sdviz-attention-state (caption); images carry
    `sdviz-state-<word index>-<layer number>-<step>`.
    """

    def __init__(
        self,
        run: Run,
        *,
        word: str | None = None,
        step: int | None = None,
        size: int = 192,
    ) -> None:
        if AVERAGE not in run:
            raise ValueError(
                "This Run has no cross-attention maps: generate with attention='aggregate' "
                "(the default of sdviz.generate and sdviz.trace)."
            )
        self.run, self.size = run, size
        self.n_steps = int(run[AVERAGE].shape[0])
        words = resolve_words(run, None)
        first = resolve_words(run, [word])[0][1] if word is not None else words[0][1]
        layers = [("default average (attention.maps)", AVERAGE)] + [
            (
                f"{k.removeprefix('attention.').replace('.transformer_blocks.0.attn2', '')} ({run[k].shape[-2]}×{run[k].shape[-1]})",
                k,
            )
            for k in run.attention_layers
        ]
        self.word = W.Dropdown(options=words, value=first, description="word")
        self.word.add_class("sdviz-attention-word")
        self.layer = W.Dropdown(options=layers, value=AVERAGE, description="layer")
        self.layer.add_class("sdviz-attention-layer")
        last = self.n_steps - 1
        self.slider = W.IntSlider(
            value=last if step is None else step, min=0, max=last, description="step"
        )
        self.slider.add_class("sdviz-attention-slider")
        self.image = image_widget("sdviz-attention-image")
        self.map = image_widget("sdviz-attention-map")
        self.state = W.HTML()
        self.state.add_class("sdviz-attention-state")
        super().__init__(
            [
                W.HBox([self.word, self.layer]),
                W.HBox([self.slider, self.state]),
                W.HBox([labelled("over the image", self.image), labelled("the map", self.map)]),
            ]
        )
        self.add_class("sdviz-attention")
        for control in (self.word, self.layer, self.slider):
            control.observe(self._on_change, names="value")
        self.show()

    def _on_change(self, _change: dict) -> None:
        self.show()

    def current_map(self) -> torch.Tensor:
        """The (h, w) map for the selected word, layer and step."""
        maps = self.run[self.layer.value][self.slider.value]  # (L, h, w) or (heads, L, h, w)
        if maps.dim() == 4:
            maps = maps.mean(0)
        return maps[self.word.value]

    def show(self) -> None:
        """Redraw for the current word, layer and step."""
        amap = self.current_map()
        keys = [AVERAGE, *self.run.attention_layers]
        tag = f"{self.word.value}-{keys.index(self.layer.value)}-{self.slider.value}"
        image = self.run["vae.image"]
        set_tagged(self.image, tag, value=_images.overlay_png(image, amap, self.size))
        set_tagged(self.map, tag, value=_images.heat_png(amap, self.size))
        label = self.word.label
        h, w = amap.shape
        self.state.value = (
            f"“{label}” · step {self.slider.value + 1} of {self.n_steps} · "
            f"{h}×{w} map · peak {float(amap.max()):.2f} of the attention"
        )
