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

from ..language import Texts

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
    """One recorded value: its name, shape (or type), meaning (English, Simplified Chinese),
    and which runs hold it."""

    name: str
    shape: str
    meaning: str
    meaning_zh: str
    when: str = "always"
    families: tuple[str, ...] = FAMILIES


# a tokenizer's keys: (output, shape, meaning, meaning_zh, when); {tokenizer} says which one
_TOKEN_KEYS = (
    (
        "input_ids",
        "(L,) int64",
        "{tokenizer}: token ids it saw, padded",
        "{tokenizer}：它读到的标记 ID，含填充",
        "text",
    ),
    (
        "tokens",
        "list[str] (L)",
        "{tokenizer}: the tokens, padding included",
        "{tokenizer}：切分出的标记，含填充",
        "text",
    ),
    (
        "n_tokens",
        "int",
        "{tokenizer}: real tokens, start/end included",
        "{tokenizer}：真实标记的个数，含起始和结束标记",
        "text",
    ),
    (
        "negative_input_ids",
        "(L,) int64",
        "{tokenizer}: the negative prompt's ids",
        "{tokenizer}：负面提示词的标记 ID",
        "text+negative",
    ),
    (
        "negative_tokens",
        "list[str] (L)",
        "{tokenizer}: the negative prompt's tokens",
        "{tokenizer}：负面提示词的标记",
        "text+negative",
    ),
    (
        "negative_n_tokens",
        "int",
        "{tokenizer}: the negative prompt's real tokens",
        "{tokenizer}：负面提示词的真实标记个数",
        "text+negative",
    ),
)


def _tokenizer(
    n: str, families: tuple[str, ...], negatives: tuple[str, ...], what: str, what_zh: str
) -> list[Key]:
    """The token keys of tokenizer number n ('' for the first), `what` naming it."""
    return [
        Key(
            f"tokenizer{n}.{output}",
            shape,
            meaning.format(tokenizer=what),
            meaning_zh.format(tokenizer=what_zh),
            when,
            negatives if "negative" in when else families,
        )
        for output, shape, meaning, meaning_zh, when in _TOKEN_KEYS
    ]


