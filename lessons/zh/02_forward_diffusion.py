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
# # 第 2 课：前向扩散——加噪声
#
# 怎样教一个网络把噪声变成图像？《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*）给出的回答是一个技巧：先学容易的那个方向。取一张图像，抽取一些高斯噪声（noise），然后**按一定的量把它加上去**——加一点、加很多，或者多到图像几乎什么都不剩。每一对（含噪图像，噪声量）都是一个训练（training）样本，用来训练一个网络，它的任务是说出*加进去的是哪个噪声*。本课讲的就是这个向前加噪声的过程，即前向扩散（forward diffusion）；第 3 课训练噪声预测器（noise predictor），第 4 课把这个过程倒过来运行。
#
# 噪声的量用一个**时间步**（timestep）t 来编号：从 0（几乎干净）到 T−1（几乎是纯噪声——“几乎”到什么程度，下面的数字会告诉你）。去噪扩散概率模型（DDPM；Ho 等，2020）给出了含噪版本的闭式表达，不必一步一步地加噪声：
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon,
# \qquad \varepsilon \sim \mathcal N(0, I)$$
#
# ᾱ_t（读作 "alpha bar"）是第 t 步时信号（signal）的方差还剩下的比例：t = 0 时接近 1，到最后接近 0。ᾱ_t 的值组成的列表就是**噪声调度**（noise schedule）。

# %% [markdown]
# ## 准备
#
# 代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词（prompt，例如 `lesson.prompt`）也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述，Stable Diffusion 1.x 的 CLIP 文本编码器也只在英文图文对上训练过，真正使用 SD 1.x 的中文用户同样要用英文写提示词。

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
# ## 一张真实的照片
#
# Matplotlib 的测试数据里附带一张 Grace Hopper 的照片，所以凡是装了 matplotlib 的机器上都有它。
# 对模型来说，一张图像就是一个数字网格：3 个颜色通道（channel）× 高 × 宽，按 Stable Diffusion 的自动编码器（autoencoder）的要求缩放到 [−1, 1]。
# 我们把它调整到所加载模型训练时的尺寸。

# %%
import numpy as np
import torch
from matplotlib.cbook import get_sample_data
from PIL import Image

side = sdviz.autoencoder.native_size(pipe)  # the model's image size: its latent side × VAE factor
photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
x0 = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
print("image tensor", tuple(x0.shape), f"values in [{x0.min():.0f}, {x0.max():.0f}]")
sdviz.figures.filmstrip(x0[None] / 2 + 0.5, [f"the photograph at {side}×{side} pixels"])

# %% [markdown]
# ## 选定的几个噪声量
#
# `sdviz.add_noise` 就是上面的公式。
# 我们用同一次抽取的噪声，把照片加噪到几个时间步，并打印每个时间步还剩多少信号。

