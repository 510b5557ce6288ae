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
# # 第 5 课：潜在空间与自动编码器
#
# 《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*）把它称为**提速**（speed boost）：扩散（diffusion）不在图像的像素上进行，而是在图像的一个**压缩**版本上进行。
# Stable Diffusion 的自动编码器（autoencoder）是一个变分自动编码器（VAE；Kingma & Welling 2014；Rombach 等 2022，第 3 节），它把一张 3×512×512 的图像压缩成一个 4×64×64 的**潜在表示**（latent）——数字少了 48 倍——再由一个解码器（decoder）把图像画回来。
# UNet 的训练和运行完全在潜在表示上进行；解码器只在最后运行一次。
#
# 本课我们对图像进行编码，查看各个潜在通道（latent channel），再把它们解码回来，测量丢失了什么，并测量压缩换来了什么。

# %% [markdown]
# ## 准备
#
# 代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词（prompt）也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述，Stable Diffusion 1.x 的 CLIP 也只在英文图文对上训练过，真正使用 SD 1.x 的用户同样得用英文写提示词。

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
# ## 编码：图像 → 潜在表示
#
# 取 ShapesWorld 测试集中的图像（内嵌模型训练时见过的那一类图像，但布局是它从未见过的），尺寸与模型的图像尺寸相同。
# 一张图像说明不了多少，所以我们取几百张：`sdviz.autoencoder.reconstruct_many` 把每张图像编码成潜在表示，再解码回来，并给每次重建（reconstruction）打分。

# %%
side = sdviz.autoencoder.native_size(pipe)  # the image side the model was built for
world = sdviz.shapes.ShapesWorld(size=side, split="test")
images, captions = world.batch(0, lesson.pick(full=256, smoke=16))  # (n, H, W, 3) uint8
recs = sdviz.autoencoder.reconstruct_many(pipe, images)  # encode, decode, score each
latents = recs.latents  # (n, c, h, w): what the UNet works on
c, h, w = latents.shape[1:]
print(f"{len(recs)} images of 3×{side}×{side} → latents {tuple(latents.shape)}")
print(
    f"{3 * side * side:,} numbers → {c * h * w:,}: {3 * side * side / (c * h * w):.0f}× fewer;"
    f" one latent cell per {pipe.vae_scale_factor}×{pipe.vae_scale_factor} pixels"
)

# %% [markdown]
# 下面是一张典型图像（重建得分居中的那一张）的潜在表示，逐个通道显示，以及从它解码回来的图像：

# %%
typical = recs.ranked([0.5])[0]  # index of the median-PSNR image
print("caption:", captions[typical])
sdviz.figures.latent_space(recs[typical])

# %% [markdown]
# 潜在通道看起来仍然像原图：自动编码器保留了东西*在哪里*，并用每个单元中的几个数字记下那里*有什么*。
# 潜在表示要乘以 VAE 的**缩放因子**（scaling factor），使得在模型训练所用的那类图像上，它们的整体离散程度（标准差）约为 1、均值约为 0——也就是第 2 课中噪声的尺度。
# （Stable Diffusion 的缩放因子是 0.18215。）
# 在测试图像上测量：

# %%
print(f"scaling factor: {pipe.vae.config.scaling_factor} (latents = factor × encoder output)")
print(f"std of all {len(recs)} test images' latents: {latents.std():.2f} (the target is 1)")
print(f"their mean: {latents.mean():.3f} (the target is 0)")
sdviz.course.table(
    {
        "latent channel": range(c),
        "mean": latents.mean((0, 2, 3)),
        "std": latents.std((0, 2, 3)),
    },
    formats={"mean": ".2f", "std": ".2f"},
    notes=f"over the {len(recs)} test images and all {h}×{w} positions",
)

