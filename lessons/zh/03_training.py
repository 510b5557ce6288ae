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
# # 第 3 课：训练噪声预测器
#
# 第 2 课展示了怎样一步就把图像加噪到任意时间步（timestep）。
# 《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*）由此得到一个数据集：**训练（training）样本是怎样制作的**。
#
# 1. 从训练数据中取一张图像（及其描述（caption））；
# 2. 随机选一个时间步 t，也就是一个噪声量；
# 3. 抽取高斯噪声（noise）ε，把它混进去：x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε；
# 4. **输入**是 (x_t, t, 描述)；**标签**是 ε，也就是噪声本身。
#
# UNet 被训练成从输入中预测 ε，以均方误差（MSE）作为损失（loss）（Ho 等，2020 的简化目标）。
# 在 Stable Diffusion 中，x_0 不是图像，而是它经变分自动编码器（VAE）得到的潜在表示（latent）（第 5 课），描述则通过交叉注意力（cross-attention）进入（第 7 课）。
# 在制作样本和一次现场训练之间，本课还会打开噪声预测器（noise predictor）：看它的块（block）如何排布、它怎样得知 t、文本从哪里进入。

# %% [markdown]
# ## 准备
#
# 代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词（prompt）和 ShapesWorld 的描述也保持英文：模型只认识英文——sdviz-mini 只学过 ShapesWorld 的英文描述，Stable Diffusion 1.x 的 CLIP 文本编码器也只在英文图文对上训练过，真正使用 SD 1.x 的中文用户同样要用英文写提示词。

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
# ## 制作训练样本
#
# 一个批次（batch）的 ShapesWorld 图像及其描述，先编码成潜在表示，再各自用自己的噪声加噪到一个随机的时间步：

# %%
import torch

side = pipe.unet.config.sample_size * pipe.vae_scale_factor
world = sdviz.shapes.ShapesWorld(size=side)
samples = sdviz.course.examples(world, 8)  # 8 pictures with their captions
z0 = sdviz.encode(pipe, samples.images)  # (8, c, h, w): the clean latents
gen = torch.Generator().manual_seed(lesson.seed)
t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(samples),), generator=gen)
noise = torch.randn(z0.shape, generator=gen)  # the labels
z_t = sdviz.add_noise(z0, t, pipe.scheduler, noise=noise)  # the inputs
print("inputs z_t", tuple(z_t.shape), "labels ε", tuple(noise.shape), "(examples, c, h, w)")
sdviz.course.table({"t (random amount of noise)": t, "caption": samples.captions})

# %% [markdown]
# 详细看一个样本：干净的潜在表示 z_0、噪声 ε（标签）、含噪潜在表示（noisy latent）z_t（输入）、所加载模型对它的预测，以及误差（error）。
# 右边的图衡量这个模型在各个时间步上的预测误差。
# `sdviz.probes.noise_predictions` 在这个样本上运行 UNet，图负责画出来：

# %%
first = sdviz.probes.noise_predictions(pipe, samples.images[0], 500, prompt=samples.captions[0])
sdviz.figures.training_example(first)

# %% [markdown]
# ## 噪声预测器的内部
#
# 文章把噪声预测器画成一个方框，它有三个输入：含噪潜在表示、时间步和文本（通过注意力），还有一个输出：预测噪声（predicted noise）。
# 方框里面是一个 UNet。
# 下面就是它，由所加载模型自己的模块画出：`sdviz.probes.unet_structure` 遍历 `pipe.unet` 的模块树和配置（什么也不运行），图画出它找到的内容。

# %%
structure = sdviz.probes.unet_structure(pipe)  # blocks, layers, skips: read from pipe.unet
sdviz.figures.unet_diagram(structure)

