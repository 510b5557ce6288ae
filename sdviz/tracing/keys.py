"""The key table: every value a `Run` can hold, its shape and meaning, in one place.

Grammar: `<component>.<output>`. The component is the diffusers pipeline component the
value comes from (`tokenizer`, `text_encoder`, `scheduler`, `vae`), `pipeline` for the
arguments of the call itself, `denoiser` for the network that predicts the noise (a
pipeline's `unet` or `transformer`; `denoiser.name` says which) and `attention` for the
denoiser's text attention. Pipelines with several tokenizers and text encoders (SDXL,
SD3, Flux) number them as diffusers does (`tokenizer_2.tokens`, `text_encoder_3.
prompt_embeds`). Per-step values carry `step_` (`scheduler.step_sigma`, shape (S,)); the
whole schedule keeps diffusers' plural names (`scheduler.sigmas`). Outputs are named as
in diffusers where diffusers has a name (`prompt_embeds`, `pred_original_sample`).

Shapes: S denoiser calls (steps), T scheduler timesteps in all, L the tokenizer's
`model_max_length`, d the text encoder's width, (c, h, w) the latent, (H, W) the image,
N the train timesteps. `when` says which runs hold the key ("text+cfg": both held):

    always          every run
    text            the text encoder(s) ran inside the trace
    negative        the negative prompt went through the text encoder(s) too (under cfg;
                    SDXL zeroes an empty one instead: force_zeros_for_empty_prompt)
    cfg             classifier-free guidance ran (an unconditional branch exists)
    diffusion       a diffusion scheduler (DDPM family: SD 1.x/2.x, SDXL): alpha-bar per
                    step, epsilon predictions
    flow            a flow-matching scheduler (SD3, Flux; Lipman et al. 2023, Esser et al.
                    2024): x_t = (1 - sigma) x0 + sigma noise, velocity predictions, no alpha-bar
    alphas          the scheduler has alphas_cumprod (DDPM-family noise schedules)
    sigmas          the scheduler keeps a sigma per step (Euler, LMS, DPM++ K, flow matching)
    distilled       guidance-distilled (Flux dev): the scale enters as an embedding
    decoded         the VAE decoded the final latents (not output_type="latent")
    attention       attention="aggregate" (the default)
    image_to_text   image_to_text=True on a joint-attention family (SD3, Flux)
    text_share      text_share=True on a joint-attention family (SD3, Flux)
    layers          attention_layers selected layers whose own maps are kept

A key's `families` says which pipelines can hold it at all: "stable-diffusion" (SD 1.x
/ 2.x), "stable-diffusion-xl", "stable-diffusion-3" (SD3 / 3.5) and "flux" (Flux.1), the
names sdviz.pipeline.family gives.

`sdviz.tracing.record` builds Runs from this table only (a key missing from it is a
bug it refuses), `Run.__repr__` prints the meanings, figures name keys from it, and
`tests/test_keys.py` checks that each family's Run holds exactly `expected_keys(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# SD 1.x/2.x, SDXL, SD3/3.5, Flux.1: the names of sdviz.pipeline.FAMILIES
FAMILIES = ("stable-diffusion", "stable-diffusion-xl", "stable-diffusion-3", "flux")
CONDITIONS = (
    "always",
    "text",
    "negative",
    "cfg",
    "diffusion",
    "flow",
    "alphas",
    "sigmas",
    "distilled",
    "decoded",
    "attention",
    "image_to_text",
    "text_share",
    "layers",
)

LAYER_PREFIX = "attention."  # per-layer maps: "attention.<module path of the layer>"

SD, XL, SD3, FLUX = FAMILIES
UNETS = (SD, XL)
TRANSFORMERS = (SD3, FLUX)
SEVERAL_ENCODERS = (XL, SD3, FLUX)


@dataclass(frozen=True)
class Key:
    """One recorded value: its name, shape (or type), meaning, and which runs hold it."""

    name: str
    shape: str
    meaning: str
    when: str = "always"
    families: tuple[str, ...] = FAMILIES


def _tokenizer(n: str, families: tuple[str, ...], negatives: tuple[str, ...], what: str):
    """The token keys of tokenizer number n ('' for the first)."""
    t = f"tokenizer{n}."
    keys = [
        Key(t + "input_ids", "(L,) int64", f"{what}: token ids it saw, padded", "text", families),
        Key(
            t + "tokens", "list[str] (L)", f"{what}: the tokens, padding included", "text", families
        ),
        Key(t + "n_tokens", "int", f"{what}: real tokens, start/end included", "text", families),
    ]
    keys += [
        Key(
            t + "negative_input_ids",
            "(L,) int64",
            f"{what}: the negative prompt's ids",
            "text+negative",
            negatives,
        ),
        Key(
            t + "negative_tokens",
            "list[str] (L)",
            f"{what}: the negative prompt's tokens",
            "text+negative",
            negatives,
        ),
        Key(
            t + "negative_n_tokens",
            "int",
            f"{what}: the negative prompt's real tokens",
            "text+negative",
            negatives,
        ),
    ]
    return keys


_K = Key
KEYS: tuple[Key, ...] = (
    # -- the call ------------------------------------------------------------------------
    _K("pipeline.family", "str", "which kind of pipeline ran: " + ", ".join(FAMILIES)),
    _K("pipeline.class_name", "str", "the diffusers pipeline class"),
    _K("pipeline.prompt", "str", "the prompt (decoded from the token ids in a raw trace)"),
    _K("pipeline.negative_prompt", "str | None", "the negative prompt; None when empty"),
    _K("pipeline.guidance_scale", "float", "guidance scale g (CFG's, or Flux's embedded one)"),
    _K("pipeline.do_classifier_free_guidance", "bool", "whether an unconditional branch ran"),
    _K("pipeline.guidance_rescale", "float", "guidance rescale (Lin et al. 2024); 0 = off"),
    _K("pipeline.num_inference_steps", "int", "denoising steps asked for"),
    _K("pipeline.height", "int", "image height in pixels (H)"),
    _K("pipeline.width", "int", "image width in pixels (W)"),
    _K("pipeline.seed", "int | None", "the generator's seed; None when unknown or random"),
    _K(
        "pipeline.prompt_embeds",
        "(L_all, d_all)",
        "the text sequence the denoiser reads: every encoder's tokens joined (SDXL: along "
        "channels; SD3: CLIP-L|CLIP-G along channels, zero-padded, then T5 along tokens)",
        families=(XL, SD3),
    ),
    _K(
        "pipeline.negative_prompt_embeds",
        "(L_all, d_all)",
        "the unconditional branch's text sequence",
        "cfg",
        (XL, SD3),
    ),
    _K(
        "pipeline.pooled_prompt_embeds",
        "(d_pool,)",
        "one vector for the whole prompt (CLIP's pooled output), added to the timestep "
        "embedding: it reaches every layer, but no attention map shows it",
        families=SEVERAL_ENCODERS,
    ),
    _K(
        "pipeline.negative_pooled_prompt_embeds",
        "(d_pool,)",
        "the unconditional branch's pooled vector",
        "cfg",
        SEVERAL_ENCODERS,
    ),
    _K(
        "pipeline.true_cfg_scale",
        "float",
        "Flux's true classifier-free guidance scale (true_cfg_scale > 1 with a negative "
        "prompt: a second transformer call per step); FluxPipeline does not keep it, so the "
        "trace solves it from the scheduler's own updates x_next - x = (sigma_next - sigma) v",
        "cfg",
        (FLUX,),
    ),
    _K(
        "pipeline.add_time_ids",
        "(6,)",
        "SDXL's size conditioning: original (h, w), crop top-left (y, x), target (h, w) in "
        "pixels, embedded like the timestep",
        families=(XL,),
    ),
    # -- tokenizers ----------------------------------------------------------------------
    *_tokenizer("", FAMILIES, FAMILIES, "first tokenizer (CLIP; CLIP-L in SD3)"),
    _K(
        "tokenizer.truncated",
        "list[str] | None",
        "tokens cut off past L: [] none; None: a raw trace cannot know, but the prompt "
        "filled all L positions, so words may have been cut",
        "text",
    ),
    *_tokenizer("_2", SEVERAL_ENCODERS, SEVERAL_ENCODERS, "second tokenizer (CLIP-G; Flux: T5)"),
    *_tokenizer("_3", (SD3,), (SD3,), "third tokenizer (T5)"),
    # -- text encoders -------------------------------------------------------------------
    _K(
        "text_encoder.prompt_embeds",
        "(L, d)",
        "token vectors the denoiser reads (SDXL/SD3: this encoder's slice of them)",
        families=(SD, XL, SD3),
    ),
    _K(
        "text_encoder.negative_prompt_embeds",
        "(L, d)",
        "the unconditional branch's",
        "cfg",
        (SD, XL, SD3),
    ),
    _K(
        "text_encoder_2.prompt_embeds",
        "(L_2, d_2)",
        "the second encoder's token vectors the denoiser reads (Flux: T5's, all of them)",
        families=SEVERAL_ENCODERS,
    ),
    _K(
        "text_encoder_2.negative_prompt_embeds",
        "(L_2, d_2)",
        "the unconditional branch's",
        "cfg",
        SEVERAL_ENCODERS,
    ),
    _K("text_encoder_3.prompt_embeds", "(L_3, d_3)", "T5's token vectors", families=(SD3,)),
    _K(
        "text_encoder_3.negative_prompt_embeds",
        "(L_3, d_3)",
        "the unconditional branch's T5 vectors",
        "cfg",
        (SD3,),
    ),
    # -- scheduler -----------------------------------------------------------------------
    _K("scheduler.name", "str", "the scheduler class"),
    _K("scheduler.config", "dict", "the scheduler's config"),
    _K("scheduler.timesteps", "(T,)", "the whole timestep schedule of this call"),
    _K("scheduler.alphas_cumprod", "(N,)", "alpha-bar of every train timestep", "alphas"),
    _K("scheduler.sigmas", "(T+1,)", "the whole sigma schedule (ends at 0)", "sigmas"),
    _K("scheduler.step_timestep", "(S,)", "timestep t given to the denoiser per step"),
    _K(
        "scheduler.step_alpha_bar",
        "(S,)",
        "alpha-bar_t: signal fraction of x_t's variance (diffusion only: flow matching has none)",
        "diffusion",
        UNETS,
    ),
    _K(
        "scheduler.step_sigma",
        "(S,)",
        "sigma per step; diffusion: noise-to-signal sqrt((1-abar)/abar); flow matching: "
        "the noise weight of x_t = (1 - sigma) x0 + sigma noise",
    ),
    _K(
        "scheduler.shift",
        "float",
        "flow matching's time shift s (sigma <- s sigma / (1 + (s-1) sigma)); Flux's dynamic "
        "shift: s = e^mu, mu growing with the image's token count",
        "flow",
    ),
    # -- denoiser ------------------------------------------------------------------------
    _K("denoiser.name", "str", "the component that denoised: 'unet' or 'transformer'"),
    _K("denoiser.prediction_type", "str", "what it predicts: epsilon, v_prediction, flow"),
    _K(
        "denoiser.latents",
        "(S+1, c, h, w)",
        "x_t entering each step, then the final latents (S entries without a decode); "
        "Flux's 2x2-packed tokens unpacked to the latent grid",
    ),
    _K(
        "denoiser.noise_pred_uncond",
        "(S, c, h, w)",
        "epsilon-hat of the unconditional branch",
        "diffusion+cfg",
        UNETS,
    ),
    _K(
        "denoiser.noise_pred_text",
        "(S, c, h, w)",
        "epsilon-hat given the prompt",
        "diffusion",
        UNETS,
    ),
    _K(
        "denoiser.noise_pred",
        "(S, c, h, w)",
        "guided epsilon-hat the scheduler used",
        "diffusion",
        UNETS,
    ),
    _K(
        "denoiser.velocity_uncond",
        "(S, c, h, w)",
        "velocity v-hat = noise - x0 of the unconditional branch",
        "flow+cfg",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.velocity_text",
        "(S, c, h, w)",
        "velocity v-hat given the prompt",
        "flow",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.velocity",
        "(S, c, h, w)",
        "guided velocity the scheduler used: x_next = x_t + (sigma_next - sigma) v",
        "flow",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.pred_original_sample",
        "(S, c, h, w)",
        "x0-hat: the clean latent it implies (flow: x_t - sigma v)",
    ),
    _K(
        "denoiser.guidance",
        "float",
        "the guidance scale the denoiser reads as an embedding (guidance-distilled Flux): "
        "no unconditional branch runs",
        "distilled",
        (FLUX,),
    ),
    # -- attention -----------------------------------------------------------------------
    _K(
        "attention.maps",
        "(S, L, h_a, w_a)",
        "per-token maps, mean of heads and of the layers in attention.aggregate_layers (coarser "
        "ones resized bicubically); each image position's row sums to 1 over the L text tokens "
        "(SD3/Flux: image queries over text keys, softmax over text only); "
        "(h_a, w_a): the latent (UNet) or the transformer's patch grid",
        "attention",
    ),
    _K(
        "attention.text_sequence",
        "dict[str, (start, stop)]",
        "which rows of the maps come from which tokenizer",
        "attention",
    ),
    _K(
        "attention.text_share",
        "(S, h_a, w_a)",
        "joint attention: the share of each image token's attention (softmax over text and "
        "image keys) that goes to the text; the rest reads the image itself",
        "attention+text_share",
        TRANSFORMERS,
    ),
    _K(
        "attention.image_to_text_maps",
        "(S, L, h_a, w_a)",
        "joint attention the other way: where each text token's query reads in the image "
        "(softmax over the image keys only)",
        "attention+image_to_text",
        TRANSFORMERS,
    ),
    _K("attention.layers", "list[str]", "module paths of the text-attention layers", "attention"),
    _K("attention.n_layers", "int", "how many layers attend to the text", "attention"),
    _K(
        "attention.aggregate_layers",
        "list[str]",
        "the layers attention.maps averages: sdviz.attention.default_aggregate_layers for a "
        "UNet (measured best at finding the words' objects), every joint-attention layer for "
        "SD3 and Flux",
        "attention",
    ),
    _K(
        LAYER_PREFIX + "<layer>",
        "(S, L, h_l, w_l) | (S, heads, L, h_l, w_l)",
        "one selected layer's maps (per head with attention_heads=True)",
        "layers",
    ),
    # -- VAE -----------------------------------------------------------------------------
    _K("vae.scaling_factor", "float", "latent scale: the denoiser works on z * this"),
    _K(
        "vae.shift_factor",
        "float",
        "latent shift: the denoiser works on (z - shift) * scale",
        families=TRANSFORMERS,
    ),
    _K("vae.downsampling_factor", "int", "pixels per latent cell (H = h * this)"),
    _K("vae.image", "(3, H, W) in [0, 1]", "the decoded image", "decoded"),
    _K("vae.preview_coefficients", "(c+1, 3)", "least-squares latent->RGB map", "decoded"),
)

TABLE: dict[str, Key] = {k.name: k for k in KEYS}


def is_layer_key(name: str) -> bool:
    """'attention.up_blocks.1.attentions.0.transformer_blocks.0.attn2' -> True."""
    return name.startswith(LAYER_PREFIX) and name not in TABLE


def describe(name: str) -> Key:
    """The table row of a key (per-layer keys share one row)."""
    if name in TABLE:
        return TABLE[name]
    if is_layer_key(name):
        return TABLE[LAYER_PREFIX + "<layer>"]
    raise KeyError(
        f"{name!r} is not a Run key. Keys are '<component>.<output>' and listed in "
        f"sdviz.tracing.keys.KEYS, e.g. {', '.join(list(TABLE)[:4])}, ..."
    )


def expected_keys(family: str, conditions: Iterable[str], layers: Iterable[str] = ()) -> set[str]:
    """The keys a Run of `family` holds when `conditions` (from CONDITIONS) held."""
    held = {"always", *conditions}
    unknown = held - set(CONDITIONS)
    if unknown or family not in FAMILIES:
        raise ValueError(
            f"unknown family {family!r} or conditions {sorted(unknown)}; families are "
            f"{FAMILIES}, conditions {CONDITIONS}."
        )
    out = {
        k.name
        for k in KEYS
        if set(k.when.split("+")) <= held and family in k.families and "<" not in k.name
    }
    if "layers" in held:
        out |= {LAYER_PREFIX + name for name in layers}
    return out


def check_keys(names: Iterable[str]) -> None:
    """Raise when a name is not in the table (a record must not invent keys)."""
    for name in names:
        describe(name)


def markdown_table() -> str:
    """The table as Markdown (for the README)."""
    rows = ["| key | shape | meaning | when | families |", "| --- | --- | --- | --- | --- |"]
    for k in KEYS:
        families = "all" if set(k.families) == set(FAMILIES) else ", ".join(k.families)
        rows.append(f"| `{k.name}` | {k.shape} | {k.meaning} | {k.when} | {families} |")
    return "\n".join(rows)
