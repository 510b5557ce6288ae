# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 第 10 课：从 SD 1.5 到 SDXL、SD3 和 Flux
#
# 文章里的图景——**文本编码器 → 在潜在表示上工作的去噪网络 + 调度器 → VAE 解码器**——仍然描述着今天人们使用的模型。
# 变化发生在这些方框内部：
#
# | 模型 | 年份 | 文本编码器 | 去噪网络 | 采样 |
# |---|---|---|---|---|
# | Stable Diffusion 1.5（Rombach 等，2022） | 2022 | CLIP-L | UNet | 扩散（ε），CFG |
# | SDXL（Podell 等，2023） | 2023 | CLIP-L + CLIP-G | 更大的 UNet | 扩散（ε），CFG |
# | Stable Diffusion 3（Esser 等，2024） | 2024 | CLIP-L + CLIP-G + T5-XXL | MMDiT Transformer | 流匹配（v），CFG |
# | FLUX.1 [dev]（Black Forest Labs，2024） | 2024 | CLIP-L + T5-XXL | 双流/单流 Transformer | 流匹配（v），引导蒸馏 |
#
# 本课把这四个模型并排比较两次：先按它们**公开的配置**（在 PyTorch 的 `meta` 设备上构建：每一层都有真实的形状，没有权重，不占内存），再作为**被追踪的生成**，用的是你从第 1 课起就一直在用的同一个 `sdviz.generate`，这样你就能看到较新的模型家族新增的每一项记录。
#
# **关于这些追踪。** 在 `MODEL = None` 时，Stable Diffusion 一栏是 sdviz-mini（训练过的：它的图像是真正的图像），而 SDXL、SD3 和 Flux 是*用代码构建、权重随机的微型流水线*（`sdviz.builder.tiny_sdxl_pipeline` 等，64 像素，每个约一百万个参数（parameters））。
# 它们的图像是噪声，它们的注意力图（attention map）也说明不了词在哪里；它们展示的是每个家族记录的**结构和形状**，这些才是真实的。
# 把 `MODEL` 设为一个真实的 SDXL、SD3 或 Flux 文件夹，那个家族被追踪的单元就会改在真实模型上运行（需要 CUDA GPU：SDXL 有 3.5 B 个参数，带 T5 的 SD3-medium 有 7.7 B，Flux-dev 有 17 B；B 即十亿）；这时由 sdviz-mini 代替 Stable Diffusion。

# %% [markdown]
# ## 准备
#
# 下面的代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词（prompt）也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述（caption），Stable Diffusion 1.x 的 CLIP 分词器（tokenizer）和文本编码器（text encoder）也只在英文图文对上训练过，看不懂中文提示词，真正使用 SD 1.x 的用户同样得用英文写提示词。

# %%
# Setup — the only cell you need to edit. MODEL = None loads the embedded sdviz-mini model
# (or the one the SDVIZ_MODEL environment variable names): offline, a few MB, about a
# second per image on a laptop CPU. A hub id loads the real thing (online the first time;
# use a CUDA GPU: sdviz then picks float16 by itself), a path a local diffusers folder —
# here also an SDXL, SD3 or Flux folder, which then replaces that family's tiny pipeline:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# MODEL = "/models/stable-diffusion-3-medium-diffusers"
# %matplotlib inline
import sdviz.course

MODEL = None
lesson = sdviz.course.setup(MODEL)  # the pipeline; the steps, seed, prompt and guidance
pipe = lesson.pipe  # the diffusers pipeline of its family; the others are built below
lesson

# %% [markdown]
# ## 1. 按公开配置构建的四个模型
#
# `sdviz.architectures` 保存了每个模型公开的 `config.json` 文件，并在 `meta` 设备上构建网络，所以下面的每个计数都是真实模型的，由真实的 diffusers / transformers 类读出（几秒钟，不用下载）。
# 每行一项事实，每列一个模型。

# %%
import torch

from sdviz.probes import families as fam

