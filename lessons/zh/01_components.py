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
# # 第 1 课：Stable Diffusion 的组成部分
#
# 《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*，Jay Alammar，2022）一开头就给出一个出人意料的事实：Stable Diffusion 不是一个模型，而是**由几个模型协同工作的系统**：
#
# 1. **文本编码器**（text encoder，即 CLIP 的文本部分）把提示词（prompt）变成一串标记向量（token vectors）；
# 2. **图像信息创建者**（image information creator）——一个 **UNet** 加一个**调度器**（scheduler）——从随机噪声出发，在这些标记向量的引导下一步一步去除噪声。
# 它在一个经过压缩的小**潜在空间**（latent space）里工作，而不是直接处理像素：这正是 Stable Diffusion 快的原因；
# 3. **图像解码器**（image decoder）——**变分自动编码器**（variational autoencoder，VAE）的解码器——用最后的潜在表示（latents）画出最终的图像。
#
# 本课打开一个真实的 `diffusers.StableDiffusionPipeline`，在里面找到这三个模型，并跟随一次生成依次经过它们。
# 下面的每个数字都由代码从你加载的模型中打印出来：用 Stable Diffusion 1.5 运行同一个笔记本，这些数字就会变成文章里的数字（77×768 的文本嵌入、4×64×64 的潜在表示、3×512×512 的图像）。

# %% [markdown]
# ## 准备
#
# 只有一个单元用来选择模型。
# 默认是 **sdviz-mini**：一个随 sdviz 一起发布的微型 Stable Diffusion。
# 它有与真实模型相同的三种网络、相同的类，在 *ShapesWorld*（带描述（caption）的彩色形状）上从零训练，小到能在笔记本电脑的 CPU 上运行。
# `sdviz.course.setup` 加载它，并返回后面每个单元都要用的设置：去噪（denoising）步数、初始噪声的随机种子（seed）、提示词，以及模型推荐的引导系数（guidance scale，第 7 课讲解）。
#
# 代码单元与英文版逐字相同（包括其中的英文注释和代码自己打印的英文句子），这样测试就能保证两个版本始终同步。
# sdviz 自己写的内容——图、交互控件、课程设置、`Run` 的键表、探针的表格和警告——都是中文的。
# 提示词也保持英文：sdviz-mini 只学过 ShapesWorld 的英文描述，Stable Diffusion 1.x 的 CLIP 分词器和文本编码器也只在英文图文对上训练过，所以中文提示词它们看不懂——真正使用 SD 1.x 的中文用户也是用英文写提示词的。

# %%
# Setup — the only cell you need to edit. MODEL = None loads the embedded sdviz-mini model
# (or the one the SDVIZ_MODEL environment variable names): offline, a few MB, about a
# second per image on a laptop CPU. A hub id loads the real thing (online the first time,
# ~4 GB; use a CUDA GPU: sdviz then picks float16 by itself), a path a local diffusers folder:
# MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# %matplotlib inline
import sdviz.course

MODEL = None
lesson = sdviz.course.setup(MODEL)  # the pipeline; the steps, seed, prompt and guidance
pipe = lesson.pipe  # the diffusers pipeline every cell below uses
lesson

# %% [markdown]
# ## 三个模型和一个调度器
#
# diffusers 的流水线（pipeline）是一个容器：它的 `components` 就是各个部分。
# 有些是神经网络（带有训练中学到的参数），有些不是（分词器（tokenizer）是固定的词表（vocabulary），调度器是一个公式）。每个部分、它的类和参数量如下：

# %%
sdviz.course.components_table(pipe)

# %% [markdown]
# UNet 是其中最大的网络，远远超过其他部分——在 Stable Diffusion 1.5 里，约十亿个参数中它占了 8.6 亿——而且每个去噪步都要运行一次（使用无分类器引导（classifier-free guidance）时其实是两次：见第 7 课）。
# 文本编码器每个提示词运行一次，VAE 解码器每张图像运行一次。
#
# 下面用所加载模型的真实形状画出整个系统：

