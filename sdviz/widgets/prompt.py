"""The prompt explorer: type a prompt, see its tokens and ids live, generate an image.

The first stage of Stable Diffusion is the CLIP tokenizer: the prompt becomes a fixed
number of token ids (77 for SD: BOS, the words' sub-word pieces, EOS, then padding),
and anything past the limit is cut off ("The Illustrated Stable Diffusion", the text
encoder section; Radford et al. 2021 for CLIP). This widget shows that list while you
type and generates with `sdviz.generate` when you press the button.
"""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as W

from ..language import Texts, course_language
from . import _images
from ._common import image_widget, set_tagged

T = Texts(
    __name__,
    {
        "count": (
            "<b>{n} tokens</b> (with start and end markers) of {total}:",
            "<b>{n} 个标记</b>（含起始标记和结束标记），共 {total} 个：",
        ),
        "padding": ("+ {k} × padding {pad} (id {id})", "+ {k} × 填充 {pad}（ID {id}）"),
        "cut": ("cut off (past the limit): {cut}", "被截断（超出长度上限）：{cut}"),
        "unknown": ("unknown words: {notice}", "模型不认识的词：{notice}"),
        "prompt": ("prompt", "提示词"),
        "generate": ("Generate", "生成"),
        "generating": ("Generating…", "生成中…"),
        "status": (
            "“{prompt}”: {steps} steps, seed {seed}, guidance {g:g}, {secs:.1f} s",
            "“{prompt}”：{steps} 步，随机种子 {seed}，引导系数 {g:g}，{secs:.1f} s",
        ),
    },
)

_CHIP = (
    '<span class="sdviz-token" style="display:inline-block;margin:2px;padding:2px 5px;'
    'border-radius:4px;background:{bg};font-family:monospace">{tok}<sub>{id}</sub></span>'
)


_NOTICE = '<div class="{cls}" style="color:#b2182b">{text}</div>'


def tokens_html(
    tokenized: dict[str, Any], vocabulary_notice: str | None = None, lang: str | None = None
) -> str:
    """HTML chips for a `sdviz.tokenize` result: real tokens with ids, padding summarised,
    then what was cut off and `vocabulary_notice` (`sdviz.tracing.vocabulary_notice`),
    captions in `lang` (default `sdviz.language.course_language`)."""
    lang = course_language(lang)
    tokens, ids = tokenized["tokens"], [int(i) for i in tokenized["input_ids"]]
    n = int(tokenized["n_tokens"])
    chips = [
        _CHIP.format(bg="#fde0c5" if i in (0, n - 1) else "#d7e8f5", tok=html.escape(t), id=ids[i])
        for i, t in enumerate(tokens[:n])
    ]
    parts = [f"<div>{T('count', lang, n=n, total=len(ids))}</div>"]
    parts.append("<div>" + "".join(chips) + "</div>")
    if len(ids) > n:
        pad = html.escape(tokens[n])
        parts.append(f"<div>{T('padding', lang, k=len(ids) - n, pad=pad, id=ids[n])}</div>")
    if tokenized["truncated"]:
        cut = html.escape(" ".join(tokenized["truncated"]))
        parts.append(_NOTICE.format(cls="sdviz-prompt-cut", text=T("cut", lang, cut=cut)))
    if vocabulary_notice:
        text = html.escape(T("unknown", lang, notice=vocabulary_notice))
        parts.append(_NOTICE.format(cls="sdviz-prompt-vocabulary", text=text))
    return "\n".join(parts)


class PromptExplorer(W.VBox):
    """A text box with the live token list and a Generate button.

    `pipe`: the pipeline; `prompt`: the starting text; `steps`, `seed`,
    `guidance_scale`: passed to `sdviz.generate`. After a generation `.run` holds its
    Run (and `.runs` all of them), ready for the other explorers.

    CSS hooks: sdviz-prompt (whole widget), sdviz-prompt-text (text box),
    sdviz-prompt-tokens (token list), sdviz-prompt-generate (button),
    sdviz-prompt-image (generated image, with `sdviz-state-<n>` after the n-th
    generation), sdviz-prompt-status (messages and errors). `lang`: the language of the
    controls and messages ("en", "zh"; default `sdviz.language.course_language`); prompts
    stay English, the only language the models know.
    """

    def __init__(
        self,
        pipe: Any,
        prompt: str = "a red circle",
        *,
        steps: int = 20,
        seed: int = 0,
        guidance_scale: float | None = None,
        size: int = 192,
        lang: str | None = None,
    ) -> None:
        self.lang = course_language(lang)
        self.pipe = pipe
        self.steps, self.seed, self.size = steps, seed, size
        self.guidance_scale = guidance_scale
        self.runs: list[Any] = []

        self.text = W.Text(
            value=prompt,
            description=T("prompt", self.lang),
            continuous_update=True,
            layout=W.Layout(width="480px"),
        )
        self.text.add_class("sdviz-prompt-text")
        self.tokens = W.HTML()
        self.tokens.add_class("sdviz-prompt-tokens")
        self.button = W.Button(
            description=T("generate", self.lang), button_style="primary", icon="paint-brush"
        )
        self.button.add_class("sdviz-prompt-generate")
        self.image = image_widget("sdviz-prompt-image")
        self.status = W.HTML()
        self.status.add_class("sdviz-prompt-status")
        super().__init__([W.HBox([self.text, self.button]), self.tokens, self.image, self.status])
        self.add_class("sdviz-prompt")

        self.text.observe(self._on_text, names="value")
        self.button.on_click(self._on_click)
        self.show_tokens(prompt)

    @property
    def run(self) -> Any:
        """The last generation's Run (None before the first)."""
        return self.runs[-1] if self.runs else None

    def _on_text(self, change: dict) -> None:
        self.show_tokens(change["new"])

    def _on_click(self, _button: W.Button) -> None:
        self.generate()

    def show_tokens(self, prompt: str) -> None:
        """Tokenize `prompt` (cheap: no model runs) and show the list, with what was cut
        off and the words a closed-vocabulary model never learned."""
        from ..text import tokenize
        from ..tracing import vocabulary_notice

        try:
            tokenized = tokenize(self.pipe, prompt)
            notice = vocabulary_notice(self.pipe, prompt, self.lang)
            self.tokens.value = tokens_html(tokenized, notice, self.lang)
        except (ValueError, TypeError) as err:  # e.g. an empty prompt: say why
            self.tokens.value = _NOTICE.format(cls="sdviz-prompt-error", text=html.escape(str(err)))

    def generate(self) -> Any:
        """Generate from the text box's prompt, show the image, return the Run."""
        from ..tracing import generate

        prompt = self.text.value
        self.button.disabled, self.button.description = True, T("generating", self.lang)
        try:
            start = time.perf_counter()
            options = {} if self.guidance_scale is None else {"guidance_scale": self.guidance_scale}
            run = generate(
                self.pipe, prompt, steps=self.steps, seed=self.seed, lang=self.lang, **options
            )
        except (ValueError, TypeError, RuntimeError) as err:
            self.status.value = f'<span style="color:#b2182b">{html.escape(str(err))}</span>'
            return None
        finally:
            self.button.disabled, self.button.description = False, T("generate", self.lang)
        self.runs.append(run)
        png = _images.image_png(run["vae.image"], self.size)
        set_tagged(self.image, str(len(self.runs)), value=png)
        self.status.value = T(
            "status",
            self.lang,
            prompt=html.escape(prompt),
            steps=self.steps,
            seed=self.seed,
            g=run["pipeline.guidance_scale"],
            secs=time.perf_counter() - start,
        )
        return run