# %% [markdown]
# 只有当各个通道的离散程度大致相同时，所有通道共用一个因子才合适。
# sdviz-mini 的 VAE 把每个通道中心化，并让它们具有同一个离散程度（这一步并入了它的 `quant_conv`，所以它仍然是 SD 的 `AutoencoderKL`）。
# 在这样做之前，一个通道承载了大部分方差，噪声最先淹没最弱的那几个通道，而它们承载的恰恰是蓝色和紫色：模型只有 12-25% 的时候能把这两种颜色画对。
# SD 1.x 和 2.x 只用这一个因子；后来的一些模型会在 VAE 的配置中记录一个偏移（`shift_factor`，SD 3）或逐通道的统计量（`latents_mean`、`latents_std`）。

# %% [markdown]
# ## 解码：潜在表示 → 图像，以及丢失了什么
#
# 峰值信噪比（PSNR，单位 dB；越高越好，30 dB 及以上肉眼就很难分辨）给每次重建打分。
# 它因图像而异，所以要把它们全部看一遍：先看直方图，再看从分布中挑出的例子——最差的图像、第 10 百分位、中位数、第 90 百分位和最好的图像——以及每次重建与原图的差异在哪里。

# %%
sdviz.course.table(
    {
        "held-out images": [len(recs)],
        "mean PSNR (dB)": [recs.psnr.mean()],
        "std (dB)": [recs.psnr.std()],
        "worst (dB)": [recs.psnr.min()],
        "best (dB)": [recs.psnr.max()],
        "under 30 dB": [recs.below(30)],
        "share under 30 dB": [recs.below(30) / len(recs)],
    },
    formats={
        "mean PSNR (dB)": ".1f",
        "std (dB)": ".1f",
        "worst (dB)": ".1f",
        "best (dB)": ".1f",
        "share under 30 dB": ".0%",
    },
    notes="sdviz-mini's model card: 32.2 dB, the same mean over 256 other test images",
)

# %%
sdviz.figures.reconstruction_quality(recs)

# %% [markdown]
# 均值与模型卡（model card）一致，而相当一部分图像低于 30 dB：卡片上的数字是平均值，而不是对每张图像的承诺。
# 差异图显示了分贝损失在哪里：沿着物体的**边缘**（4×4 的一块像素共享一个潜在单元，所以锐利的轮廓回来时会稍微变软）、图像边框附近，以及**背景的颜色**或大物体的颜色上：一种浅色调回来时可能变成另一种浅色调，这是每个像素上的一个小误差（error），PSNR 会把它全部计入。
# 物体大、背景带色调的图像损失最多；即使是最差的那张，也仍然一眼就能认出是同一幅画面。
#
# ## 走出它的世界：一张照片
#
# matplotlib 自带的 Grace Hopper 照片，缩放到同样的尺寸：

# %%
from matplotlib.cbook import get_sample_data
from PIL import Image

photo = Image.open(get_sample_data("grace_hopper.jpg")).convert("RGB").resize((side, side))
photo_rec = sdviz.autoencoder.reconstruct(pipe, photo)
print(f"PSNR {photo_rec.psnr:.1f} dB, against {recs.psnr.mean():.1f} dB for the test images")
print(
    f"its latents: std {photo_rec.latents.std():.2f}, channel means "
    f"{photo_rec.latents.mean((1, 2)).numpy().round(2)} (ShapesWorld's: about 1 and 0)"
)
sdviz.figures.latent_space(photo_rec)

# %% [markdown]
# 自动编码器只能把与其训练数据相似的东西重建好。
# Stable Diffusion 的 VAE 在数百万张照片上训练过；内嵌模型的 VAE 只见过 ShapesWorld：照片回来时成了一团 ShapesWorld 式的色块，甚至它的潜在表示也落在缩放因子所拟合的范围之外——UNet 将被要求为一个它从未见过的东西去噪。
# 加载 Stable Diffusion 后，同一个单元给这张照片打出的分数要高得多。

# %% [markdown]
# ## 压缩换来了什么
#
# UNet 是全卷积的（外加注意力），所以它能在任何输入尺寸上运行。
# 给一次 UNet 调用计时：一次的输入是潜在表示的大小，另一次的输入与图像一样大——后者正是同样设计的*像素空间*（pixel space）扩散模型每一步都必须处理的。
# `sdviz.probes.time_unet` 对每个尺寸的一次调用计时（预热之后，取 3 次的中位数）：

