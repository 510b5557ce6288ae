"""Training curves: a loss over training steps, and an accuracy beside it when there is one.

The lessons train small networks live (`sdviz.training.live`): a noise predictor
(lesson 3, loss MSE(ε̂, ε), Ho et al. 2020) and a small CLIP (lesson 6, the contrastive
loss and the share of images whose best caption in the batch is their own, Radford et
al. 2021). This draws what such a run recorded, one value per training step.

    live = sdviz.training.live.train_noise_predictor(pipe, steps=60)
    live_training(live)  # its own labels, in the course's language
    training_curves(live.loss, loss_label="MSE(ε̂, ε)", references={"always ε̂ = 0": 1.0})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..autoencoder import to_numpy
from ..language import Texts, course_language
from .style import WIDE, Canvas, new_figure, style

T = Texts(
    __name__,
    {
        "training_step": ("training step", "训练步"),
        "training_loss": ("training loss", "训练损失"),
        "accuracy": ("accuracy", "准确率"),
        "share": ("share of the batch", "占批次的比例"),
        "unet_loss": ("noise-prediction loss MSE(ε̂, ε)", "噪声预测损失 MSE(ε̂, ε)"),
        "unet_zero": ("a UNet that always answers ε̂ = 0", "始终回答 ε̂ = 0 的 UNet"),
        "unet_title": (
            "Live training of a UNet from random weights",
            "从随机权重现场训练一个 UNet",
        ),
        "clip_loss": ("contrastive loss", "对比损失"),
        "clip_accuracy": ("images whose best caption is their own", "最佳描述正是自己描述的图像"),
        "clip_guess": (
            "a CLIP that guesses: log({batch}) = {level:.2f}",
            "随机猜测的 CLIP：log({batch}) = {level:.2f}",
        ),
        "clip_title": (
            "Live training of a small CLIP from random weights",
            "从随机权重现场训练一个小型 CLIP",
        ),
    },
)

Curves = Sequence[float] | Mapping[str, Sequence[float]]


def _named(curves: Curves, what: str) -> dict[str, Sequence[float]]:
    named = dict(curves) if isinstance(curves, Mapping) else {"": curves}
    if not named or any(len(to_numpy(v).reshape(-1)) == 0 for v in named.values()):
        raise ValueError(f"{what} needs at least one value per curve; got {curves!r}.")
    return named


def _plot(
    ax: Axes, curves: dict[str, Sequence[float]], ylabel: str, title: str | None, lang: str
) -> None:
    for label, values in curves.items():
        y = to_numpy(values).reshape(-1)
        ax.plot(range(1, len(y) + 1), y, "o-" if len(y) <= 20 else "-", label=label or None)
    ax.set(xlabel=T("training_step", lang), ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def training_curves(
    loss: Curves,
    accuracy: Curves | None = None,
    *,
    loss_label: str | None = None,
    accuracy_label: str | None = None,
    references: Mapping[str, float] | None = None,
    title: str | None = None,
    fig: Canvas | None = None,
    lang: str | None = None,
) -> Figure:
    """The loss per training step (several runs: a mapping label -> values, one line each),
    dashed reference levels on it (`references`: label -> value, say what a network that
    learned nothing scores), and the accuracy per step in a second panel (0-100 %).

    The labels default to "training loss" and "accuracy" in `lang` ("en", "zh"; default
    `sdviz.language.course_language`); the caller's labels and title are drawn as given."""
    lang = course_language(lang)
    loss_label = T("training_loss", lang) if loss_label is None else loss_label
    accuracy_label = T("accuracy", lang) if accuracy_label is None else accuracy_label
    losses = _named(loss, "loss")
    accuracies = None if accuracy is None else _named(accuracy, "accuracy")
    panels = 1 if accuracies is None else 2
    with style(lang):
        fig = new_figure(fig, panels * (WIDE + 0.6), 3.2, suptitle=title)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        _plot(axes[0], losses, loss_label, None if panels == 1 else loss_label, lang)
        for i, (label, level) in enumerate((references or {}).items()):
            axes[0].axhline(level, color="gray", linestyle=("--", ":", "-.")[i % 3], label=label)
        if references or len(losses) > 1:
            axes[0].legend()
        if accuracies is not None:
            _plot(axes[1], accuracies, T("share", lang), accuracy_label, lang)
            axes[1].set_ylim(0, 1)
            axes[1].yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
            if len(accuracies) > 1:
                axes[1].legend()
    return fig


def live_training(run: Any, *, fig: Canvas | None = None, lang: str | None = None) -> Figure:
    """A run of `sdviz.training.live` drawn with its own labels, in `lang`.

    A noise predictor's loss MSE(ε̂, ε) against 1, what always answering ε̂ = 0 scores
    (the noise has variance 1); a small CLIP's contrastive loss against log(batch), what
    guessing one caption of the batch scores, and the share of images whose best caption
    in the batch is their own."""
    lang = course_language(lang)
    if run.kind == "clip":
        level = math.log(run.batch)
        return training_curves(
            run.loss,
            run.accuracy,
            loss_label=T("clip_loss", lang),
            accuracy_label=T("clip_accuracy", lang),
            references={T("clip_guess", lang, batch=run.batch, level=level): level},
            title=T("clip_title", lang),
            fig=fig,
            lang=lang,
        )
    return training_curves(
        run.loss,
        loss_label=T("unet_loss", lang),
        references={T("unet_zero", lang): 1.0},
        title=T("unet_title", lang),
        fig=fig,
        lang=lang,
    )