# %%
T = pipe.scheduler.config.num_train_timesteps
timesteps = [0, T // 10, T // 4, T // 2, 3 * T // 4, T - 1]
abar = sdviz.diffusion.alpha_bar(pipe.scheduler, timesteps)
noisy = sdviz.add_noise(
    x0, timesteps, pipe.scheduler, generator=torch.Generator().manual_seed(lesson.seed)
)
print(f"{T} training timesteps; noisy batch {tuple(noisy.shape)} (one image per t)")
sdviz.course.table(
    {
        "t": timesteps,
        "ᾱ_t": abar,
        "signal weight √ᾱ_t": abar.sqrt(),
        "noise weight √(1−ᾱ_t)": (1 - abar).sqrt(),
        "std(x_t)": noisy.std(dim=(1, 2, 3)),
    },
    formats={
        "ᾱ_t": ".4f",
        "signal weight √ᾱ_t": ".3f",
        "noise weight √(1−ᾱ_t)": ".3f",
        "std(x_t)": ".2f",
    },
    notes="ᾱ_t: the share of the signal's variance left; std(x_t): the spread of the noisy values",
)

# %% [markdown]
# 打印出的数字里有三点值得注意。
# 信号平滑地衰减，噪声随之增长，而数值的总体离散程度（标准差）始终保持在 1 的量级：这个过程是*方差保持*（variance preserving）的——网络看到的输入始终处在相近的尺度上。
# 在 t = 0 时，图像只是*几乎*干净：ᾱ₀ 略小于 1，所以已经有一层微弱的噪声（权重为 √(1−ᾱ₀)，见第一行）。
# 而在最后一个时间步，图像的权重 √ᾱ 很小，但**不为零**：这个调度永远到达不了纯噪声（pure noise）。
# 我们会在下面“噪声调度”一节回到这一点。
#
# 全部内容就是这个公式——用一个固定的噪声张量亲手验证一下：

# %%
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
by_hand = abar[3].sqrt() * x0 + (1 - abar[3]).sqrt() * noise
by_sdviz = sdviz.add_noise(x0, timesteps[3], pipe.scheduler, noise=noise)
print("by hand vs sdviz.add_noise, largest difference:", float((by_hand - by_sdviz).abs().max()))

# %% [markdown]
# 下面是照片在这些噪声水平（noise level）下的样子，噪声直接加在像素上。
# `sdviz.probes.noised_images` 负责加噪，图只画出它返回的结果（`show=["pixels"]`：只画像素空间（pixel space）这一行——原因见下文）。

# %%
noised_photo = sdviz.probes.noised_images(pipe, photo, timesteps, seed=lesson.seed)
sdviz.figures.forward_noising(noised_photo, show=["pixels"])

# %% [markdown]
# ## 潜在空间中的噪声
#
# Stable Diffusion 不是把噪声加在像素上，而是加在它的自动编码器——变分自动编码器（VAE），第 5 课——的*潜在表示*（latents）上：每一块像素只用几个数表示（Stable Diffusion：每个 8×8 块 4 个数；sdviz-mini：每个 4×4 块 4 个数，`pipe.vae_scale_factor` 给出这个边长）。
# 要看含噪潜在表示（noisy latents），就得把它们变回图像；而这首先要求 VAE 能把这张图重建出来。
# 内置模型的 VAE 只在 ShapesWorld（见下文）上训练过，从没见过照片。
# 峰值信噪比（PSNR）以分贝为单位，衡量重建（reconstruction）出的图像与原图有多接近：高于约 30 dB 时两者难以分辨，低于约 20 dB 时一眼就能看出差别。

# %%
world = sdviz.shapes.ShapesWorld(size=side)
samples = sdviz.course.examples(world, 16)  # the first 16 pictures, with their captions
photo_vae = sdviz.autoencoder.reconstruct(pipe, photo)
shape_vae = sdviz.autoencoder.reconstruct(pipe, samples.images[0])
sdviz.course.table(
    {
        "image": ["the photograph", f"ShapesWorld: {samples.captions[0]!r}"],
        "PSNR of decode(encode(image)), dB": [photo_vae.psnr, shape_vae.psnr],
    },
    formats={"PSNR of decode(encode(image)), dB": ".1f"},
    notes="higher is closer: 30+ dB hard to tell apart, under 20 dB visibly different",
)

# %%
sdviz.figures.filmstrip(
    [photo_vae.image, photo_vae.reconstruction],
    ["the photograph", f"decode(encode(photo)): {photo_vae.psnr:.1f} dB"],
)

# %% [markdown]
# 用 sdviz-mini 时，照片重建回来只是一团模糊：它的潜在表示根本不是 Grace Hopper 的图像，给它们加噪只会让你看到加在一团模糊上的噪声。
# （Stable Diffusion 自己的 VAE 在照片上训练过，能把它重建得很好；第 5 课专讲 VAE。）
# 所以在潜在空间（latent space）里，我们用这个模型*确实*认识的图像。
#
# ## 训练图像：ShapesWorld
#
# 内置模型从没见过照片。
# 它是在 **ShapesWorld** 上训练的：由程序生成的彩色形状图像，每张都配有一段描述（caption），由一个随机种子（seed）即时生成（所以数据集无穷无尽，也不需要下载）。

# %%
print(samples)
samples.strip()

# %% [markdown]
# 一个训练样本就是其中一张图像，被加噪到一个随机的时间步。
# 下面把第一张图像在我们选的这些时间步上用三种方式画出来：
#
# - **像素空间**：噪声加在像素上，和照片一样；
# - **潜在空间，线性预览**（linear preview）：噪声加在潜在表示上（所有 t 共用一次抽取的噪声），每个潜在单元画成一个像素，所用的是一个从 4 个潜在通道（latent channel）到 RGB 的*线性*映射，它在这张图像上用最小二乘法拟合（`Run.preview` 对一次生成做同样的事）；
# - **潜在空间，经 VAE 解码**：同样的含噪潜在表示，经过 VAE 的解码器（decoder）。

# %%
noised_shapes = sdviz.probes.noised_images(pipe, samples.images[0], timesteps, seed=lesson.seed)
sdviz.figures.forward_noising(noised_shapes)

# %% [markdown]
# 前两行讲的是文章里的故事：图像逐渐消失在看上去就是噪声的噪声里。
# 用 sdviz-mini 时，第三行却不是这样：随着 t 增大，解码器画出浅色背景和紫色、绿色的**碎片**，到一半（t = 500）时，红色的圆变成了绿色。
# x_t 里没有任何绿色或碎片状的东西——那是解码器造成的。
# 下面两个测量说明原因。
#
# ## 为什么解码器把噪声画成碎片
#
# **1. 解码器只能画出它训练时见过的世界。** 它只学过一件事：把 ShapesWorld 图像的潜在表示还原成 ShapesWorld 图像。
# 它被要求生成过的每个像素，要么是浅色背景，要么是六种纯色之一，边缘清晰。
# 给它一个从没见过的潜在表示——纯高斯噪声——它仍然用这套“词汇”来回答。
# 测量一下：解码 16 个纯噪声潜在表示（生成正是从它们开始的），把它们的颜色与 16 张 ShapesWorld 图像以及像素噪声进行比较。

# %%
g = torch.Generator().manual_seed(lesson.seed)
pure_noise = torch.randn((len(samples), *shape_vae.latents.shape), generator=g)  # x_T
decoded_noise = sdviz.decode(pipe, pure_noise)  # (16, 3, H, W)
pixel_noise = ((torch.randn(len(samples), 3, side, side, generator=g) + 1) / 2).clamp(0, 1)
colours = sdviz.probes.colour_statistics(
    {
        "ShapesWorld": samples.images,
        "VAE decode of noise": decoded_noise,
        f"linear preview of x_{T - 1}": noised_shapes.preview[-1:],
        "pixel noise": pixel_noise,
    },
    sdviz.shapes.COLOURS,
)
sdviz.course.table(
    colours,
    formats=sdviz.probes.images.COLOUR_FORMATS,
    notes=[*sdviz.probes.images.colour_notes(), "the linear preview has one pixel per latent"],
)

# %%
sdviz.figures.filmstrip(
    decoded_noise[:6],
    list(map("noise latent {}".format, range(6))),
    "The VAE's decode of pure-noise latents: what the pipeline would show at the start",
)

# %% [markdown]
# 解码出的噪声具有 ShapesWorld 的统计特征，而不是噪声的：大部分是浅色背景，几乎全都落在 ShapesWorld 的颜色里，是平滑的色块（相邻像素之差很小）而不是彼此独立的像素——而且它的彩色像素大多是这个世界调色板（palette）中的同一种颜色（"nearest colour" 即“最近颜色”一列）。
# 像素噪声在每一列上都恰好相反。
# 线性预览无法凭空造出形状：它把每个潜在单元的噪声画成一个彩色方块。
#
# **2. 颜色存在于潜在表示的长度里，而加噪会把它缩短。** x_t 包含 √ᾱ_t·x_0：即*按比例缩小了的*图像潜在表示。
# 线性预览把缩小了的红色画成更浅的红色。
# 解码器却不是线性的：把干净的潜在表示乘以 √ᾱ_t 后解码，完全不加噪声，看看红色圆的颜色。

# %%
z0 = shape_vae.latents[None]  # (1, c, h, w): the clean latent of the first picture
signal_only = sdviz.decode(pipe, abar.sqrt()[:, None, None, None] * z0)  # √ᾱ_t·z0 per t
sdviz.figures.filmstrip(
    signal_only,
    list(map("t={}: z0 × {:.2f}".format, timesteps, abar.sqrt().tolist())),
    "decode(√ᾱ_t · z0): the signal part of x_t alone, no noise",
)

# %% [markdown]
# 潜在表示越缩越小，圆的颜色就从红色经过橙色、绿色走向紫色——紫色正是很小的潜在表示解码出来的颜色，所以纯噪声会被画成紫色碎片。
# 在一次生成的中途（第 4 课），x_t 里的图像只有其原长度的一部分，所以 VAE 会把红色的圆画成绿色，直到最后几步把长度恢复。
# UNet 从来看不到这些图：它处理的是潜在表示；第 4 课把线性预览和解码结果并排画出，让你看清它真正拥有的是什么。
#
# **Stable Diffusion 的解码器会怎样。** SD 的 VAE（Rombach 等，2022）是在照片上训练的：它的输出必须覆盖每一种颜色和每一种细微的纹理。
# 它对随机潜在表示的解码结果是色彩丰富、颗粒细密、看上去就像噪声的纹理，fast.ai 的 *Stable Diffusion Deep Dive* 展示 SD 最初几步时就是这个样子。
# （sdviz 没有测量过这一点：编写本课程的地方拿不到 SD 的权重。把 `MODEL` 设为 SD 1.5，运行上面的单元，就能自己测量。）
#
# **sdviz-mini 的解码器能做到同样的事吗？** 靠重新训练整个 VAE 不行：UNet 是在*这个*编码器（encoder）的潜在表示上训练的，也得跟着重新训练。
# 可行的路线是只微调解码器——冻结编码器，给解码器看它从没见过的潜在表示（含噪潜在表示配上含噪像素，或 ShapesWorld 之外的图像）——并用两个数字来衡量：上面那张关于解码噪声的表，以及重建的 PSNR，后者不能下降。
# sdviz 没有提供这样的解码器；它用线性预览如实地显示噪声。

# %% [markdown]
# ## 噪声调度
#
# ᾱ_t 下降得多快，是一个设计选择。
# Stable Diffusion 对每一步的噪声 β_t 使用 "scaled linear"（缩放线性）调度，在 1000 步内从 0.00085 增加到 0.012。
# 图中画出 ᾱ_t、噪声水平 σ_t = √((1−ᾱ_t)/ᾱ_t) 和信噪比（SNR）；圆点是一个 `lesson.steps` 步的采样器（sampler）在返回途中（第 4 课）经过的时间步。

# %%
config = pipe.scheduler.config
print("training timesteps T:         ", config.num_train_timesteps)
print("β at the first timestep:      ", config.beta_start)
print("β at the last timestep:       ", config.beta_end)
print("how β goes from one to other: ", config.beta_schedule)
sdviz.figures.noise_schedule(pipe, steps=lesson.steps)

# %% [markdown]
# 生成从哪里开始？按 Stable Diffusion 的设置（`timestep_spacing` 为 "leading"，`steps_offset` 为 1），采样器的 `lesson.steps` 个时间步从底部往上、以 T / steps 为间隔排列，所以第一个时间步低于 T−1。
# 而即使是 T−1，也不是纯噪声：

# %%
sampler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # a copy: pipe untouched
sampler.set_timesteps(lesson.steps)
ends = [0, int(sampler.timesteps[0]), T - 1]
abar_ends = sdviz.diffusion.alpha_bar(pipe.scheduler, ends)
sdviz.course.table(
    {
        "t": ends,
        "which": [
            "first training timestep",
            f"first of the {lesson.steps} sampling steps",
            "last training timestep",
        ],
        "ᾱ_t": abar_ends,
        "picture's weight √ᾱ_t": abar_ends.sqrt(),
        "SNR = ᾱ_t/(1−ᾱ_t)": abar_ends / (1 - abar_ends),
    },
    formats={"ᾱ_t": ".4f", "picture's weight √ᾱ_t": ".3f", "SNR = ᾱ_t/(1−ᾱ_t)": ".4g"},
    notes="SNR: the signal's variance over the noise's; 0 would be pure noise",
)

# %% [markdown]
# 最后一个时间步的 SNR 很小，但不为零：网络从没在纯噪声上训练过，而生成却从纯噪声开始。
# Lin 等（2024，*Common Diffusion Noise Schedules and Sample Steps are Flawed*）说明了这给 Stable Diffusion 带来的代价——最后一个时间步残留的图像平均亮度，让模型学到“每张图像都是中等亮度”，于是它很难画出很暗或很亮的图像——并修正了它：把调度重新缩放到终端 SNR 为零，预测 v 而不是 ε，并从最后一个时间步开始采样（"trailing" 间隔）。
# diffusers 三者都支持（`rescale_betas_zero_snr=True`、`prediction_type="v_prediction"`、`timestep_spacing="trailing"`）；SD 1.5 和 sdviz-mini 一个都没用。

# %% [markdown]
# ## 自测
#
# 先预测，再运行下面的单元来核对：
#
# 1. `noised_shapes.pixels`、`.preview` 和 `.decoded` 各自为每个时间步保存一张图像。它们的形状各是什么？（提示：其中哪一个是每个潜在单元画成一个像素？）
# 2. 在 t = T−1 时，图像的幅度还剩多少：√ᾱ_{T−1} ≈ 0、0.07 还是 0.5？
# 3. 在 t = 0 时，图像是完全干净的吗？噪声权重 √(1−ᾱ₀) 是多少？

# %%
print(
    "1. pixels",
    tuple(noised_shapes.pixels.shape),
    "| preview",
    tuple(noised_shapes.preview.shape),
    "| decoded",
    tuple(noised_shapes.decoded.shape),
    " (timesteps, RGB, height, width)",
)
print(f"2. picture's weight at t={T - 1}: √ᾱ = {float(abar[-1].sqrt()):.3f}")
print(
    f"3. noise weight at t=0: √(1−ᾱ₀) = {float((1 - abar[0]).sqrt()):.3f}  (ᾱ₀ = {float(abar[0]):.4f})"
)

# %% [markdown]
# ## 小结
#
# - 前向扩散把图像与高斯噪声混合：x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε。一个公式就能直接跳到任意时间步。
# - ᾱ_t，即噪声调度，从几乎为 1（ᾱ₀ ≈ 0.999：几乎干净）降到几乎为 0（SD 在 T−1 处的 ᾱ ≈ 0.005：永远不是纯噪声）；这种混合让总方差保持在 1 附近。
# - Stable Diffusion 把这个过程用在自动编码器的潜在表示上，而不是像素上。要查看含噪潜在表示，线性预览把噪声如实地显示为噪声；VAE 的解码器则用它训练图像的“词汇”来画它们——sdviz-mini 画成 ShapesWorld 的碎片，SD 画成细密多彩的纹理。
# - 每个（含噪图像，时间步）→ 噪声的三元组，都是噪声预测器的一个训练样本：这就是第 3 课的内容。
#
# ### 练习
#
# 1. ᾱ_t 在哪个时间步最接近 0.5，也就是信号和噪声方差相等的地方？用 `sdviz.diffusion.alpha_bar(pipe.scheduler, range(T))` 找出来。
# 2. 在像素空间中把一张 ShapesWorld 图像和照片加噪到同一个 t。哪一张能被认出来的时间更长？为什么纯色的形状可能与照片表现不同？
# 3. 把 Stable Diffusion 的调度与最初 DDPM 论文的 "linear" 调度比较：`sdviz.figures.noise_schedule(pipe, diffusers.DDPMScheduler(beta_schedule="linear"))`（先 `import diffusers`）。哪一个在 t = T/2 时保留的信号更多？它在 T−1 处的 ᾱ 是多少？