sdviz.course.table(
    fam.families_table(),
    title="The published architectures, built on the meta device",
    notes=[
        "B params: billions of parameters. Text tokens L: the token positions the denoiser's",
        "attention reads per prompt. Attention grid: the image positions each text-attention",
        "layer sees at the native size (a transformer sees 2x2 patches of the latent).",
        "Guidance: classifier-free (two denoiser branches per step) or distilled (one).",
    ],
)

# %% [markdown]
# 有三样东西变大了。
# **文本这一侧**：从一个 123 M（1.23 亿）参数的 CLIP，到 0.8 B（SDXL）和约 5 B（SD3、Flux：单是 T5-XXL 的编码器（encoder）就有 4.76 B，比 SD3 自己的去噪网络（denoiser）还大）。
# **去噪网络**：0.86 B → 2.6 B（SDXL 的 UNet）→ 2.0 B（SD3-medium 的 Transformer）→ 11.9 B（Flux）。
# **潜在表示**（latents）：4 个通道（channel）→ SD3 和 Flux 的 16 个通道，它们的变分自动编码器（VAE）在每个潜在单元里保留更多细节。
# VAE 本身一直是约 84 M 个参数。
# 每个文本编码器的细节：

# %%
sdviz.course.table(
    fam.text_encoders_table(),
    title="Every text encoder of the four models",
    formats={"parameters (M)": ",.1f"},
    notes=[
        "parameters (M): millions; width d: the size of each token vector; tokens L: the",
        "padded length per prompt. Pooled: one vector for the whole prompt (CLIP's output",
        "at the end token, projected), added to the timestep embedding, not attended to.",
    ],
)

# %% [markdown]
# ## 2. 变了什么，为什么
#
# **更大的文本编码器。** Imagen（Saharia 等，2022）发现，增大*文本*编码器比增大图像模型更能提高图像遵循提示词的程度，并使用了冻结的 T5-XXL。
# SDXL 在 CLIP-L 旁边加上 OpenCLIP 的 ViT-bigG（CLIP-G），并把两者的标记向量沿通道拼接（每个标记（token）768 + 1280 = 2048）；它的池化向量（pooled vector）以及图像的尺寸和裁剪（`time_ids`）与时间步（timestep）一同进入。
# SD3 加上了 T5-XXL：它的 256 个标记接在 CLIP 的 77 个之后，组成一个长 333 的序列。
# Flux 只读取 T5 的 512 个标记，以及 CLIP-L 的池化向量。
#
# **联合注意力（joint attention）**（MMDiT，Esser 等，2024）。
# 在 SD 1.5 中，UNet 的图像位置*交叉*关注固定不变的文本向量。
# SD3 的 Transformer 保留两条流——文本和图像，各有自己的权重——并在两者之上运行**一个**注意力：每个图像标记的 softmax 同时覆盖文本标记*和*图像标记，而文本标记也在一个又一个块（block）中不断更新。
# 这个 softmax 中文本 → 图像的那部分，就是 sdviz 记录为逐词注意力图的东西，和交叉注意力（cross-attention）时一样。
#
# **Flux 的块。** Flux 先是 19 个*双流块*（double-stream block）（联合注意力，两套权重，和 SD3 一样），然后是 38 个*单流块*（single-stream block），在单流块里，文本和图像标记作为一个序列通过共享的权重。
# sdviz 从这两种块中都切出文本 → 图像的部分。
#
# **流匹配（flow matching）**，也称整流（rectified flow）（Liu 等，2022；Lipman 等，2023）。
# 这里不用 DDPM 那种弯曲的调度，x_t 沿一条直线从图像走向噪声：x_t = (1 − σ)·x0 + σ·ε，σ 从 1（纯噪声）到 0。
# 网络预测沿这条直线的**速度**（velocity）v = ε − x0，采样器（sampler）走 Euler 步 x ← x + (σ_next − σ)·v，而第 4 课的干净图像估计就是 x̂0 = x_t − σ·v。
# SD3 把 σ 向噪声大的一端*偏移*（shift 3）：大图像在那里需要更多的步。
#
# **引导蒸馏（guidance distillation）**（Meng 等，2023）。
# 无分类器引导（classifier-free guidance）（第 7 课）每一步运行两次去噪网络。
# 经过引导蒸馏的模型被训练成只用*一次*调用就给出引导后的预测，引导系数（guidance scale）g 作为一个输入，像时间步一样被嵌入。
# FLUX.1 [dev] 是蒸馏过的：没有无条件（unconditional）分支，g 是一个嵌入（embedding）。

