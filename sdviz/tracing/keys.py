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

    always      every run
    text        the text encoder ran inside the trace
    cfg         classifier-free guidance ran (an unconditional branch exists)
    alphas      the scheduler has alphas_cumprod (DDPM-family noise schedules)
    sigmas      the scheduler keeps a sigma per step (Euler, LMS, DPM++ K, flow matching)
    decoded     the VAE decoded the final latents (not output_type="latent")
    attention   attention="aggregate" (the default)
    layers      attention_layers selected layers whose own maps are kept
    generate    made by `sdviz.generate`, which knows the call's inputs

`sdviz.tracing.record` builds Runs from this table only (a key missing from it is a
bug it refuses), `Run.__repr__` prints the meanings, figures name keys from it, and
`tests/test_keys.py` checks that each family's Run holds exactly `expected_keys(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FAMILIES = ("stable-diffusion",)  # SD 1.x / 2.x; SDXL, SD3 and Flux add theirs
CONDITIONS = ("always", "text", "cfg", "alphas", "sigmas", "decoded", "attention", "layers")

LAYER_PREFIX = "attention."  # per-layer maps: "attention.<module path of the layer>"


@dataclass(frozen=True)
class Key:
    """One recorded value: its name, shape (or type), meaning, and which runs hold it."""

    name: str
    shape: str
    meaning: str
    when: str = "always"
    families: tuple[str, ...] = FAMILIES


_K = Key
KEYS: tuple[Key, ...] = (
    # -- the call ------------------------------------------------------------------------
    _K("pipeline.family", "str", "which kind of pipeline ran ('stable-diffusion')"),
    _K("pipeline.class_name", "str", "the diffusers pipeline class"),
    _K("pipeline.prompt", "str", "the prompt (decoded from the token ids in a raw trace)"),
    _K("pipeline.negative_prompt", "str | None", "the negative prompt; None when empty"),
    _K("pipeline.guidance_scale", "float", "classifier-free guidance scale g (1 = none)"),
    _K("pipeline.do_classifier_free_guidance", "bool", "whether an unconditional branch ran"),
    _K("pipeline.guidance_rescale", "float", "guidance rescale (Lin et al. 2024); 0 = off"),
    _K("pipeline.num_inference_steps", "int", "denoising steps asked for"),
    _K("pipeline.height", "int", "image height in pixels (H)"),
    _K("pipeline.width", "int", "image width in pixels (W)"),
    _K("pipeline.seed", "int | None", "the generator's seed; None when unknown or random"),
    # -- tokenizer -----------------------------------------------------------------------
    _K("tokenizer.input_ids", "(L,) int64", "token ids the text encoder saw, padded", "text"),
    _K("tokenizer.tokens", "list[str] (L)", "the tokens of input_ids, padding included", "text"),
    _K("tokenizer.n_tokens", "int", "real tokens, start and end included", "text"),
    _K(
        "tokenizer.truncated",
        "list[str] | None",
        "tokens cut off past L: [] none; None: a raw trace cannot know, but the prompt "
        "filled all L positions, so words may have been cut",
        "text",
    ),
    _K("tokenizer.negative_input_ids", "(L,) int64", "the negative prompt's ids", "text+cfg"),
    _K("tokenizer.negative_tokens", "list[str] (L)", "the negative prompt's tokens", "text+cfg"),
    _K("tokenizer.negative_n_tokens", "int", "the negative prompt's real tokens", "text+cfg"),
    # -- text encoder --------------------------------------------------------------------
    _K("text_encoder.prompt_embeds", "(L, d)", "token vectors the denoiser reads"),
    _K("text_encoder.negative_prompt_embeds", "(L, d)", "the unconditional branch's", "cfg"),
    # -- scheduler -----------------------------------------------------------------------
    _K("scheduler.name", "str", "the scheduler class"),
    _K("scheduler.config", "dict", "the scheduler's config"),
    _K("scheduler.timesteps", "(T,)", "the whole timestep schedule of this call"),
    _K("scheduler.alphas_cumprod", "(N,)", "alpha-bar of every train timestep", "alphas"),
    _K("scheduler.sigmas", "(T+1,)", "the whole sigma schedule (ends at 0)", "sigmas"),
    _K("scheduler.step_timestep", "(S,)", "timestep t given to the denoiser per step"),
    _K("scheduler.step_alpha_bar", "(S,)", "alpha-bar_t: signal fraction of x_t's variance"),
    _K("scheduler.step_sigma", "(S,)", "noise-to-signal sqrt((1-abar)/abar) per step"),
    # -- denoiser ------------------------------------------------------------------------
    _K("denoiser.name", "str", "the component that denoised: 'unet' or 'transformer'"),
    _K("denoiser.prediction_type", "str", "what it predicts: epsilon, v_prediction, ..."),
    _K(
        "denoiser.latents",
        "(S+1, c, h, w)",
        "x_t entering each step, then the final latents (S entries without a decode)",
    ),
    _K("denoiser.noise_pred_uncond", "(S, c, h, w)", "epsilon-hat of the unconditional branch"),
    _K("denoiser.noise_pred_text", "(S, c, h, w)", "epsilon-hat given the prompt"),
    _K("denoiser.noise_pred", "(S, c, h, w)", "guided epsilon-hat the scheduler used"),
    _K("denoiser.pred_original_sample", "(S, c, h, w)", "x0-hat: the clean latent it implies"),
    # -- attention -----------------------------------------------------------------------
    _K("attention.maps", "(S, L, h, w)", "per-token maps, mean of heads and layers", "attention"),
    _K("attention.layers", "list[str]", "module paths of the text-attention layers", "attention"),
    _K("attention.n_layers", "int", "how many layers attend to the text", "attention"),
    _K(
        LAYER_PREFIX + "<layer>",
        "(S, L, h_l, w_l) | (S, heads, L, h_l, w_l)",
        "one selected layer's maps (per head with attention_heads=True)",
        "layers",
    ),
    # -- VAE -----------------------------------------------------------------------------
    _K("vae.scaling_factor", "float", "latent scale: the denoiser works on z * this"),
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
    rows = ["| key | shape | meaning | when |", "| --- | --- | --- | --- |"]
    rows += [f"| `{k.name}` | {k.shape} | {k.meaning} | {k.when} |" for k in KEYS]
    return "\n".join(rows)
