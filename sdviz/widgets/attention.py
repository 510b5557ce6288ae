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

from ..language import Texts, course_language
from . import _images

if TYPE_CHECKING:
    from ..tracing import Run
from ._common import image_widget, labelled, resolve_words, set_tagged

AVERAGE = "attention.maps"

T = Texts(
    __name__,
    {
        "average": ("default average (attention.maps)", "默认平均（attention.maps）"),
        "word": ("word", "词"),
        "layer": ("layer", "层"),
        "step": ("step", "步"),
        "over_image": ("over the image", "叠加在图像上"),
        "map": ("the map", "注意力图"),
        "state": (
            "“{word}” · step {step} of {n} · {h}×{w} map · peak {peak:.2f} of the attention",
            "“{word}” · 第 {step} 步（共 {n} 步）· {h}×{w} 注意力图 · 峰值占注意力的 {peak:.2f}",
        ),
    },
)


class AttentionExplorer(W.VBox):
    """Word, layer and step pickers over a traced Run's cross-attention maps.

    Layers other than the average exist when the run was traced with
    `attention_layers=...` (e.g. `sdviz.generate(pipe, prompt, attention_layers="attn2")`);
    per-head maps are averaged over heads here.

    CSS hooks: sdviz-attention (whole widget), sdviz-attention-word, sdviz-attention-layer
    (dropdowns), sdviz-attention-slider (step), sdviz-attention-image (map over the image),
    sdviz-attention-map (the map alone), sdviz-attention-state (caption); images carry
    `sdviz-state-<word index>-<layer number>-<step>`. `lang`: the language of the
    controls and captions ("en", "zh"; default `sdviz.language.course_language`).
    """

    def __init__(
        self,
        run: Run,
        *,
        word: str | None = None,
        step: int | None = None,
        size: int = 192,
        lang: str | None = None,
    ) -> None:
        self.lang = lang = course_language(lang)
        if AVERAGE not in run:
            raise ValueError(
                "This Run has no cross-attention maps: generate with attention='aggregate' "
                "(the default of sdviz.generate and sdviz.trace)."
            )
        self.run, self.size = run, size
        self.n_steps = int(run[AVERAGE].shape[0])
        words = resolve_words(run, None)
        first = resolve_words(run, [word])[0][1] if word is not None else words[0][1]
        layers = [(T("average", lang), AVERAGE)] + [
            (
                f"{k.removeprefix('attention.').replace('.transformer_blocks.0.attn2', '')} ({run[k].shape[-2]}×{run[k].shape[-1]})",
                k,
            )
            for k in run.attention_layers
        ]
        self.word = W.Dropdown(options=words, value=first, description=T("word", lang))
        self.word.add_class("sdviz-attention-word")
        self.layer = W.Dropdown(options=layers, value=AVERAGE, description=T("layer", lang))
        self.layer.add_class("sdviz-attention-layer")
        last = self.n_steps - 1
        self.slider = W.IntSlider(
            value=last if step is None else step, min=0, max=last, description=T("step", lang)
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
                W.HBox(
                    [
                        labelled(T("over_image", lang), self.image),
                        labelled(T("map", lang), self.map),
                    ]
                ),
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
        self.state.value = T(
            "state",
            self.lang,
            word=label,
            step=self.slider.value + 1,
            n=self.n_steps,
            h=h,
            w=w,
            peak=float(amap.max()),
        )