# %% [markdown]
# ## 3. 用同一种方式追踪四个家族
#
# `fam.trace_families` 为每个家族追踪一次本课的提示词：已加载的流水线放在它所属家族的位置，其他每个家族各用一条权重随机的微型流水线（64 像素），全部使用本课的步数和随机种子（seed），各自使用其流水线自己的引导系数。

# %%
families = fam.trace_families(pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed)
sdviz.course.table(
    fam.records_table(families),
    title="What each family's Run records",
    notes=[
        "token lists: one per tokenizer, L tokens each (padding included). Text sequence: the",
        "(tokens, width) the denoiser attends over. latents: x_t at every step and the end.",
        "Shapes are the traced pipelines' (tiny ones are small); the names are the real ones.",
    ],
)

# %%
sdviz.figures.filmstrip(
    families.images(),
    families.labels(),
    title="The four final images: random weights draw noise (the records are what matter)",
)

# %%
sd = families["stable-diffusion"]
xl = families["stable-diffusion-xl"]
sd3 = families["stable-diffusion-3"]
flux = families["flux"]
pipes = families.pipes

# %% [markdown]
# ## 4. SDXL：两个文本编码器、一个池化向量和图像的尺寸
#
# 组件图现在有两个 CLIP 方框。
# 它们的标记向量按标记拼接；其他进入的东西写在 t 旁边：池化向量和尺寸/裁剪 ID。

# %%
sdviz.figures.components(pipes["stable-diffusion-xl"], xl)

# %%
sdviz.figures.tokens_and_embeddings(xl)

# %% [markdown]
# UNet 读取的拼接序列，就是两个编码器的标记向量并排放在一起，这里用 Run 自己的记录来验证：

# %%
joined = torch.cat([xl["text_encoder.prompt_embeds"], xl["text_encoder_2.prompt_embeds"]], -1)
print("CLIP-L tokens × width:", tuple(xl["text_encoder.prompt_embeds"].shape))
print("CLIP-G tokens × width:", tuple(xl["text_encoder_2.prompt_embeds"].shape))
print("the UNet's sequence:", tuple(xl["pipeline.prompt_embeds"].shape), "= both, joined:")
print(
    "  equal to torch.cat([CLIP-L, CLIP-G], -1):", torch.equal(joined, xl["pipeline.prompt_embeds"])
)
print(
    "pooled vector (enters with t, no attention map shows it):",
    tuple(xl["pipeline.pooled_prompt_embeds"].shape),
)
print("time_ids: original (h, w), crop top-left (y, x), target (h, w) in pixels:")
print("  ", xl["pipeline.add_time_ids"].int().tolist())

# %% [markdown]
# ## 5. SD3：三个标记列表、一个序列、联合注意力
#
# SD3 把提示词分词三次。
# 两个 CLIP 填满同样的 77 行（它们的向量沿通道拼接，再用零填充（padding）到 T5 的宽度）；T5 的标记接在后面。
# `attention.text_sequence` 说明逐词注意力图中的哪些行来自哪个分词器。

# %%
sdviz.figures.components(pipes["stable-diffusion-3"], sd3)

# %%
sdviz.figures.tokens_and_embeddings(sd3)

# %%
print("rows of the text sequence per tokenizer (start, stop):", sd3["attention.text_sequence"])
print(
    "per-word joint-attention maps (steps, text tokens, h, w):", tuple(sd3["attention.maps"].shape)
)
print("joint-attention layers averaged into them:", sd3["attention.n_layers"])