# %% [markdown]
# 怎样读这张图：
#
# - **U 形。** 含噪潜在表示从左上方进入（`conv_in` 增加它的通道（channel）数），然后*向下*走：每个下行块（down block）在一种分辨率上工作，它的下采样器（↓）把分辨率减半；中间块（mid block）在最粗的分辨率上工作；上行块（up block）再爬回去（↑），回到潜在表示本身的尺寸，在那里由 `conv_out` 把特征变成预测噪声，形状与输入相同。粗的层级看到整幅图（东西在哪里），细的层级看到细节（边缘）。
# - **跳跃连接**（skip connection，绿色虚线）。下行途中保存的每个张量，都会在相同的分辨率上与上行途中某个 ResNet 的输入拼接起来，这样细节就不必挤过瓶颈（Ronneberger 等，2015）。
# - 每个块里的**小方块**是它的层（layer），按运行顺序排列：ResNet 块（R，卷积）与注意力层交替出现：自注意力（self-attention，S）和交叉注意力（C）。
# - **t**（紫红色）和**文本**（橙色）从外部进入，就像文章画的那样：t 进入每个 ResNet，文本进入每个交叉注意力层。
#
# 同样的内容，写成一张表（每个块一行；"skips in"：它拼接多少个保存下来的张量）：

# %%
sdviz.course.table(structure.table(), title="The loaded UNet, block by block")

# %%
print(f"{structure.count('resnet')} ResNet blocks: each adds the timestep's embedding")
print(
    f"{structure.count('cross-attention')} cross-attention layers: each reads the "
    f"{structure.text_tokens} token vectors of the prompt, {structure.text_dim} numbers each"
)
print(f"{structure.count('self-attention')} self-attention layers: image positions read each other")
print(f"{len(structure.skips)} skip tensors cross the U")

# %% [markdown]
# ### 网络如何得知 t
#
# 同一套权重要在每个噪声水平（noise level）上去噪（denoising），所以必须告诉 UNet 它的输入含有多少噪声。
# 它以向量的形式得到 t，分三步（DDPM 的设计，Ho 等，2020）：
#
# 1. `time_proj` 把 t 写成一组频率按几何级数排列的正弦和余弦，即 Transformer 的位置编码（Vaswani 等，2017）：快的分量区分 t=0 和 t=1，慢的分量区分早和晚；
# 2. `time_embedding` 是一个小的多层感知机（MLP）（线性层、SiLU、线性层），它把这些正弦特征（sinusoidal features）变成一个向量，即时间步嵌入（timestep embedding）；它的权重与 UNet 的其余部分一起训练；
# 3. 每个 ResNet 块用自己的线性层（`time_emb_proj`）把这个向量投影成每个通道一个数，并把它加到自己的特征图上，每个像素都加。
#
# `sdviz.probes.timestep_embeddings` 在每个训练时间步上运行所加载 UNet 的第 1、2 步：

# %%
emb = sdviz.probes.timestep_embeddings(pipe)  # every t through the loaded time_proj and MLP
print("sinusoidal features", emb.features.shape, "(timesteps, features)")
print("MLP embeddings     ", emb.embeddings.shape, "(timesteps, embedding width)")
sdviz.figures.timestep_embedding(emb)

# %% [markdown]
# 子图 1 画出几个 t 的特征，每个 t 一行：快的列（每一半的左边）从 t=0 到 t=1 再到 t=2 都在变化，慢的列（右边）要经过数百步才会变化。
# 子图 2：两个时间步的原始特征有多相似，只取决于它们相隔多远（每条对角线上都是同样的条纹）。
# 子图 3 和 4：训练好的 MLP 把它们变成了什么。
# 余弦相似度（cosine similarity）：1 = 方向相同，0 = 无关，−1 = 方向相反。
# 下表把每个 t 与 t=0 进行比较：

# %%
last = pipe.scheduler.config.num_train_timesteps - 1  # the noisiest training timestep
ts = [1, 10, 100, 250, 500, 750, 850, last]
sdviz.course.table(
    {
        "t": ts,
        "ᾱ_t (signal's share of x_t's variance)": pipe.scheduler.alphas_cumprod[ts].numpy(),
        "cos(features of t, of t=0)": emb.cosines(0, ts, "features"),
        "cos(embedding of t, of t=0)": emb.cosines(0, ts),
    },
    title="How alike t and t=0 look to the network, before and after its MLP",
)

# %% [markdown]
# 原始特征只说明两个时间步相隔多远。
# MLP 学到了更多：对 sdviz-mini 来说，它的嵌入（embedding）在最初几百步里几乎不变，到了噪声最多的那些时间步才掉转方向，在那里它与 t=0 的余弦变为负值（上表最后几行），而 ᾱ_t 表明此时 x_t 中只剩百分之几还是信号。
# 网络把它的“时间感”花在任务变化最大的地方：从给一张图像去掉一些噪声，过渡到从几乎纯粹的噪声中创造出一张图像。
#
# 第 3 步在所加载模型的一个 ResNet 里：一个从嵌入宽度到该块通道数的线性映射。