# %%
sdviz.figures.components(pipe)

# %% [markdown]
# ## 跟随一次生成
#
# `sdviz.generate` 运行流水线的方式与 `pipe(prompt)` 完全相同，同时对它进行*追踪*：记录每个阶段的输入和输出。
# 结果是一个 `Run`，即一个张量字典；把它打印出来，就会列出记录下的所有内容及其形状。

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
run

# %% [markdown]
# ### 1. 文本编码器：提示词 → 标记向量
#
# 分词器把提示词切分成标记（token），并查出它们的 ID；这个列表被填充（padding）到固定长度（Stable Diffusion 中为 77）。
# 文本编码器把每个标记 ID 变成一个向量，这个向量取决于整个句子。

# %%
n = run["tokenizer.n_tokens"]
print("tokens:", run.words)
print("ids:   ", run["tokenizer.input_ids"][:n].tolist())
print(f"{n} real tokens, padded to {run['tokenizer.input_ids'].shape[0]}")
print(
    "token ids",
    tuple(run["tokenizer.input_ids"].shape),
    "→ embeddings",
    tuple(run["text_encoder.prompt_embeds"].shape),
)

# %% [markdown]
# ### 2. UNet + 调度器：噪声 → 潜在表示，一步一步
#
# 图像信息创建者从潜在空间中的纯高斯噪声出发，每一步运行一次 UNet。
# 每一步，UNet 都*预测*其输入中的*噪声*；调度器用这个预测算出一个噪声稍少的潜在表示。
# 这次运行记录了进入每一步的潜在表示，以及最终的潜在表示：

# %%
latents = run["denoiser.latents"]  # (steps + 1, channels, height, width)
print("latents through the loop:", tuple(latents.shape))
print("noise predictions:       ", tuple(run["denoiser.noise_pred"].shape))
print("timesteps visited:       ", run["scheduler.step_timestep"].int().tolist())

# %% [markdown]
# UNet 是一个带跳跃连接（skip connection）的编码器–解码器：它把潜在表示缩小到较粗的分辨率，再把它放大回来。
# 除了潜在表示，还有两样东西从外部进入：时间步（timestep）t（表示输入里有多少噪声），它被变成一个向量，加到每个 ResNet 块里；以及文本的标记向量，由各个块中的交叉注意力（cross-attention）层读取。
# 下图由所加载模型自己的模块画出：

# %%
sdviz.figures.unet_diagram(pipe)

# %% [markdown]
# ### 3. VAE 解码器：潜在表示 → 像素
#
# 直到最后，VAE 解码器才把最后的潜在表示变成图像。
# 每个潜在单元对应 `pipe.vae_scale_factor` × `pipe.vae_scale_factor` 个像素的一个方块。

# %%
image, final = run["vae.image"], latents[-1]
print("final latents", tuple(final.shape), "→ image", tuple(image.shape))
print(
    f"each latent cell covers {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels; "
    f"the image has {image.numel() / final.numel():.0f}× more numbers than the latents"
)

# %% [markdown]
# 下面把这次生成画成一条胶片，取其中的几步（从 0 开始计数）。
# 前两行是含噪潜在表示（noisy latents）x_t：一行直接映射成颜色（四个潜在通道（latent channel）的线性预览（linear preview）：噪声看起来就是噪声），一行由 VAE 解码器画出——它只在 ShapesWorld 上训练过，所以连纯噪声也画成 ShapesWorld 风格的碎片。
# 最下面一行是 UNet 在该步对完成图像的猜测（预测的干净图像 x̂0，第 4 课）。
# `sdviz.probes.step_images` 运行 VAE 解码器，图只负责画。

# %%
images = sdviz.probes.step_images(run, pipe)
sdviz.figures.denoising_filmstrip(run, images=images)