# %% [markdown]
# 联合注意力的逐词注意力图：对每个词，每个图像标记的注意力有多少份额落在它上面，在注意力头（head）、块和步上取平均（这里的 softmax 和交叉注意力一样，是在文本标记上做的；`text_share=True` 还会记录*完整*的文本 + 图像 softmax 中有多少落在文本上）。
# 这个图就是第 7 课的那个（它的标题注明了这里画的是联合注意力中图像 → 文本的部分）：不管是哪种注意力填充了 `attention.maps`，它都照样读取。
# 权重随机时，这些图是一个未训练网络的图案，每个词都差不多；在真正的 SD3 上，每个词的注意力图都会找到它的物体。

# %%
sdviz.figures.cross_attention(sd3, ["red", "circle", "blue", "square"])

# %% [markdown]
# 把每个块的每个注意力头都存下来是放不下的：下面是真实的 SD3-medium 在其原生的 1024 像素、28 步下的同样注意力图，按 sdviz 的方式取平均，与全部保留相比。

# %%
maps = sdviz.architectures.attention_map_shapes("sd3-medium")
print(f"SD3-medium: {maps.steps} steps × {maps.tokens} text tokens × {maps.h}×{maps.w} patches")
print(f"  averaged per word: {maps.maps_bytes() / 2**20:,.1f} MiB (float32)")
print(f"  every head of all {maps.layers} blocks: {maps.every_head_bytes() / 2**30:,.1f} GiB")

# %% [markdown]
# ## 6. 流匹配：σ、速度和 x̂0 = x_t − σ·v
#
# 调度图把两种方法都写成同一个 t 上的 x_t = a_t·x0 + b_t·ε（流匹配的 t 是 1000·σ）。
# 扩散的信号占比 a_t² 是 ᾱ_t；流匹配的是 (1 − σ)²。
# 它的噪声权重 b_t 就是 σ 本身，一条直线；它的信噪比（SNR）((1 − σ)/σ)² 在 σ = 1 时达到**零**：流匹配从纯噪声（pure noise）出发，而 SD 的调度停在 ᾱ > 0 处（第 2 课）。
# 图上的点标出每个采样器在哪里走步：偏移（shift）把 SD3 的步（偏移 3）挤向噪声大的一端。

# %%
sdviz.figures.noise_schedule(sd, xl, sd3, flux, labels=families.labels())

# %% [markdown]
# 流匹配的 Run 保存每一步的 σ（`scheduler.step_sigma`）和速度（`denoiser.velocity`，引导之后的），没有 ᾱ。
# 它的 x̂0 只要一行，这里验证一下：

# %%
x_t = sd3["denoiser.latents"][:-1]  # (steps, c, h, w): the input of each step
sigma = sd3["scheduler.step_sigma"].reshape(-1, 1, 1, 1)
x0_by_hand = x_t - sigma * sd3["denoiser.velocity"]
print("σ of the first steps (1 = pure noise):", sd3["scheduler.step_sigma"][:6].numpy().round(3))
print("shift s:", float(sd3["scheduler.shift"]))
print(
    "max |x_t − σ·v − recorded x̂0|:",
    float((x0_by_hand - sd3["denoiser.pred_original_sample"]).abs().max()),
)
print(
    "keys with alpha_bar in this Run:",
    "scheduler.step_alpha_bar" in sd3,
    "(flow matching has none)",
)

# %% [markdown]
# ## 7. Flux：一个分支，引导系数作为输入
#
# 下面是 FLUX.1 [dev] 本身的图，在 meta 设备上构建（真实的形状和参数量，没有权重）：CLIP 只给出它的池化向量（虚线），T5 的 512 个标记是文本序列，引导系数在 t 旁边进入，Transformer 的方框列出了它的 19 个双流块和 38 个单流块。
# 上面追踪的微型 Flux 有同样的部分，只有 2 + 2 个块和 64 像素。

# %%
sdviz.figures.components(sdviz.architectures.architecture_pipeline("flux-dev", device="meta"))

# %%
print("SD3 ran an unconditional branch:", sd3["pipeline.do_classifier_free_guidance"], end="; ")
print("it recorded velocity_uncond:", "denoiser.velocity_uncond" in sd3)
print("Flux ran an unconditional branch:", flux["pipeline.do_classifier_free_guidance"], end="; ")
print("it recorded velocity_uncond:", "denoiser.velocity_uncond" in flux)
print(
    "Flux's guidance scale, given to the transformer as an input:", float(flux["denoiser.guidance"])
)
flux_dev = sdviz.architectures.meta_component("flux-dev", "transformer").config
print(
    "FLUX.1-dev: double-stream blocks:",
    flux_dev.num_layers,
    "| single-stream blocks:",
    flux_dev.num_single_layers,
)
print("  distilled guidance (guidance_embeds):", flux_dev.guidance_embeds)

