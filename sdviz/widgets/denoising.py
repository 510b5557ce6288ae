"""The denoising explorer: one timestep slider over a traced generation.

"The Illustrated Stable Diffusion" (Alammar, 2022) draws the reverse process as a
strip: at each step the UNet looks at the noisy latents x_t, predicts the noise in them
(Ho et al. 2020's epsilon), and the scheduler removes part of it. This widget replays a
recorded `Run` at any step: x_t through the linear latent->RGB preview (noise looks like
noise) and decoded by the VAE (which maps noise into the world it was trained on), the
predicted clean image x̂0 decoded, the noise prediction's latent channels, the cross-attention map of each word, and the step's place
on the noise schedule. Everything comes from the Run (decodes are batched once and
cached); moving the slider never runs the UNet again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..language import Texts, course_language
from ..probes import step_images
from . import _images

if TYPE_CHECKING:
    from ..tracing import Run
from ._common import image_widget, labelled, resolve_words, set_tagged

T = Texts(
    __name__,
    {
        "step": ("step", "步"),
        "xt.decoded": ("x_t, VAE-decoded", "x_t，经 VAE 解码"),
        "xt.preview": ("x_t, linear preview", "x_t，线性预览"),
        "x0.decoded": ("x̂0: predicted clean image, VAE-decoded", "x̂0：预测的干净图像，经 VAE 解码"),
        "x0.preview": ("x̂0: predicted clean image, linear preview", "x̂0：预测的干净图像，线性预览"),
        "noise": ("predicted noise (latent channels)", "预测噪声（潜在通道）"),
        "per_word": ("cross-attention per word", "每个词的交叉注意力"),
        "state": (
            "step {step} (of 0…{last}) · t = {t} · ᾱ_t = {abar:.3f} "
            "(signal {signal:.2f}, noise {noise:.2f})",
            "第 {step} 步（共 0…{last}）· t = {t} · ᾱ_t = {abar:.3f}"
            "（信号 {signal:.2f}，噪声 {noise:.2f}）",
        ),
    },
)


class DenoisingExplorer(W.VBox):
    """x_t, x̂0, noise prediction, per-word attention and the schedule at one step.

    `run`: a traced generation (`sdviz.generate` or `sdviz.trace`); `pipe`: the pipeline
    whose VAE decodes the latents (None: the Run's cheap linear preview); `words`: which
    of the prompt's words get an attention map (default: all). `size`: image width in px.

    Controls: `.slider` (the step, counted from 0 like `run[...][step]`; step 0 starts
    from the noise) and `.play`, linked in the browser.
    CSS hooks: sdviz-denoise (the whole widget), sdviz-denoise-slider, sdviz-denoise-play,
    sdviz-denoise-preview (x_t's linear preview, when the run has one),
    sdviz-denoise-image (x_t), sdviz-denoise-x0, sdviz-denoise-noise,
    sdviz-denoise-attention (one per word), sdviz-denoise-schedule, sdviz-denoise-state
    (caption); each image also carries `sdviz-state-<step>` naming the step it shows.
    `lang`: the language of the controls, captions and the schedule figure ("en", "zh";
    default `sdviz.language.course_language`).
    """

    def __init__(
        self,
        run: Run,
        pipe: Any = None,
        *,
        words: list[str] | None = None,
        size: int = 160,
        interval_ms: int = 400,
        lang: str | None = None,
    ) -> None:
        self.lang = course_language(lang)
        self.run = run
        self.n_steps = int(run["denoiser.noise_pred"].shape[0])
        self.words = resolve_words(run, words) if "attention.maps" in run else []
        self.size = size
        # decoded once, batched (sdviz.probes.step_images); the slider only indexes into these
        images = step_images(run, pipe, range(self.n_steps))
        self._xt, self._x0 = images.latents, images.pred_original_sample  # (S, 3, H, W) each
        self._preview = images.preview if images.decoded else None  # (S, 3, h, w)
        self._decoded = images.decoded
        self._schedule: _images.MarkedFigure | None = None

        self.slider = W.IntSlider(
            value=0,
            min=0,
            max=self.n_steps - 1,
            description=T("step", self.lang),
            continuous_update=True,
            layout=W.Layout(width="360px"),
        )
        self.slider.add_class("sdviz-denoise-slider")
        self.play = W.Play(value=0, min=0, max=self.n_steps - 1, interval=interval_ms)
        self.play.add_class("sdviz-denoise-play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.state = W.HTML()
        self.state.add_class("sdviz-denoise-state")

        super().__init__(self._pictures())
        self.add_class("sdviz-denoise")

        self.slider.observe(self._on_step, names="value")
        self.show(0)

    def _pictures(self) -> list[W.Widget]:
        """The image widgets (empty until `show`), laid out under the controls."""
        self.preview_image = image_widget("sdviz-denoise-preview")
        self.xt_image = image_widget("sdviz-denoise-image", "sdviz-denoise-xt")
        self.x0_image = image_widget("sdviz-denoise-x0")
        self.noise_image = image_widget("sdviz-denoise-noise")
        self.attention_images = [image_widget("sdviz-denoise-attention") for _ in self.words]
        self.schedule_image = image_widget("sdviz-denoise-schedule")
        lang, how = self.lang, "decoded" if self._decoded else "preview"
        panels = [
            labelled(T(f"xt.{how}", lang), self.xt_image),
            labelled(T(f"x0.{how}", lang), self.x0_image),
            labelled(T("noise", lang), self.noise_image),
        ]
        if self._preview is not None:
            panels.insert(0, labelled(T("xt.preview", lang), self.preview_image))
        pictures = W.HBox(panels)
        attention = W.HBox(
            [
                labelled(w, img)
                for (w, _), img in zip(self.words, self.attention_images, strict=True)
            ]
        )
        parts = [W.HBox([self.play, self.slider, self.state]), pictures]
        if self.words:
            parts.append(labelled(T("per_word", lang), attention))
        return [*parts, self.schedule_image]

    def _on_step(self, change: dict) -> None:
        self.show(int(change["new"]))

    def _schedule_png(self, step: int) -> bytes:
        """`sdviz.figures.noise_schedule(run)`, rendered once, with a marker at step's t."""
        if self._schedule is None:
            from ..figures import noise_schedule

            fig = noise_schedule(self.run, lang=self.lang)
            over_t = [ax for ax in fig.axes if ax.get_xlabel()]  # the axes over t, not legends
            self._schedule = _images.MarkedFigure(fig, over_t)
        return self._schedule.png(float(self.run["scheduler.step_timestep"][step]))

    def show(self, step: int) -> None:
        """Redraw every panel for `step` (what the slider calls)."""
        if not 0 <= step < self.n_steps:
            raise ValueError(f"step must be in [0, {self.n_steps - 1}], got {step}.")
        run, tag = self.run, str(step)
        t = int(run["scheduler.step_timestep"][step])
        abar = float(run["scheduler.step_alpha_bar"][step])
        self.state.value = T(
            "state",
            self.lang,
            step=step,
            last=self.n_steps - 1,
            t=t,
            abar=abar,
            signal=abar**0.5,
            noise=(1 - abar) ** 0.5,
        )
        if self._preview is not None:
            preview = _images.image_png(self._preview[step], self.size)
            set_tagged(self.preview_image, tag, value=preview)
        set_tagged(self.xt_image, tag, value=_images.image_png(self._xt[step], self.size))
        set_tagged(self.x0_image, tag, value=_images.image_png(self._x0[step], self.size))
        noise = run["denoiser.noise_pred"][step]  # (c, h, w)
        set_tagged(self.noise_image, tag, value=_images.channels_png(noise, self.size // 2))
        if self.words:
            maps = run["attention.maps"][step]  # (L, h, w)
            top = float(maps[[i for _, i in self.words]].max())  # shared scale across words
            for (_, i), img in zip(self.words, self.attention_images, strict=True):
                set_tagged(img, tag, value=_images.heat_png(maps[i], self.size // 2, vmax=top))
        set_tagged(self.schedule_image, tag, value=self._schedule_png(step))