# %% [markdown]
# ## 真正的模型有多大？sdviz-mini 与 Stable Diffusion 1.5 对比
#
# sdviz-mini 有 Stable Diffusion 的各个部分和各个类，但没有它的规模。
# sdviz 可以在 PyTorch 的 *meta* 设备上构建 SD 1.5 公开的架构——每一层都有形状，但不占内存、没有权重、什么也不下载——于是两者可以逐个部分比较：

# %%
import torch

from sdviz.builder import count_parameters

sd15 = sdviz.probes.sd_skeleton("1.5")  # its modules on the meta device: no memory
sdviz.course.components_table(pipe, sd15, labels=["parameters here", "in SD 1.5"])

# %%
print(
    f"SD 1.5's UNet has {count_parameters(sd15.unet) / count_parameters(pipe.unet):,.0f}× "
    "the parameters of the loaded model's UNet,"
)
print(
    f"its text encoder {count_parameters(sd15.text_encoder) / count_parameters(pipe.text_encoder):,.0f}×, "
    f"its VAE {count_parameters(sd15.vae) / count_parameters(pipe.vae):,.0f}×."
)
mini_total = (
    count_parameters(pipe.unet) + count_parameters(pipe.text_encoder) + count_parameters(pipe.vae)
)
sd15_total = (
    count_parameters(sd15.unet) + count_parameters(sd15.text_encoder) + count_parameters(sd15.vae)
)
print(f"the three networks together: {mini_total:,} parameters here,")
print(f"{sd15_total:,} in SD 1.5 (about one billion, as the article says)")

# %% [markdown]
# ### 6300 万还是 1.23 亿？数一数文章里的文本编码器
#
# 文章说 ClipText 有 6300 万（63M）个参数；上表给出 SD 1.5 的文本编码器有 1.23 亿（123M）个。
# 两者都对，说的是不同的模型。
# 63M 是 CLIP 论文中*基础*文本 Transformer 的大小（Radford 等，2021，"Learning Transferable Visual Models From Natural Language Supervision"，§2.4："a 63M-parameter 12-layer 512-wide model with 8 attention heads"）。
# Stable Diffusion 1.x 用的是 CLIP **ViT-L/14** 的文本塔，同样 12 层，但宽 768（12 个注意力头）——而一层的权重随宽度的平方增长。
# 下面在 meta 设备上用 `transformers.CLIPTextModel` 把两者都构建出来，数一数：

# %%
import transformers

with torch.device("meta"):
    clip_paper_base = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12
        )
    )
sdviz.course.table(
    {
        "text Transformer": ["CLIP paper's base", "CLIP ViT-L/14 (SD 1.x)"],
        "layers": [
            clip_paper_base.config.num_hidden_layers,
            sd15.text_encoder.config.num_hidden_layers,
        ],
        "width": [clip_paper_base.config.hidden_size, sd15.text_encoder.config.hidden_size],
        "heads": [
            clip_paper_base.config.num_attention_heads,
            sd15.text_encoder.config.num_attention_heads,
        ],
        "parameters": [
            count_parameters(clip_paper_base),
            count_parameters(sd15.text_encoder),
        ],
    },
    formats={"parameters": ","},
    notes="both: a 49,408-token vocabulary, 77 positions; width: numbers per token vector",
)

# %% [markdown]
# ### 数据与算力
#
# 训练上的差距还要更大。
# Stable Diffusion 1.x 从 **LAION-2B-en** 学习，这是从网上收集的 23.2 亿对英文图像–描述（Schuhmann 等，2022，"LAION-5B"）：SD v1-1 先在其上以 256×256 训练了 237,000 步，再在 LAION 的高分辨率图像（1.7 亿张，至少 1024 像素）上以 512×512 训练了 194,000 步；v1-2 到 v1-5 在按美学评分筛选的 LAION-2B-en 子集（"laion-improved-aesthetics"、"laion-aesthetics v2 5+"）上继续以 512×512 训练，v1-5 训练了 595,000 步。
# 模型卡统计 v1 各模型约用了 **150,000 个 A100 GPU 小时**（Stable Diffusion v1 模型卡，"Environmental Impact"）。
# sdviz-mini 的数字来自它自己的文件夹：