# %% [markdown]
# Flux 把每 2×2 个潜在单元打包成一个标记（16 个通道 × 4 = 64）；Run 会把它们拆开，所以 `denoiser.latents` 和注意力图都和其他家族一样具有图像的布局：

# %%
print("Flux latents (steps+1, c, h, w):", tuple(flux["denoiser.latents"].shape))
print(
    "Flux per-word maps (steps, T5 tokens, h, w) on the 2×2 token grid:",
    tuple(flux["attention.maps"].shape),
)

# %% [markdown]
# ## 8. 在同一个世界上训练两种设计：sdviz-mini 与 sdviz-mini-flow
#
# 上面的一切都是从配置和*随机*微型流水线来比较各个家族。要比较两种**设计**本身，需要两个在同一份数据上训练的模型。sdviz 带有两个：
#
# | | sdviz-mini | sdviz-mini-flow |
# |---|---|---|
# | 文本编码器、VAE | 它自己的 CLIP 和 VAE | **同样的文件**（从 sdviz-mini 借用） |
# | 去噪网络 | 带交叉注意力的 UNet（SD 1.x 的设计） | SD3 的 MMDiT Transformer：6 个块、4 个注意力头 × 32、2×2 的图块 |
# | 训练 | DDPM：预测噪声 ε（第 3 课） | 整流（rectified flow）：预测速度 v = ε − x0 |
# | 采样器 | DDIM | 沿 σ 的 Euler 法（FlowMatchEulerDiscreteScheduler） |
# | 数据 | ShapesWorld，64 像素 | 同样的图像和描述 |
#
# 两者都在一台 2 核 CPU 上从零训练了约两个小时（`sdviz train`、`sdviz train --flow`）。只有去噪网络和它的训练目标不同，所以下面的每一处差别都来自设计，而不是数据。两个模型都很小，只认识 ShapesWorld 的词：下面比较的是两个小模型，而不是 SD 1.5 和 SD3。

# %%
mini, flow = fam.embedded_twins()  # the two embedded models: UNet and MMDiT
print("UNet parameters (millions):", round(mini.unet.num_parameters() / 1e6, 2))
print("MMDiT transformer parameters (millions):", round(flow.transformer.num_parameters() / 1e6, 2))
print(
    "the same VAE weights:",
    torch.equal(mini.vae.decoder.conv_out.weight, flow.vae.decoder.conv_out.weight),
)
print(
    "recommended guidance scale g — UNet:",
    sdviz.pipeline.recommended(mini).guidance_scale,
    "| flow:",
    sdviz.pipeline.recommended(flow).guidance_scale,
)

# %% [markdown]
# ### 一个提示词、一个随机种子、两个去噪网络
#
# 用同一个随机种子，两条流水线抽到**同样的起始噪声**（两者的潜在表示都是 4×16×16），所以两张图像的差别只来自各自的去噪网络如何处理它。

# %%
duel_prompt = "a red circle to the left of a blue square"
unet_run = sdviz.generate(mini, duel_prompt, seed=lesson.seed)
flow_run = sdviz.generate(flow, duel_prompt, seed=lesson.seed)
print(
    "same starting noise x_T:",
    torch.equal(unet_run["denoiser.latents"][0], flow_run["denoiser.latents"][0]),
)
print(
    "what each denoiser predicts:",
    unet_run["denoiser.prediction_type"],
    "(the noise ε) |",
    flow_run["denoiser.prediction_type"],
    "(the velocity v)",
)
sdviz.figures.filmstrip(
    torch.stack([unet_run["vae.image"], flow_run["vae.image"]]),
    ["sdviz-mini (UNet, DDIM)", "sdviz-mini-flow (MMDiT, flow)"],
    f"{duel_prompt!r}, seed {lesson.seed}, {lesson.steps} steps",
)