# %%
first_resnet = pipe.unet.get_submodule(structure.layers("resnet")[0])
print(structure.layers("resnet")[0], "→ time_emb_proj:", first_resnet.time_emb_proj)

# %% [markdown]
# ### 文本从哪里进入：自注意力与交叉注意力
#
# 注意力层让图像的每个位置从一组向量中收集信息：softmax(Q Kᵀ / √d) V。
# **查询**（query）Q 总是来自图像：每个潜在位置一个（共 h·w 个）。
# 区别在于键（key）K 和值（value）V 来自哪里：
#
# - **自注意力**（`attn1`）：同样来自图像的各个位置；每个位置混入其他位置所含的内容（整体布局，如 "left of"）；
# - **交叉注意力**（`attn2`）：来自文本编码器（text encoder）的标记（token）向量；每个位置混入这些词所说的内容。softmax 权重——每个位置一行、分布在各个标记上——就是第 7 课画的注意力图（attention map）。
#
# 所加载模型的各个注意力层，从它们的模块中读出（`to_k` 的输入宽度说明键由什么生成：交叉注意力中是文本的宽度，自注意力中是该块的通道数）：

# %%
sdviz.course.table(
    structure.attention_table(),
    title="Every attention layer: queries from the image, keys and values from ...",
)

# %% [markdown]
# 在 sdviz-mini 中，潜在表示全分辨率上的块是用 `only_cross_attention` 构建的：在那里 `attn1` 也读取文本，所以这些块没有自注意力（图中的 "C C"）。
# 那里的自注意力矩阵会是所有矩阵中最大的（每个潜在位置一行、一列），去掉它让训练更快；更粗的层级保留了自注意力。
# Stable Diffusion 1.5 在每个 transformer 块里都既有自注意力，又有交叉注意力：
#
# ### Stable Diffusion 1.5 的同一张图
#
# `sdviz.probes.sd_skeleton("1.5")` 在 PyTorch 的 meta 设备上构建 SD 1.5 公开的架构：每个模块、每个形状都有，但没有权重、不占内存，大约需要一秒。

# %%
sd15 = sdviz.probes.sd_skeleton("1.5")  # SD 1.5's modules, no weights
sd15_structure = sdviz.probes.unet_structure(sd15)
print(
    f"SD 1.5's UNet: {sdviz.course.count_parameters(sd15.unet):,} parameters; "
    f"the loaded one: {sdviz.course.count_parameters(pipe.unet):,}"
)
sdviz.figures.unet_diagram(sd15_structure)

# %% [markdown]
# 设计相同，只是更大：四个层级而不是三个，每个下行块两个 ResNet、每个上行块三个，通道数从 320 到 1280，512 像素的图像对应 64×64 的潜在表示，还有 CLIP ViT-L 的 77 个标记向量，每个 768 个数。
#
# ## 一次简短的现场训练
#
# 现在从随机权重开始训练一个噪声预测器，用的正是这样的样本：一个全新的、**sdviz-mini 设计**的 UNet（`sdviz.training.unet.build_unet`：与内置模型的 UNet 相同的块和通道，其交叉注意力的尺寸按所加载文本编码器的向量确定），通过所加载的 VAE 和文本编码器，喂给它 ShapesWorld 的潜在表示和描述。
# 无论你加载的是哪个模型，这里训练的 UNet 都是那个小的：SD 1.5 的 UNet 在 CPU 上训练不动。
# sdviz-mini 的完整训练流程在一个 2 核 CPU 上用了 161.9 分钟（墙钟时间），其中 137 分钟用于 18,000 个 UNet 训练步（training step）（`sdviz/models/sdviz-mini/training_record.json`）；一分钟就足以看出损失如何开始下降。

# %%
import sdviz.training.live