# %%
import json

from sdviz.training.config import FULL

record = json.loads((sdviz.pipeline.EMBEDDED_MODEL / "training_record.json").read_text())
minutes = record["total_seconds"] / 60
laion_2b_en, sd_gpu_hours = 2_320_000_000, 150_000  # LAION-5B paper; SD v1 model card
print(f"sdviz-mini: {FULL.images:,} ShapesWorld images of 64×64 pixels, made by code")
print(f"            trained in {minutes:.1f} minutes on a 2-core CPU, all stages, no GPU")
print(f"SD 1.x:     {laion_2b_en / FULL.images:,.0f}× more training images, at up to 512×512")
print(
    f"            {sd_gpu_hours / (minutes / 60):,.0f}× more hours, each on a data-centre GPU"
    " instead of two CPU cores"
)

# %% [markdown]
# ## 训练数据决定它画什么
#
# sdviz-mini 见过的所有东西都长这样——ShapesWorld：浅色纯背景上的一到三个彩色形状，每张图都配有一段由代码写成的描述：

# %%
samples = sdviz.course.examples(sdviz.shapes.ShapesWorld(), 6)
print(samples)  # index: caption
sdviz.figures.filmstrip(samples.images, ["0", "1", "2", "3", "4", "5"])

# %% [markdown]
# 所以它能画的也就只有这些。
# 向它要它的世界之外的东西，sdviz 会在生成之前就说明（单元下方的警告）：它从没见过的词会被拆成模型从未学过的字母。
# 图像仍然会画出来——一张 ShapesWorld 图像，由它唯一认识的词 "a" 引导。
# 把它和单独的提示词 "a" 放在一起比较，就会发现 "photo" 和 "cat" 的字母几乎没带来什么变化。
# （Stable Diffusion 见过数以百万计带描述的猫的照片；把 `MODEL` 设为它，就不会有提示，而会画出一只猫。）