# %% [markdown]
# ### 流的路径更直吗？
#
# 整流训练的是从图像到噪声的一条*直线*上的速度。如果模型学到了完全笔直的路径，它对干净图像的猜测 x̂0 = x_t − σ·v（第 6 节）在每一步都会相同，一步就够了。UNet 每一步也在猜 x̂0（第 4 课）。所以看 x̂0 移动了多远：`measure_straightness` 让几个提示词和随机种子以不同的步数通过两个模型，并相对于最终 x̂0 的大小测量：
#
# - 每一步**到最终 x̂0 的距离**；
# - **路径长度**：x̂0 每一步移动的距离之和（0 = 完全笔直的路径）；
# - **与 25 步的差距**：4 步或 8 步运行的结果离同一提示词、同一随机种子用 25 步采样的结果有多远，即少走几步的代价。
#
# 两个采样器的最后一步都几乎没有噪声（DDIM 在 t = 1，流在 σ = 0.001），那里的 x̂0 就是前一步落下的位置：曲线按构造在 0 结束，而 2 步的运行没有真正可测的移动，所以表格从 4 步开始。

# %%
paths = sdviz.probes.measure_straightness(
    {"sdviz-mini (UNet)": mini, "sdviz-mini-flow (MMDiT)": flow}, steps=[4, 8, 25]
)
sdviz.figures.path_straightness(paths)

# %%
sdviz.course.table(
    paths.table(),
    title="x̂0's path, mean over the prompts and seeds",
    formats={
        "sdviz-mini (UNet): path length": ".3f",
        "sdviz-mini (UNet): first guess": ".3f",
        "sdviz-mini (UNet): gap to 25 steps": ".3f",
        "sdviz-mini-flow (MMDiT): path length": ".3f",
        "sdviz-mini-flow (MMDiT): first guess": ".3f",
        "sdviz-mini-flow (MMDiT): gap to 25 steps": ".3f",
    },
    notes=[
        "path length: Σ‖x̂0_s − x̂0_s−1‖ / ‖x̂0_final‖ over the steps (0: x̂0 never moved).",
        "first guess: ‖x̂0_first − x̂0_final‖ / ‖x̂0_final‖, how far the one-step answer is from the last.",
        "gap to 25 steps: ‖final x̂0 with S steps − with 25 steps‖ / ‖with 25 steps‖ (0 at 25 steps).",
    ],
)

# %% [markdown]
# 读这张表。流的 x̂0 走得略少（25 步时路径长度 1.21，UNet 为 1.28；8 步时 0.91 对 1.02），4 步的运行离它自己 25 步的答案更近（差距 0.47 对 0.63）；但 8 步时 UNet 更近（0.17 对 0.22），两者的第一次猜测离最终 x̂0 也差不多远（25 步时 0.60 和 0.66）。**只做一轮整流，得不到笔直的路径**：网络学到的是一个含噪 x_t 背后所有可能图像的*平均*速度，而这个平均会弯曲（Liu et al. 2022 用第二轮 "reflow" 把它拉直，这里没有做）。图像条也一致：两行的第一次猜测都是一团位置正确、颜色正确的模糊，到第 3 步布局就定了。

# %% [markdown]
# ### 更少的步数：图像和基准测试
#
# 路径更直，就应该经得起更少的步数。同一提示词、同一随机种子，分别用 2、4 和 25 步，前三张是 UNet，后三张是流：

