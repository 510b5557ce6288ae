"""The model card (README.md) of a trained sdviz-mini folder: recipe, cost, metrics, checksums.

Model cards (Mitchell et al. 2019) say what a model is for, how it was made and how
well it does. This one also records the sha256 of every weight file, which the tests
check, so that the shipped weights are known to be the ones described.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..pipeline import RECOMMENDED_FILE


def weight_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every `*.safetensors` file under `folder`, keyed by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


def read_checksums(card: str) -> dict[str, str]:
    """The checksums recorded in a model card's table (`| path | sha256 |` rows)."""
    return dict(re.findall(r"^\| `([^`]+\.safetensors)` \| `([0-9a-f]{64})` \|", card, re.M))


def parameter_counts(folder: Path) -> dict[str, int]:
    """Number of weights in each part (sub-folder) of a pipeline folder, from its safetensors."""
    from safetensors import safe_open

    counts = {}
    for p in sorted(folder.rglob("*.safetensors")):
        with safe_open(p, "pt") as f:
            part = str(p.parent.relative_to(folder))
            counts[part] = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return counts


def _part_folder(folder: Path, part: str) -> Path:
    """Where `part` of a pipeline folder lives: its own sub-folder, or the one its
    `sdviz.json` borrows it from (`sdviz.borrowed`)."""
    from ..borrowed import borrowed_spec

    spec = borrowed_spec(folder)
    borrowed = (spec or {}).get("components", {}).get(part)
    if isinstance(borrowed, dict):
        return folder / spec["folder"] / borrowed["subfolder"]
    return folder / part


def _denoiser(folder: Path) -> str:
    """ "unet" (sdviz-mini) or "transformer" (sdviz-mini-flow)."""
    return "transformer" if (folder / "transformer" / "config.json").is_file() else "unet"


def _image_and_latent_shape(folder: Path) -> str:
    """ "64x64 images <-> 4x16x16 latents", from the denoiser's and the VAE's configs."""
    net = json.loads((folder / _denoiser(folder) / "config.json").read_text())
    vae = json.loads((_part_folder(folder, "vae") / "config.json").read_text())
    side = net["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    latent = f"{net['in_channels']}x{net['sample_size']}x{net['sample_size']}"
    return f"{side}x{side} images <-> {latent} latents."


def guidance_why(folder: Path) -> str:
    """Why the card recommends its guidance scale: the measured rule when the folder holds
    `guidance.json` (`benchmarks/guidance_sweep.py`), else a pointer to that benchmark."""
    from ..probes.guidance import GUIDANCE_FILE, measured_guidance

    if not (folder / GUIDANCE_FILE).is_file():
        return (
            "small models usually want less guidance than Stable Diffusion's 7.5; measure it "
            "with benchmarks/guidance_sweep.py"
        )
    m = measured_guidance(folder)
    return f"measured by benchmarks/guidance_sweep.py ({GUIDANCE_FILE}): {m.rule}"


def guidance_section(folder: Path) -> str:
    """The card's "## Guidance" section: `guidance.json`'s table (prompts followed and image
    quality per scale, real ShapesWorld images as the reference), or "" without one."""
    from ..probes.guidance import ACCURACY_NAMES, GUIDANCE_FILE, QUALITY_NAMES, measured_guidance

    if not (folder / GUIDANCE_FILE).is_file():
        return ""
    m = measured_guidance(folder)
    names = {**ACCURACY_NAMES, **QUALITY_NAMES}
    keys = [*m.accuracy, *m.quality]
    head = "| g | " + " | ".join(names.get(k, k) for k in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 1)]
    for i, g in enumerate(m.scales):
        cells = [f"{m.accuracy[k][i]:.1f}" for k in m.accuracy]
        cells += [f"{m.quality[k][i]:.2f}" for k in m.quality]
        lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
    for name, ref in (
        ("real ShapesWorld", m.reference),
        ("real, through the VAE", m.reference_vae),
    ):
        blanks = [""] * len(m.accuracy)
        cells = blanks + [f"{ref[k]:.2f}" if k in ref else "" for k in m.quality]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    n = m.n
    return (
        f"## Guidance (`python benchmarks/guidance_sweep.py`, scored from pixels)\n\n"
        f"The same prompts and seeds at every scale, {m.steps} steps: {n['one_object']} "
        f"one-object and {n['two_objects']} two-object prompts, {n['held_out_pairs']} naming "
        "a colour-shape pair never seen in training. Accuracy in % of prompts followed; "
        "then how far the drawings stray from ShapesWorld (colour: mean RGB distance of "
        "object pixels from the nearest palette colour; specks: % of pixels saturated but "
        "in no object; extra objects per image; edge sharpness: steepest change across an "
        "outline over the object's contrast). Recommended: "
        f"**g = {m.recommended:g}**, {m.rule}.\n\n" + "\n".join(lines)
    )


def _check_measured(folder: Path, guidance: float) -> None:
    """A card must not recommend another scale than the one its own measurements chose."""
    from ..probes.guidance import GUIDANCE_FILE, measured_guidance

    if (folder / GUIDANCE_FILE).is_file():
        chosen = measured_guidance(folder).recommended
        if not math.isclose(chosen, guidance):
            raise ValueError(
                f"guidance={guidance:g}, but {folder / GUIDANCE_FILE} (benchmarks/"
                f"guidance_sweep.py) recommends {chosen:g}: pass guidance={chosen:g}, or "
                "re-run the benchmark if the weights changed."
            )