# %%
cat = sdviz.generate(
    pipe, "a photo of a cat", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
just_a = sdviz.generate(
    pipe, "a", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("the cat prompt's tokens:", cat.words)
print(
    "mean |difference| of the cat image to the image of 'a':",
    f"{float((cat['vae.image'] - just_a['vae.image']).abs().mean()):.3f};",
    f"to the lesson's prompt's: {float((cat['vae.image'] - run['vae.image']).abs().mean()):.3f}",
)
print("(pixel values lie in [0, 1]; 0 is the same picture)")
sdviz.figures.filmstrip(
    torch.stack([run["vae.image"], cat["vae.image"], just_a["vae.image"]]),
    ["the lesson's prompt", "a photo of a cat", "a"],
)

# %% [markdown]
# ## Stable Diffusion 从何而来
#
# 文章讲解的是 2022 年 8 月发布的模型，它出现在飞速发展的两年之末：
#
# - **DDPM**（去噪扩散概率模型；Ho、Jain & Abbeel 2020，"Denoising Diffusion Probabilistic Models"）表明：一个只被训练来一步一步去除高斯噪声的网络，可以生成高质量的图像——它直接在像素上工作，要走 1,000 步，所以很慢。
# - 2022 年春，两个基于它的文生图系统相继出现：**DALL·E 2**（Ramesh 等，2022，"Hierarchical Text-Conditional Image Generation with CLIP Latents"），它把 CLIP 文本嵌入转换成 CLIP 图像嵌入，再由此扩散出像素；以及 **Imagen**（Saharia 等，2022，"Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding"），它让一个像素空间的级联模型以冻结的 T5-XXL 语言模型为条件。
# Imagen 的关键发现是：增大**文本编码器**，比增大图像 UNet 更能提高图像的保真度和图文一致性。
# - **潜在扩散**（latent diffusion；Rombach 等，2022，"High-Resolution Image Synthesis with Latent Diffusion Models"）把扩散移到 VAE 的小潜在空间中进行，并让 UNet 通过交叉注意力读取文本。
# 它在 LAION 上训练，以 Stable Diffusion 之名公开发布，使用冻结的 CLIP ViT-L/14 文本编码器（其模型卡写道："as suggested in the Imagen paper"）——这就是本系列课程讲解的系统。

# %% [markdown]
# ## 动手试试
#
# 输入一个提示词：下面的输入框会在你输入时显示文本编码器将收到的标记和 ID（第 6 课讲解）。
# 按 **Generate**（生成）按钮，让整个系统在这个提示词上运行。
# 这个模型认识 ShapesWorld 的词——形状（circle、square、triangle、star）、颜色、大小和位置。
# 请用英文输入：它只认识英文词。

# %%
explorer = sdviz.widgets.PromptExplorer(
    pipe, "a small yellow star at the top", steps=lesson.steps, guidance_scale=lesson.guidance
)
explorer.generate()
explorer

# %% [markdown]
# ## 自测
#
# 先自己回答每个问题，再运行它下面的单元。
#
# **1.** 对于一个提示词，文本编码器交给 UNet 多少个数——这里是多少，Stable Diffusion 1.5 里又是多少（文章：77 个 768 维的标记向量）？

# %%
print("here:  ", tuple(run["text_encoder.prompt_embeds"].shape), "(tokens, numbers per token)")
print("SD 1.5:", (sd15.tokenizer.model_max_length, sd15.text_encoder.config.hidden_size))

# %% [markdown]
# **2.** 哪个网络占参数的比例最大，这里和 SD 1.5 里分别如何——在微型模型中它的占比是更大还是更小？

# %%
print(f"UNet's share of the parameters here:   {count_parameters(pipe.unet) / mini_total:.0%}")
print(f"UNet's share of the parameters, SD 1.5: {count_parameters(sd15.unet) / sd15_total:.0%}")

# %% [markdown]
# **3.** 用 "a photo of a dog" 代替 "a photo of a cat"：会得到一张截然不同的图，还是几乎相同的图？（作为对比，猫的图像与本课提示词的图像之间的差异已在上面打印出来。）

# %%
dog = sdviz.generate(
    pipe, "a photo of a dog", steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print(
    "mean |difference| dog vs cat:",
    f"{float((dog['vae.image'] - cat['vae.image']).abs().mean()):.3f}",
)

# %% [markdown]
# ## 小结
#
# - Stable Diffusion 是围绕一个调度器的三个网络：**CLIP 文本编码器**（提示词 → 标记向量）、**UNet** 及其**调度器**（噪声 → 干净的潜在表示，每次一步，由文本引导），以及 **VAE 解码器**（潜在表示 → 像素）。
# - 循环在小小的潜在空间中运行；像素只在最后才出现。
# - UNet 拥有大部分参数，并且每一步都要运行：时间主要花在它身上。
# - sdviz-mini 是同一个系统，每个网络都小 100–600 倍，在一个形状世界上用 CPU 训练不到三小时；SD 1.5 约有十亿个参数，从数十亿张网络图像中学习，用了约 150,000 个 GPU 小时。
# 文章里的 63M 是 CLIP 论文的基础文本编码器；SD 1.x 用的是 CLIP ViT-L/14 的文本编码器，1.23 亿个参数。
# - 一个模型能画什么，取决于它的训练数据给它看过什么。
#
# ### 练习
#
# 1. 用你自己的提示词生成（`sdviz.generate(pipe, "a small green star", steps=lesson.steps)`），并打印同样的形状：哪些变了，哪些保持不变？为什么标记列表总是一样长？
# 2. 先用 `steps=5`、再用 `steps=50` 生成。UNet 的调用次数如何变化？图像又如何变化？
# 3. 如果你有 GPU 并且能上网，把 `MODEL` 设为 Stable Diffusion 1.5 的 hub ID，把打印出的每个数字与文章中的数字进行比较。