# %%
sdviz.figures.filmstrip(
    torch.stack(
        [
            sdviz.generate(mini, duel_prompt, steps=2, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            sdviz.generate(mini, duel_prompt, steps=4, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            unet_run["vae.image"],
            sdviz.generate(flow, duel_prompt, steps=2, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            sdviz.generate(flow, duel_prompt, steps=4, seed=lesson.seed, attention=None)[
                "vae.image"
            ],
            flow_run["vae.image"],
        ]
    ),
    [
        "UNet, 2 steps",
        "UNet, 4 steps",
        f"UNet, {lesson.steps} steps",
        "flow, 2 steps",
        "flow, 4 steps",
        f"flow, {lesson.steps} steps",
    ],
    "Fewer steps, same prompt and seed",
)

# %% [markdown]
# 一张图像说明不了什么。在 96 个单物体和 96 个双物体的提示词与随机种子上，从像素打分（第 8 课的 ShapesWorld 打分器：最大的物体是不是指名的那个？两个指名的物体都在吗？在指名的一侧吗？），25 步、各自测得的引导系数（模型卡，`benchmarks/mini_quality.py`）：
#
# | | sdviz-mini（UNet） | sdviz-mini-flow（MMDiT） |
# |---|---|---|
# | 引导系数 g（各自测得） | 2 | 1.5 |
# | 单物体正确 | 96.9% | 92.7% |
# | … 训练中从未出现的颜色-形状组合 | 100% | 58.3% |
# | 两个物体都正确 | 84.4% | 89.6% |
# | 左右位置正确 | 84.4% | 89.6% |
# | 每张图像的秒数（25 步，一个 CPU 线程） | 0.73 | 0.52 |
# | 4 / 8 / 16 步时两个物体都正确 | 44.8 / 70.8 / 82.3% | 78.1 / 88.5 / 89.6% |
#
# Transformer 摆放两个物体更好，每张图像也更快；UNet 画出未见过的颜色-形状组合要频繁得多。而且流需要的步数更少：它在 8 步时就达到了 25 步的质量，而 UNet 到 16 步还在提高（`python benchmarks/flow_vs_unet.py`，`benchmarks/results/2026-12-07-flow-vs-unet-cpu.txt`）。

# %% [markdown]
# ### 每个词落在哪里：交叉注意力与联合注意力
#
# UNet 的像素对 CLIP 的 77 个标记向量做*交叉*注意力；Transformer 的图像标记在**一个**联合注意力里同时关注文本和彼此，文本有 24 个位置（sdviz-mini-flow 的分词器截断在 24：它的描述更短）。sdviz 把联合注意力中文本 → 图像的部分记录成同样的逐词注意力图，所以两者可以并排：每一行是一个模型，同一个提示词，同一个随机种子。UNet 的图在它 16×16 的潜在网格上，Transformer 的在 8×8 的 2×2 图块网格上，都画在 64 像素的图像上。每一行有自己的颜色刻度。

# %%
sdviz.figures.attention_side_by_side(
    {"sdviz-mini (UNet)": unet_run, "sdviz-mini-flow (MMDiT)": flow_run},
    ["red", "circle", "blue", "square"],
)

# %% [markdown]
# 两行里名词都找到了自己的物体："circle" 照亮圆，"square" 照亮正方形。颜色词在两行里都很平，正如第 7 课对 UNet 的测量：在因果的文本编码器里，"red" 出现在 "circle" 之前，无法知道自己给哪个物体上色。Transformer 的图更粗（每个 2×2 图块一个值：整幅图 8×8，UNet 最精细的层是 16×16），每一行有自己的颜色刻度。

# %% [markdown]
# **这些小模型展示不了什么。** 两个模型都只有几百万参数，在 64 像素的彩色形状图上训练了两个小时，潜在表示为 4×16×16：一个 2×2 图块就是 8×8 像素，所以 Transformer 的注意力图很粗。它们的笔直程度和步数只说明*这两个*模型的表现；SD3 还在多得多的数据上训练，CLIP 旁边还有 T5，通常用偏移 3 采样 28 步。这个比较只在一个意义上是公平的：同样的世界、同样的 VAE、同样的文本编码器、同样的硬件和时长——只有去噪网络的设计和目标不同。

# %% [markdown]
# ## 自测
#
# 每个问题先回答，再运行它下面的单元。
#
# **1.** SD3-medium 的 Transformer 读取 333 个文本标记。它们来自哪些分词器，为什么不是 77 + 77 + 256？

# %%
sd3_facts = sdviz.architectures.architecture_facts("sd3-medium")
print("text tokens the denoiser reads:", sd3_facts.text_tokens)
print(
    "CLIP-L:",
    sd3_facts.text_encoders[0].tokens,
    "| CLIP-G:",
    sd3_facts.text_encoders[1].tokens,
    "(same rows, joined along channels)",
    "| T5:",
    sd3_facts.text_encoders[2].tokens,
)

# %% [markdown]
# **2.** 在 SD3 的最后一步，调度器走到 σ = 0。这时最终的潜在表示与该步的 x̂0 相比如何？

# %%
print(
    "σ at the last step:",
    round(float(sd3["scheduler.step_sigma"][-1]), 4),
    "→ next σ:",
    float(sd3["scheduler.sigmas"][-1]),
)
print(
    "final latents equal the last x̂0:",
    torch.allclose(
        sd3["denoiser.latents"][-1], sd3["denoiser.pred_original_sample"][-1], atol=1e-5
    ),
)

# %% [markdown]
# **3.** 每个家族每一步运行几个去噪网络分支？（两个：无分类器引导的无条件分支和文本分支，在一次调用中成批运行。）

# %%
sdviz.course.table(
    {
        "family": ["SD", "SDXL", "SD3", "Flux"],
        "branches per step (2: unconditional + text)": [
            1 + int(sd["pipeline.do_classifier_free_guidance"]),
            1 + int(xl["pipeline.do_classifier_free_guidance"]),
            1 + int(sd3["pipeline.do_classifier_free_guidance"]),
            1 + int(flux["pipeline.do_classifier_free_guidance"]),
        ],
    }
)

# %% [markdown]
# ## 小结
#
# - 文章的三个部分从 SD 1.5 到 Flux 一直成立；在它们内部，文本编码器从一个 CLIP（123 M）增长到 CLIP + T5-XXL（约 5 B），去噪网络从 0.86 B 的 UNet 增长到 2 B（SD3-medium）和 11.9 B（Flux-dev）的 Transformer，潜在表示从 4 个通道增长到 16 个。
# - SDXL 按标记拼接两个 CLIP，并在 t 旁边加入池化向量和尺寸/裁剪 ID：这些信息没有任何注意力图能显示出来。
# - SD3 把 CLIP 的 77 个标记和 T5 的 256 个标记连成一个序列，并同时在文本和图像上做注意力（联合注意力）；sdviz 逐词记录其中文本 → 图像的部分。
# - 流匹配让 x_t 沿直线移动：每一步一个 σ、一个速度 v，以及 x̂0 = x_t − σ·v；它从纯噪声（SNR 0）出发，偏移把步放在噪声所在的地方。
# - Flux 经过引导蒸馏：每一步只调用一次去噪网络，g 作为输入给出。
# - 微型流水线的权重是随机的：它们展示的是记录的结构和形状，而不是图像。把 `MODEL` 设为一个真实的文件夹，它所属家族的单元就在它上面运行。
# - sdviz-mini-flow 就是把 sdviz-mini 的去噪网络换成 SD3 的、在同一个世界、同一个 VAE 和 CLIP 上用整流训练的模型：它摆放两个物体更好（89.6% 对 84.4%），画未见过的颜色-形状组合更差（58% 对 100%），路径只是略直一些。
#
# ### 练习
#
# 1. 构建一个没有引导嵌入的 Flux（和 FLUX.1 [schnell] 一样）：`sdviz.builder.tiny_flux_pipeline(guidance_embeds=False)`，在 64 像素下追踪它（`height=width=sdviz.builder.TINY_RESOLUTION`），并把 `sorted(run.keys())` 与 `sorted(flux.keys())` 比较：哪一项记录不见了，为什么？
# 2. 画出 `sdviz.figures.noise_schedule(pipes["stable-diffusion-3"], steps=28)` 和 `sdviz.figures.noise_schedule(pipes["flux"], steps=28)`：在 1024 像素下，Flux 的动态偏移把它的步放在哪里，与 SD3 固定的偏移 3 相比如何？
# 3. 打印 `sdviz.architectures.architecture_facts("sdxl")`，找出交叉注意力层的数量（70）以及图像位置的网格大小：为什么 SDXL 的逐词注意力图所需的内存超过 SD3-medium，尽管它的文本更短？