_FAMILY_NAMES = ", ".join(FAMILIES)
_K = Key
KEYS: tuple[Key, ...] = (
    # -- the call ------------------------------------------------------------------------
    _K(
        "pipeline.family",
        "str",
        f"which kind of pipeline ran: {_FAMILY_NAMES}",
        f"运行的是哪一类流水线：{_FAMILY_NAMES}",
    ),
    _K("pipeline.class_name", "str", "the diffusers pipeline class", "diffusers 的流水线类"),
    _K(
        "pipeline.prompt",
        "str",
        "the prompt (decoded from the token ids in a raw trace)",
        "提示词（原始追踪中由标记 ID 解码而来）",
    ),
    _K(
        "pipeline.negative_prompt",
        "str | None",
        "the negative prompt; None when empty",
        "负面提示词；为空时是 None",
    ),
    _K(
        "pipeline.guidance_scale",
        "float",
        "guidance scale g (CFG's, or Flux's embedded one)",
        "引导系数 g（CFG 的；或 Flux 以嵌入形式读入的那个）",
    ),
    _K(
        "pipeline.do_classifier_free_guidance",
        "bool",
        "whether an unconditional branch ran",
        "是否运行了无条件分支",
    ),
    _K(
        "pipeline.guidance_rescale",
        "float",
        "guidance rescale (Lin et al. 2024); 0 = off",
        "引导重缩放（Lin 等 2024）；0 = 关闭",
    ),
    _K("pipeline.num_inference_steps", "int", "denoising steps asked for", "要求的去噪步数"),
    _K("pipeline.height", "int", "image height in pixels (H)", "图像的高，单位像素（H）"),
    _K("pipeline.width", "int", "image width in pixels (W)", "图像的宽，单位像素（W）"),
    _K(
        "pipeline.seed",
        "int | None",
        "the generator's seed; None when unknown or random",
        "随机数生成器的随机种子；未知或随机时是 None",
    ),
    _K(
        "pipeline.prompt_embeds",
        "(L_all, d_all)",
        "the text sequence the denoiser reads: every encoder's tokens joined (SDXL: along "
        "channels; SD3: CLIP-L|CLIP-G along channels, zero-padded, then T5 along tokens)",
        "去噪网络读入的文本序列：各个编码器的标记拼接在一起（SDXL：沿通道拼接；"
        "SD3：CLIP-L|CLIP-G 沿通道拼接并补零，再与 T5 沿标记方向拼接）",
        families=(XL, SD3),
    ),
    _K(
        "pipeline.negative_prompt_embeds",
        "(L_all, d_all)",
        "the unconditional branch's text sequence",
        "无条件分支的文本序列",
        "cfg",
        (XL, SD3),
    ),
    _K(
        "pipeline.pooled_prompt_embeds",
        "(d_pool,)",
        "one vector for the whole prompt (CLIP's pooled output), added to the timestep "
        "embedding: it reaches every layer, but no attention map shows it",
        "代表整个提示词的一个向量（CLIP 的池化输出），加在时间步嵌入上："
        "它到达每一层，但任何注意力图都看不到它",
        families=SEVERAL_ENCODERS,
    ),
    _K(
        "pipeline.negative_pooled_prompt_embeds",
        "(d_pool,)",
        "the unconditional branch's pooled vector",
        "无条件分支的池化向量",
        "cfg",
        SEVERAL_ENCODERS,
    ),
    _K(
        "pipeline.true_cfg_scale",
        "float",
        "Flux's true classifier-free guidance scale (true_cfg_scale > 1 with a negative "
        "prompt: a second transformer call per step); FluxPipeline does not keep it, so the "
        "trace solves it from the scheduler's own updates x_next - x = (sigma_next - sigma) v",
        "Flux 真正的无分类器引导的引导系数（true_cfg_scale > 1 且有负面提示词时："
        "每步多调用一次 Transformer）；FluxPipeline 不保存它，所以追踪从调度器自己的更新 "
        "x_next - x = (σ_next - σ) v 中解出它",
        "cfg",
        (FLUX,),
    ),
    _K(
        "pipeline.add_time_ids",
        "(6,)",
        "SDXL's size conditioning: original (h, w), crop top-left (y, x), target (h, w) in "
        "pixels, embedded like the timestep",
        "SDXL 的尺寸条件：原始尺寸 (h, w)、裁剪左上角 (y, x)、目标尺寸 (h, w)，单位像素，"
        "像时间步一样被嵌入",
        families=(XL,),
    ),
    # -- tokenizers ----------------------------------------------------------------------
    *_tokenizer(
        "",
        FAMILIES,
        FAMILIES,
        "first tokenizer (CLIP; CLIP-L in SD3)",
        "第一个分词器（CLIP；SD3 中是 CLIP-L）",
    ),
    _K(
        "tokenizer.truncated",
        "list[str] | None",
        "tokens cut off past L: [] none; None: a raw trace cannot know, but the prompt "
        "filled all L positions, so words may have been cut",
        "超出 L 被截掉的标记：[] 表示没有；None 表示原始追踪无从得知，"
        "但提示词占满了全部 L 个位置，所以可能有词被截掉",
        "text",
    ),
    *_tokenizer(
        "_2",
        SEVERAL_ENCODERS,
        SEVERAL_ENCODERS,
        "second tokenizer (CLIP-G; Flux: T5)",
        "第二个分词器（CLIP-G；Flux 中是 T5）",
    ),
    *_tokenizer("_3", (SD3,), (SD3,), "third tokenizer (T5)", "第三个分词器（T5）"),
    # -- text encoders -------------------------------------------------------------------
    _K(
        "text_encoder.prompt_embeds",
        "(L, d)",
        "token vectors the denoiser reads (SDXL/SD3: this encoder's slice of them)",
        "去噪网络读入的标记向量（SDXL/SD3：其中属于这个编码器的那一段）",
        families=(SD, XL, SD3),
    ),
    _K(
        "text_encoder.negative_prompt_embeds",
        "(L, d)",
        "the unconditional branch's",
        "无条件分支的标记向量",
        "cfg",
        (SD, XL, SD3),
    ),
    _K(
        "text_encoder_2.prompt_embeds",
        "(L_2, d_2)",
        "the second encoder's token vectors the denoiser reads (Flux: T5's, all of them)",
        "去噪网络读入的第二个编码器的标记向量（Flux：T5 的标记向量，也就是全部）",
        families=SEVERAL_ENCODERS,
    ),
    _K(
        "text_encoder_2.negative_prompt_embeds",
        "(L_2, d_2)",
        "the unconditional branch's",
        "无条件分支的标记向量",
        "cfg",
        SEVERAL_ENCODERS,
    ),
    _K(
        "text_encoder_3.prompt_embeds",
        "(L_3, d_3)",
        "T5's token vectors",
        "T5 的标记向量",
        families=(SD3,),
    ),
    _K(
        "text_encoder_3.negative_prompt_embeds",
        "(L_3, d_3)",
        "the unconditional branch's T5 vectors",
        "无条件分支的 T5 向量",
        "cfg",
        (SD3,),
    ),
    # -- scheduler -----------------------------------------------------------------------
    _K("scheduler.name", "str", "the scheduler class", "调度器的类"),
    _K("scheduler.config", "dict", "the scheduler's config", "调度器的配置"),
    _K(
        "scheduler.timesteps",
        "(T,)",
        "the whole timestep schedule of this call",
        "这次调用的完整时间步序列",
    ),
    _K(
        "scheduler.alphas_cumprod",
        "(N,)",
        "alpha-bar of every train timestep",
        "每个训练时间步的 ᾱ",
        "alphas",
    ),
    _K(
        "scheduler.sigmas",
        "(T+1,)",
        "the whole sigma schedule (ends at 0)",
        "完整的 σ 序列（以 0 结尾）",
        "sigmas",
    ),
    _K(
        "scheduler.step_timestep",
        "(S,)",
        "timestep t given to the denoiser per step",
        "每一步交给去噪网络的时间步 t",
    ),
    _K(
        "scheduler.step_alpha_bar",
        "(S,)",
        "alpha-bar_t: signal fraction of x_t's variance (diffusion only: flow matching has none)",
        "ᾱ_t：信号在 x_t 的方差中所占的比例（只有扩散才有：流匹配没有）",
        "diffusion",
        UNETS,
    ),
    _K(
        "scheduler.step_sigma",
        "(S,)",
        "sigma per step; diffusion: noise-to-signal sqrt((1-abar)/abar); flow matching: "
        "the noise weight of x_t = (1 - sigma) x0 + sigma noise",
        "每一步的 σ；扩散：噪声与信号之比 sqrt((1-ᾱ)/ᾱ)；流匹配："
        "x_t = (1 - σ) x0 + σ·噪声 中噪声的权重",
    ),
    _K(
        "scheduler.shift",
        "float",
        "flow matching's time shift s (sigma <- s sigma / (1 + (s-1) sigma)); Flux's dynamic "
        "shift: s = e^mu, mu growing with the image's token count",
        "流匹配的时间偏移 s（σ ← s σ / (1 + (s-1) σ)）；Flux 的动态偏移：s = e^μ，"
        "μ 随图像的标记数增大",
        "flow",
    ),
    # -- denoiser ------------------------------------------------------------------------
    _K(
        "denoiser.name",
        "str",
        "the component that denoised: 'unet' or 'transformer'",
        "执行去噪的组件：'unet'（UNet）或 'transformer'（Transformer）",
    ),
    _K(
        "denoiser.prediction_type",
        "str",
        "what it predicts: epsilon, v_prediction, flow",
        "它预测什么：epsilon（噪声 ε）、v_prediction（v）、flow（速度）",
    ),
    _K(
        "denoiser.latents",
        "(S+1, c, h, w)",
        "x_t entering each step, then the final latents (S entries without a decode); "
        "Flux's 2x2-packed tokens unpacked to the latent grid",
        "每一步输入的 x_t，再加上最终的潜在表示（没有解码时只有 S 项）；"
        "Flux 按 2x2 打包的标记已解包回潜在网格",
    ),
    _K(
        "denoiser.noise_pred_uncond",
        "(S, c, h, w)",
        "epsilon-hat of the unconditional branch",
        "无条件分支的预测噪声 ε̂",
        "diffusion+cfg",
        UNETS,
    ),
    _K(
        "denoiser.noise_pred_text",
        "(S, c, h, w)",
        "epsilon-hat given the prompt",
        "给定提示词时的预测噪声 ε̂",
        "diffusion",
        UNETS,
    ),
    _K(
        "denoiser.noise_pred",
        "(S, c, h, w)",
        "guided epsilon-hat the scheduler used",
        "调度器用到的、经过引导的预测噪声 ε̂",
        "diffusion",
        UNETS,
    ),
    _K(
        "denoiser.velocity_uncond",
        "(S, c, h, w)",
        "velocity v-hat = noise - x0 of the unconditional branch",
        "无条件分支的速度 v̂ = 噪声 - x0",
        "flow+cfg",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.velocity_text",
        "(S, c, h, w)",
        "velocity v-hat given the prompt",
        "给定提示词时的速度 v̂",
        "flow",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.velocity",
        "(S, c, h, w)",
        "guided velocity the scheduler used: x_next = x_t + (sigma_next - sigma) v",
        "调度器用到的、经过引导的速度：x_next = x_t + (σ_next - σ) v",
        "flow",
        TRANSFORMERS,
    ),
    _K(
        "denoiser.pred_original_sample",
        "(S, c, h, w)",
        "x0-hat: the clean latent it implies (flow: x_t - sigma v)",
        "x̂0：它的预测所对应的干净潜在表示（流匹配：x_t - σ v）",
    ),
    _K(
        "denoiser.guidance",
        "float",
        "the guidance scale the denoiser reads as an embedding (guidance-distilled Flux): "
        "no unconditional branch runs",
        "去噪网络以嵌入形式读入的引导系数（经过引导蒸馏的 Flux）：不运行无条件分支",
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
        "每个标记一张注意力图，对各注意力头和 attention.aggregate_layers 中的各层取平均"
        "（较粗的层用双三次插值放大）；每个图像位置的一行在 L 个文本标记上加起来等于 1"
        "（SD3/Flux：图像的查询对文本的键，只在文本上做 softmax）；"
        "(h_a, w_a)：潜在网格（UNet）或 Transformer 的图块网格",
        "attention",
    ),
    _K(
        "attention.text_sequence",
        "dict[str, (start, stop)]",
        "which rows of the maps come from which tokenizer",
        "注意力图的哪些行来自哪个分词器",
        "attention",
    ),
    _K(
        "attention.text_share",
        "(S, h_a, w_a)",
        "joint attention: the share of each image token's attention (softmax over text and "
        "image keys) that goes to the text; the rest reads the image itself",
        "联合注意力：每个图像标记的注意力（在文本和图像的键上做 softmax）中分给文本的份额；"
        "其余的读取图像本身",
        "attention+text_share",
        TRANSFORMERS,
    ),
    _K(
        "attention.image_to_text_maps",
        "(S, L, h_a, w_a)",
        "joint attention the other way: where each text token's query reads in the image "
        "(softmax over the image keys only)",
        "反方向的联合注意力：每个文本标记的查询在图像的哪里读取（只在图像的键上做 softmax）",
        "attention+image_to_text",
        TRANSFORMERS,
    ),
    _K(
        "attention.layers",
        "list[str]",
        "module paths of the text-attention layers",
        "关注文本的注意力层的模块路径",
        "attention",
    ),
    _K(
        "attention.n_layers",
        "int",
        "how many layers attend to the text",
        "有多少层关注文本",
        "attention",
    ),
    _K(
        "attention.aggregate_layers",
        "list[str]",
        "the layers attention.maps averages: sdviz.attention.default_aggregate_layers for a "
        "UNet (measured best at finding the words' objects), every joint-attention layer for "
        "SD3 and Flux",
        "attention.maps 取平均的那些层：UNet 用 sdviz.attention.default_aggregate_layers"
        "（实测最能找到词所指的物体），SD3 和 Flux 用每一个联合注意力层",
        "attention",
    ),
    _K(
        LAYER_PREFIX + "<layer>",
        "(S, L, h_l, w_l) | (S, heads, L, h_l, w_l)",
        "one selected layer's maps (per head with attention_heads=True)",
        "一个选中的层自己的注意力图（attention_heads=True 时每个注意力头一张）",
        "layers",
    ),
    # -- VAE -----------------------------------------------------------------------------
    _K(
        "vae.scaling_factor",
        "float",
        "latent scale: the denoiser works on z * this",
        "潜在缩放系数：去噪网络处理的是 z * 这个数",
    ),
    _K(
        "vae.shift_factor",
        "float",
        "latent shift: the denoiser works on (z - shift) * scale",
        "潜在偏移：去噪网络处理的是 (z - shift) * scale",
        families=TRANSFORMERS,
    ),
    _K(
        "vae.downsampling_factor",
        "int",
        "pixels per latent cell (H = h * this)",
        "一个潜在格子的边长有几个像素（H = h * 这个数）",
    ),
    _K("vae.image", "(3, H, W) in [0, 1]", "the decoded image", "解码出的图像", "decoded"),
    _K(
        "vae.preview_coefficients",
        "(c+1, 3)",
        "least-squares latent->RGB map",
        "用最小二乘拟合的线性映射：潜在表示 → RGB",
        "decoded",
    ),
)

TABLE: dict[str, Key] = {k.name: k for k in KEYS}

MEANINGS = Texts(__name__, {k.name: (k.meaning, k.meaning_zh) for k in KEYS})
"""Each key's meaning in every course language: `MEANINGS("vae.image", "zh")`."""


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
