"""The components, schedule and tokens figures on every family sdviz traces (SD 1.x, SDXL,
SD3, Flux): tiny random pipelines built in code, traced once per module.

Each test checks a number the figure draws against the pipeline or the Run it came from:
parameter counts and shapes in the components diagram, the flow-matching curve's
markers against the run's own σ, one token table per tokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

import sdviz
from sdviz import builder, figures
from sdviz.builder import count_parameters
from sdviz.figures.overview import human, model_sizes
from sdviz.figures.schedule import flow_curves, flow_snr, schedule_curves
from sdviz.figures.text import encoder_rows, readable
from sdviz.pipeline import denoiser

STEPS = 4
SIDE = builder.TINY_RESOLUTION
BUILDERS = {
    "stable-diffusion-xl": builder.tiny_sdxl_pipeline,
    "stable-diffusion-3": builder.tiny_sd3_pipeline,
    "flux": builder.tiny_flux_pipeline,
}
ENCODERS = {"stable-diffusion-xl": 2, "stable-diffusion-3": 3, "flux": 2}


@pytest.fixture(scope="module")
def pipes():
    out = {name: build() for name, build in BUILDERS.items()}
    for pipe in out.values():
        pipe.set_progress_bar_config(disable=True)
    return out


@pytest.fixture(scope="module")
def runs(pipes):
    return {
        name: sdviz.generate(pipe, "a red circle", steps=STEPS, seed=0, height=SIDE, width=SIDE)
        for name, pipe in pipes.items()
    }


def texts(fig: Figure) -> str:
    found = [t.get_text() for t in fig.findobj(Text)]
    return "\n".join(found).lower()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_components_lists_every_encoder_and_the_denoiser(pipes, runs, name):
    pipe, run = pipes[name], runs[name]
    sizes = model_sizes(pipe, run)
    assert len(sizes["encoders"]) == ENCODERS[name]
    text = texts(figures.components(pipe, run))
    net = denoiser(pipe)
    kind = "unet" if name == "stable-diffusion-xl" else "transformer"
    assert f"{kind}  {human(count_parameters(net))} params".lower() in text
    for e in sizes["encoders"]:
        encoder = getattr(pipe, e["component"])
        assert e["params"] == count_parameters(encoder)
        assert f"{human(e['params'])} params, {e['L']}×{e['d']}".lower() in text
    c, h, w = run["denoiser.latents"].shape[1:]
    assert f"latents {c}×{h}×{w}" in text  # the run's own latent, unpacked for Flux
    # the sequence the denoiser reads: the run's joined embeddings (Flux: T5's)
    seq = run.get("pipeline.prompt_embeds", run.get("text_encoder_2.prompt_embeds"))
    assert (sizes["L"], sizes["d"]) == tuple(seq.shape)


def test_components_says_what_enters_beside_t(pipes):
    xl, flux = model_sizes(pipes["stable-diffusion-xl"]), model_sizes(pipes["flux"])
    width = pipes["stable-diffusion-xl"].text_encoder_2.config.projection_dim
    assert f"pooled text vector ({width})" in xl["beside_t"]
    assert any("time_ids (6)" in b for b in xl["beside_t"])
    assert any("guidance" in b for b in flux["beside_t"])
    assert not any("guidance" in b for b in model_sizes(pipes["stable-diffusion-3"])["beside_t"])
    assert "single-stream" in model_sizes(pipes["flux"])["blocks"]


@pytest.mark.parametrize("name", ["stable-diffusion-3", "flux"])
def test_flow_schedule_markers_are_the_runs_sigma(runs, name):
    run = runs[name]
    c = schedule_curves(run)
    assert c["kind"] == "flow"
    sigma = run["scheduler.step_sigma"].numpy()
    np.testing.assert_allclose(c["sampled_noise"], sigma)
    np.testing.assert_allclose(c["sampled_snr"], ((1 - sigma) / sigma) ** 2, rtol=1e-6)
    fig = figures.noise_schedule(run)
    noise_ax = fig.axes[1]
    markers = [line for line in noise_ax.lines if line.get_linestyle() == "None"]
    np.testing.assert_allclose(markers[0].get_ydata(), sigma)
    np.testing.assert_allclose(markers[0].get_xdata(), run["scheduler.step_timestep"].numpy())
    assert f"shift {float(run['scheduler.shift']):.3g}" in texts(fig)


def test_flow_next_to_diffusion_on_one_axis(runs):
    xl, sd3 = runs["stable-diffusion-xl"], runs["stable-diffusion-3"]
    fig = figures.noise_schedule(xl, sd3, labels=["SDXL", "SD3"])
    signal_ax = fig.axes[0]
    lines = [line for line in signal_ax.lines if line.get_linestyle() == "-"]
    abar = xl["scheduler.alphas_cumprod"].numpy()
    np.testing.assert_allclose(lines[0].get_ydata(), np.clip(abar, 1e-12, 1 - 1e-7), rtol=1e-6)
    n = len(lines[1].get_ydata())
    np.testing.assert_allclose(lines[1].get_ydata(), (1 - np.arange(1, n + 1) / n) ** 2, atol=1e-6)
    assert "sd3 σ=1.000 (snr 0)" in fig.legends[0].get_title().get_text().lower()
    three = figures.noise_schedule(xl, sd3, runs["flux"], labels=["SDXL", "SD3", "Flux"])
    assert "SD3 = Flux (σ_t = t/N)" in three.legends[0].get_title().get_text()


def test_flow_pipeline_schedule_with_dynamic_shift(pipes):
    flux = pipes["flux"]
    c = flow_curves(flux, steps=6)
    assert len(c["timesteps"]) == 6 and c["sampled_sigma"][0] == pytest.approx(1.0)
    assert c["shift"] > 1  # the shift grows with the image's token count
    with pytest.raises(ValueError, match="pass the pipeline or a traced run"):
        flow_curves(flux.scheduler)
    assert flow_snr(np.array([1.0]))[0] == 0  # flow matching ends at pure noise


@pytest.mark.parametrize("name", list(BUILDERS))
def test_tokens_figure_has_every_tokenizer(runs, name):
    run = runs[name]
    rows = encoder_rows(run)
    assert [r["name"] for r in rows] == ["tokenizer", "tokenizer_2", "tokenizer_3"][
        : ENCODERS[name]
    ]
    fig = figures.tokens_and_embeddings(run)
    text = texts(fig)
    for r in rows:
        n, L = run[f"{r['name']}.n_tokens"], len(run[f"{r['name']}.tokens"])
        assert f"{r['name']} — " in text and f"{n} tokens padded to {L}" in text
        assert readable(run[f"{r['name']}.tokens"][1]).lower() in text
    if name == "flux":  # CLIP gives Flux its pooled vector only
        assert rows[0]["pooled_only"] and rows[0]["embeds"].shape[0] == 1
        np.testing.assert_allclose(rows[0]["embeds"][0], run["pipeline.pooled_prompt_embeds"])
    else:
        embeds = run["text_encoder.prompt_embeds"].numpy()
        np.testing.assert_allclose(rows[0]["embeds"], embeds)
    if name == "stable-diffusion-3":
        assert rows[2]["rows"] == (77, 77 + len(run["tokenizer_3.tokens"]))


def test_trace_families_puts_the_loaded_model_in_its_place(pipes):
    from sdviz.probes import families as fam

    sd3 = pipes["stable-diffusion-3"]
    traced = fam.trace_families(sd3, "a red circle", steps=2)
    assert list(traced.runs) == [
        "stable-diffusion",
        "stable-diffusion-xl",
        "stable-diffusion-3",
        "flux",
    ]
    assert traced.pipes["stable-diffusion-3"] is sd3 and not traced.tiny["stable-diffusion-3"]
    assert traced.weights["stable-diffusion"] == fam.SD_STAND_IN  # sdviz-mini, not random
    assert traced.tiny["flux"] and traced.tiny["stable-diffusion-xl"]
    table = fam.records_table(traced)
    assert table["SD3 / SD3.5"][0] == "loaded"
    assert table["Flux"][table["record"].index("denoiser branches per step")] == "1 (text)"
    assert len(traced.images()) == len(traced.labels()) == 4
    facts = fam.families_table()
    assert facts["fact (unit)"][0] == "text encoders" and len(facts) == 5
    # in Chinese: the same cells under Chinese headers, the words from sdviz's tables
    zh = fam.records_table(traced, lang="zh")
    assert zh["SD3 / SD3.5"][0] == "已加载" and zh["SD 1.x / 2.x"][0] == fam.SD_STAND_IN
    assert zh["Flux"][zh["记录"].index("每步的去噪网络分支")] == "1（文本）"
    assert zh["记录"][0].english == "weights"  # each row name keeps its English
    assert traced.labels("zh")[1] == "SDXL（微型，随机权重）"
    assert fam.families_table(lang="zh")["事实（单位）"][0] == "文本编码器"


def test_gallery_refuses_a_family_with_what_works(pipes, tmp_path, capsys):
    from sdviz.commands import main

    folder = tmp_path / "tiny-sd3"
    pipes["stable-diffusion-3"].save_pretrained(folder)
    out = tmp_path / "gallery"
    assert main(["figures", "--model", str(folder), "--out", str(out), "--steps", "2"]) == 1
    err = capsys.readouterr().err
    assert "SD3 / SD3.5 (StableDiffusion3Pipeline)" in err and "components(pipe, run)" in err
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("name", list(BUILDERS))
def test_word_maps_are_named_for_the_attention_they_come_from(runs, name):
    """A transformer's maps are joint attention's image->text part, a UNet's cross-attention."""
    fig = figures.cross_attention(runs[name], ["red", "circle"])
    joint = runs[name]["denoiser.name"] == "transformer"
    assert ("joint attention" in texts(fig)) == joint
    assert ("cross-attention" in texts(fig)) == (not joint)