def write_settings(folder: Path, guidance: float, steps: int) -> None:
    """`folder/sdviz.json`: what `sdviz.pipeline.recommended` reads for this model (the
    entries it holds besides these, such as sdviz-mini-flow's "borrowed", are kept)."""
    path = folder / RECOMMENDED_FILE
    settings = json.loads(path.read_text()) if path.is_file() else {}
    settings |= {
        "guidance_scale": float(guidance),
        "num_inference_steps": int(steps),
        "closed_vocabulary": True,  # its tokenizer holds ShapesWorld's words, letters else
        "why": f"guidance: {guidance_why(folder)}; it knows only ShapesWorld's words "
        "(see README.md, the model card)",
    }
    path.write_text(json.dumps(settings, indent=2) + "\n")


_MINI_INTRO = """# sdviz-mini

A miniature Stable Diffusion trained from scratch by `sdviz train` on ShapesWorld
(`sdviz.shapes`): the same three parts and classes as SD — a `CLIPTextModel` text
encoder (the text tower of a contrastively trained `CLIPModel`, shipped whole in
`clip/`), a `UNet2DConditionModel` with cross-attention and an `AutoencoderKL` — and
SD's DDIM scheduler configuration. {shape} Folder size {size_mb:.1f} MB. Loads offline with
`StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True)` or `sdviz.load()`."""

_FLOW_INTRO = """# sdviz-mini-flow

sdviz-mini's twin with Stable Diffusion 3's denoiser (Esser et al. 2024): an
`SD3Transformer2DModel` (MMDiT: image and text tokens in one joint attention) trained from
scratch by `sdviz train --flow` with rectified flow on the same ShapesWorld images, and
sampled by `FlowMatchEulerDiscreteScheduler`. The VAE, the CLIP text encoder and the
tokenizer are sdviz-mini's, borrowed from `../sdviz-mini` (`sdviz.json`, "borrowed"), not
copied: only the denoiser differs. {shape} Folder size {size_mb:.1f} MB (its own files; the
transformer stored in fp16). Loads offline with `sdviz.load("sdviz-mini-flow")`; in plain
diffusers:

```python
from diffusers import AutoencoderKL, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

mini = "sdviz/models/sdviz-mini"
te = CLIPTextModelWithProjection.from_pretrained(f"{{mini}}/clip", projection_dim=128)
tok = CLIPTokenizer.from_pretrained(f"{{mini}}/tokenizer", model_max_length=24)
vae = AutoencoderKL.from_pretrained(f"{{mini}}/vae", shift_factor=0.0)
pipe = StableDiffusion3Pipeline.from_pretrained(
    "sdviz/models/sdviz-mini-flow",
    vae=vae,
    text_encoder=te,
    text_encoder_2=te,
    tokenizer=tok,
    tokenizer_2=tok,
    text_encoder_3=None,
    tokenizer_3=None,
)
image = pipe("a red circle", max_sequence_length=0).images[0]  # no T5 positions
```

Call it with `max_sequence_length=0` (sdviz does): it was trained on CLIP's 24 token
positions alone; the pipeline's default appends 256 zero "T5" positions it never saw,
which is slower and draws worse."""


def write_model_card(
    folder: Path,
    *,
    guidance: float,
    steps: int = 25,
    quality_table: str,
    sections: Sequence[str] = (),
    status: str = "",
) -> str:
    """Write `folder/README.md` for a trained sdviz-mini pipeline folder; returns its text.

    `quality_table` is `benchmarks/mini_quality.py`'s table, `guidance` the scale it was
    scored at (the one the card recommends), `status` a summary paragraph under the title
    and `sections` whole markdown sections (recipe, cost, ...) in order. The parameter
    counts, folder size and sha256 checksums are measured here, from the files. The
    recommended guidance and steps also go to `folder/sdviz.json`, which `sdviz.generate`,
    the commands and the lessons read (`sdviz.pipeline.recommended`). When the folder
    holds `guidance.json` (`benchmarks/guidance_sweep.py --json`), its table becomes the
    card's "Guidance" section and `guidance` must be the scale it recommends.
    """
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not a pipeline folder (no model_index.json).")
    if not guidance > 0:
        raise ValueError(f"guidance must be a positive scale, not {guidance}.")
    _check_measured(folder, guidance)
    write_settings(folder, guidance, steps)
    size_mb = (
        sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
        / 2**20
    )
    shape = _image_and_latent_shape(folder)
    params = "\n".join(f"| {k} | {v / 1e6:.2f} M |" for k, v in parameter_counts(folder).items())
    sums = "\n".join(f"| `{k}` | `{v}` |" for k, v in weight_checksums(folder).items())
    intro = _FLOW_INTRO if _denoiser(folder) == "transformer" else _MINI_INTRO
    parts = [
        intro.format(shape=shape, size_mb=size_mb)
        + f"""

**Use it at guidance scale {guidance:g}** with {steps} steps (`sdviz.json`, read by
`sdviz.generate`): {guidance_why(folder)}.""",
        status.strip(),
        """It knows only ShapesWorld: one to three circles, squares, triangles or stars in red,
orange, yellow, green, blue or purple, small or big, with positions ("at the top")
and relations ("to the left of"). The colour-shape pairs yellow square, blue
triangle and purple circle were never shown in training.""",
        "## Quality (`python benchmarks/mini_quality.py`, scored from pixels, not with CLIP)\n\n"
        + quality_table.strip(),
        guidance_section(folder),
        *(section.strip() for section in sections),
        f"## Parameters\n\n| part | parameters |\n|---|---|\n{params}",
        f"## Weight checksums (sha256)\n\n| file | sha256 |\n|---|---|\n{sums}",
    ]
    text = "\n\n".join(part for part in parts if part) + "\n"
    (folder / "README.md").write_text(text)
    return text