live = sdviz.training.live.train_noise_predictor(
    pipe,
    steps=lesson.pick(full=60, smoke=5),  # training steps (5 in the tests' smoke mode)
    n_images=lesson.pick(full=256, smoke=32),  # distinct ShapesWorld pictures it sees
    seed=lesson.seed,
)
print(
    f"a {sdviz.course.count_parameters(live.model):,}-parameter UNet trained {len(live.loss)} "
    f"steps in {live.seconds:.1f} s: loss {live.loss[0]:.3f} at the first step, "
    f"{live.loss[-1]:.3f} at the last"
)
sdviz.figures.live_training(live)

# %% [markdown]
# 一个总是回答“零噪声”的网络，损失约为 1（噪声的方差是 1：图中的虚线）；在几十步之内，损失就降到远低于这个值，因为含噪潜在表示本身就透露了很多关于其噪声的信息。
# 从这里走到一个能画出形状的模型，还要再训练数千步。
#
# ## 训练出的模型的预测与真值对比
#
# 把刚训练好的 UNet 放进流水线（pipeline）的一个副本，把它对一个训练样本的预测，与所加载模型中完全训练好的 UNet 进行比较。
# 右边的图衡量每个噪声水平上的误差。

# %%
live_pipe = sdviz.course.pipeline_with(pipe, unet=live.model)  # the same parts, the new UNet
example, caption = samples.images[1], samples.captions[1]
sdviz.figures.training_example(
    sdviz.probes.noise_predictions(live_pipe, example, 500, prompt=caption)
)

# %% [markdown]
# 再看所加载模型完全训练好的 UNet 在同一个样本上的表现：

# %%
sdviz.figures.training_example(sdviz.probes.noise_predictions(pipe, example, 500, prompt=caption))

# %% [markdown]
# ## 自测
#
# 先自己回答每个问题，再运行它下面的单元。
#
# **1.** SD 1.5 的 UNet 中有多少个 ResNet 块读取 t？（每个下行块两个，每个上行块三个，中间块两个：数一数它的图中的 R 小方块。）

# %%
print(sd15_structure.count("resnet"), "ResNets read t in SD 1.5's UNet")

# %% [markdown]
# **2.** 以两倍的边长生成：潜在表示的边长也加倍。这时第一个块的交叉注意力有多少个查询（潜在位置），又有多少个键？

# %%
bigger = sdviz.probes.unet_structure(pipe, latent_size=2 * pipe.unet.config.sample_size)
sdviz.course.table(bigger.attention_table(), title="The same UNet on a latent twice the side")

# %% [markdown]
# **3.** t=0 和 t=1 的嵌入，在经过 MLP 之前还是之后更相似？

# %%
print(f"features: {emb.cosine(0, 1, 'features'):.3f}   after the MLP: {emb.cosine(0, 1):.3f}")

# %% [markdown]
# **4.** 一个总是回答 ε̂ = 0 的网络，损失是多少？用本课开头那个批次的标签算一算。

# %%
print(f"MSE(0, ε) = {torch.nn.functional.mse_loss(torch.zeros_like(noise), noise):.3f}")

# %% [markdown]
# ## 小结
#
# - 一个训练样本就是一个被加噪到随机时间步的干净潜在表示；噪声就是标签。
# - UNet 学习从含噪潜在表示、时间步和描述中预测这个噪声，损失是均方误差。
# - 在内部，UNet 先降低分辨率再升回来，跳跃连接横跨两侧；ResNet 块与注意力层交替出现。
# - t 的进入路径是：正弦特征 → 一个 MLP → 在每个 ResNet 中加上的、每个通道一个的偏移量；文本只通过交叉注意力进入，它的键和值是标记向量，而自注意力的键和值来自图像本身。
# - 预测噪声在 t 小时最难（干净的潜在表示里藏着一点点噪声），随着 t 增大而变得容易：t 大时潜在表示几乎全是噪声，所以含噪输入本身就是一个不错的猜测。误差随 t 变化的曲线为所加载的模型展示了这一点。
#
# ### 练习
#
# 1. 在 t = 50、500 和 950 上运行 `sdviz.figures.training_example`。在哪个 t 上，预测看起来最像真实的噪声？为什么？
# 2. 训练两倍长的时间：最终损失下降了多少？把两条曲线画在同一个面板里：`sdviz.figures.training_curves({"60 steps": live.loss, "120 steps": ...})`。
# 3. 所加载的模型在训练时把 10% 的描述换成了空描述。为什么无分类器引导（classifier-free guidance，第 7 课）需要这样做？
