"""Figure 4 — a training example: noisy latent + t -> predicted noise vs the true noise.

Training a diffusion model (Ho et al. 2020, Algorithm 1; Rombach et al. 2022, Eq. 2)
takes a clean latent z_0, draws ε ~ N(0, I) and a timestep t, forms
z_t = sqrt(ᾱ_t)·z_0 + sqrt(1-ᾱ_t)·ε, and asks the UNet for ε̂(z_t, t, text); the loss is
‖ε̂ - ε‖². `sdviz.probes.noise_predictions` computes that one example with a loaded model
and scores the same ε over many t (v-prediction models are converted to ε, Salimans &
Ho 2022); this figure draws it.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..autoencoder import to_numpy
from ..probes import NoisePredictions
from .style import (
    SIGNED_CMAP,
    Canvas,
    check_channel,
    expect,
    maps_and_plot,
    plot_over_t,
    show_map,
    style,
    symmetric_limit,
)


def training_example(
    example: NoisePredictions, *, channel: int = 0, fig: Canvas | None = None
) -> Figure:
    """z_0, the true noise ε, z_t, the UNet's ε̂ and the error ε̂ − ε at `t`, plus the error over t.

    `example` comes from `sdviz.probes.noise_predictions(pipe, image, t, timesteps=...)`
    (the error is drawn at its timesteps). Maps show latent `channel`.

    Example:
        >>> run = sdviz.generate(pipe, "a red circle")
        >>> example = sdviz.probes.noise_predictions(pipe, run, t=500)
        >>> fig = sdviz.figures.training_example(example)
    """
    expect(example, NoisePredictions, "sdviz.probes.noise_predictions(pipe, image)")
    c = example.clean.shape[0]
    check_channel(channel, c)
    t, k = example.t, example.index
    z = (example.clean, example.noise, example.noisy[k], example.predicted[k])
    maps = [to_numpy(x[channel]) for x in z]
    err = maps[3] - maps[1]
    with style():
        fig, axes = maps_and_plot(
            fig,
            5,
            f"A training example at t={t} (ᾱ={example.alpha_bar:.3f}), caption "
            f"{example.prompt!r}, latent channel {channel}",
        )
        lim = symmetric_limit(*maps)
        titles = ("clean latent z_0", "true noise ε", f"noisy latent z_t (t={t})", "predicted ε̂")
        for ax, m, title in zip(axes[:4], maps, titles, strict=True):
            im = show_map(ax, m, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, title=title)
        show_map(axes[4], err, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, title="error ε̂ − ε")
        fig.colorbar(im, ax=list(axes[:5]), label="value", shrink=0.8)
        mse = to_numpy(example.mse)
        plot_over_t(
            axes[5], example.timesteps, mse, k, ylabel="MSE(ε̂, ε)", title="Prediction error over t"
        )
    return fig