# %%
timing = sdviz.probes.time_unet(pipe, [(h, w), (side, side)], prompt=lesson.prompt)
per_image = f"s per image ({lesson.steps} steps, 2 calls each)"
sdviz.course.table(
    {
        "UNet input": [f"{c}×{h}×{w}: the latents", f"{c}×{side}×{side}: pixel-sized"],
        "ms per call": timing.seconds * 1000,
        per_image: timing.seconds * 2 * lesson.steps,
    },
    formats={"ms per call": ".1f", per_image: ".2f"},
    notes="2 calls a step: with and without the prompt (classifier-free guidance, lesson 7)",
)

# %%
print(f"the pixel-sized input takes {timing.seconds[1] / timing.seconds[0]:.0f}× as long")
print(f"and has {(side * side) / (h * w):.0f}× as many positions")

# %% [markdown]
# 计算量随位置数增长——在像素空间中多出 VAE 因子的平方倍——而自注意力（self-attention）层的开销随这个数的*平方*增长。
# 在 sdviz-mini 这样小的模型上，测得的时间增长得不如位置数多：在 16×16 的潜在表示上，一次调用短到固定开销（逐一启动它那许多小层）就占了其中很大一部分。
# 在 Stable Diffusion 上（64×64 的潜在表示，512×512 像素），计算量占主导：像素空间的开销至少是 64 倍（它的位置数之比），注意力层的开销还要更高。
# 这就是潜在扩散让高分辨率的文生图变得负担得起的原因。

# %% [markdown]
# ## 自测
#
# 先自己回答每个问题，再运行它下面的单元。
#
# **1.** 一张边长加倍（`2 * side` 像素）的图像：它的潜在表示会是什么形状？

# %%
import torch

print(tuple(sdviz.encode(pipe, torch.zeros(3, 2 * side, 2 * side)).shape))

# %% [markdown]
# **2.** 编码器（encoder）的原始输出是乘以缩放因子*之前*的潜在表示。在测试图像上，它的离散程度比 1 大还是比 1 小？大约差多少？

# %%
print(f"std of the unscaled latents: {(latents / pipe.vae.config.scaling_factor).std():.2f}")

# %% [markdown]
# **3.** 哪张测试图像重建得最好，哪张最差？先根据差异图显示的规律猜一猜（物体少还是多？背景素净还是带色调？），再看结果：

# %%
best, worst = recs.ranked([1.0, 0.0])
print(f"best:  {recs.psnr[best]:.1f} dB  {captions[best]}")
print(f"worst: {recs.psnr[worst]:.1f} dB  {captions[worst]}")

# %% [markdown]
# ## 小结
#
# - VAE 编码器把图像压缩成一个小的潜在表示（SD：3×512×512 → 4×64×64，数字少 48 倍）；解码器再把它画回来。
# - 潜在表示保留了图像的布局；缩放因子让它们在 VAE 训练所用的图像上离散程度约为 1、均值约为 0——这是在几百张测试图像上测得的，而不是一张。
# - 重建质量是一个分布：sdviz-mini 在 ShapesWorld 上平均约 32 dB，边缘和背景色调损失最多，相当一部分低于 30 dB。在照片上它失败了（比较两者的 PSNR）：自动编码器只学会了画它见过的东西。
# - 在潜在表示而不是像素上运行 UNet，让每个去噪步（denoising step）都便宜许多倍。
#
# ### 练习
#
# 1. 编码一张图像，给某一个潜在通道加上 0.5，再解码：图像有什么变化？哪个通道控制什么？
# 2. 解码一个*随机*的潜在表示（`torch.randn(1, c, h, w)`）。当潜在表示不是任何图像的编码时，解码器会画出什么？
# 3. 把两张图像的潜在表示混合起来（`0.5 * a + 0.5 * b`）再解码。结果是两幅画面的混合，还是别的什么？
