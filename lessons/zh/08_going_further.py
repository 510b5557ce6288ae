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
# # 第 8 课：更进一步
#
# 你现在已经见过 Stable Diffusion 的每一个部分。
# 把同样的部分重新组合，就得到了人们每天都在用的各种功能。本课尝试其中四个：
#
# 1. **图生图**（image-to-image）：从一张加了噪声的*现有*图像出发运行逆向过程，而不是从纯噪声（pure noise）出发（SDEdit，Meng 等，2022）——也就是文章里“文本 + 图像输入”的模式；
# 2. **提示词插值**：UNet 只看到文本编码器（text encoder）输出的向量，所以你可以给它任何提示词（prompt）都产生不了的向量——比如两个提示词正中间的向量；
# 3. **引导的测量**：无分类器引导（classifier-free guidance）带来什么（遵循的提示词），付出什么（偏离训练图像的图画），都从像素打分；
# 4. **换上更大的模型**：真正的 Stable Diffusion 1.5。

# %% [markdown]
# ## 准备
#
# 下面的代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述（caption），Stable Diffusion 1.x 的 CLIP 分词器（tokenizer）和文本编码器也只在英文图文对上训练过，看不懂中文提示词，真正使用 SD 1.x 的用户同样得用英文写提示词。

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
# ## 1. 图生图
#
# 图生图先用变分自动编码器（VAE）编码一张起始图像，用第 2 课的前向扩散（forward diffusion）公式把它的潜在表示（latents）加噪到一个中间的时间步（timestep），然后用新的提示词只运行剩下的去噪步（denoising step）。
# **强度**（strength，0 到 1）决定退回多远：强度低时保留构图，强度高时几乎什么都不保留。
#
# diffusers 的 `StableDiffusionImg2ImgPipeline` 由同样的组件构成，`sdviz.trace` 像记录其他流水线一样记录它：`sdviz.probes.image_to_image` 用已加载的流水线构建它，并为每个强度追踪一次运行，全部使用同一个随机种子（seed）。

# %%
start = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
edit = sdviz.probes.image_to_image(
    pipe,
    start["vae.image"],
    "a blue circle to the left of a red square",  # the new prompt: the colours swapped
    [0.3, 0.6, 0.9],  # strengths
    steps=lesson.steps,
    guidance_scale=lesson.guidance,
    seed=lesson.seed,
)
sdviz.course.table(
    {
        "strength": edit.strengths,
        "starts at t": edit.first_timestep,
        "ᾱ_t there": edit.first_alpha_bar,
        f"steps run (of {lesson.steps})": edit.steps_run,
    },
    formats={"ᾱ_t there": ".2f"},
    notes="ᾱ_t: the share of the starting image's signal left in the noised latent",
)

# %% [markdown]
# 先是起始图像，然后是强度 0.3、0.6 和 0.9 下的结果（放大显示：模型生成的是 64 × 64 的图像）：

# %%
sdviz.figures.filmstrip(
    [start["vae.image"], *edit.images],
    ["start", "strength 0.3", "strength 0.6", "strength 0.9"],
    "Image-to-image: 'a blue circle to the left of a red square'",
)

# %% [markdown]
# 中间强度的胶片从旧图像的含噪版本出发，而不是从纯噪声出发：

# %%
middle = edit.runs[1]
sdviz.figures.denoising_filmstrip(middle, images=sdviz.probes.step_images(middle, pipe))

# %% [markdown]
# ## 2. 提示词插值
#
# `sdviz.embed` 返回 UNet 为一个提示词收到的标记向量。
# 两个提示词的向量的加权混合是一个完全合格的输入——作为 `prompt_embeds` 传给流水线——尽管没有任何句子能产生它。
#
# `sdviz.probes.interpolate_prompts` 对每个权重 w，用同一个随机种子，从 (1 − w)·embed("a red circle") + w·embed("a blue square") 生成图像：

# %%
mix = sdviz.probes.interpolate_prompts(
    pipe,
    "a red circle",
    "a blue square",
    [0.0, 0.25, 0.5, 0.75, 1.0],  # the weight w of "a blue square"
    steps=lesson.steps,
    guidance_scale=lesson.guidance,
    seed=lesson.seed,
)
print("token vectors per prompt:", tuple(sdviz.embed(pipe, mix.first).shape), "(tokens, d)")
print("weight w of 'a blue square', left to right:", mix.weights)
sdviz.figures.filmstrip(
    mix.images,
    ["w = 0", "w = 0.25", "w = 0.5", "w = 0.75", "w = 1"],
    "(1 − w)·embed('a red circle') + w·embed('a blue square'), one seed",
)

# %% [markdown]
# ## 3. 引导的测量
#
# 第 7 课给出了无分类器引导的公式（Ho & Salimans 2022）：每一步 UNet 预测两次噪声（noise），一次用提示词（ε_text），一次用空提示词（empty prompt）（ε_uncond），采样器（sampler）使用 ε_uncond + g·(ε_text − ε_uncond)。
# 在 g = 1 时，这就是单纯的 ε_text（这时 diffusers 会跳过无条件（unconditional）的那一半）；g 越大，就沿着文本带来的改变推得越远。
# Stable Diffusion 通常在 g = 7.5 下运行。这种推动有帮助吗？从什么时候开始有害？断言很容易；这里我们来**测量**。
#
# `benchmarks/guidance_sweep.py` 用同样的随机种子，在九个系数（g = 1 到 15）下生成同样的提示词，并**从像素**给每张图像打分，从不用模型自己的 CLIP：它找出饱和的色块，按最近的调色板色相给每个色块的颜色命名，再用一个在 ShapesWorld 掩码（mask）上拟合的最近邻分类器判断它的形状（这个评分器对真实的留出 ShapesWorld 物体有 99% 判断正确）。每个系数下：
#
# - **单物体**：96 个像 "a red circle" 这样的提示词；最大的物体具有指定的颜色和形状就算对；
# - **双物体**：96 个像 "a blue star to the left of a green star" 这样的提示词；两个物体都在最大的两个物体之中就算对；**左/右**：并且各在指定的一侧；
# - **未见组合**：点名训练中从未出现过的颜色–形状组合的提示词（黄色正方形、蓝色三角形、紫色圆形），所以模型必须把它们*组合*起来。
#
# 除了遵循提示词之外，还有四个统计量说明图画偏离训练图像有多远；基准测试（benchmark）也在真实的 ShapesWorld 图像上测量了它们：
#
# - **颜色偏离调色板**（palette）：物体像素到 ShapesWorld 六种颜色中最近一种的平均 RGB 距离（0–255 单位）；
# - **杂散斑点**：饱和但不属于任何物体的像素所占的百分比；
# - **多余物体**：每张图像中，在提示词点名的物体之外找到的物体个数；
# - **边缘锐度**（sharpness）：轮廓上最陡的颜色变化除以物体与背景的对比度（1 / 以像素计的边缘宽度）。
#
# 结果随模型一起提供（它文件夹里的 `guidance.json`），所以这个单元直接读取结果，而不是生成约 1,000 张图像：

# %%
measured = sdviz.probes.measured_guidance()  # the embedded sdviz-mini's sweep
sdviz.course.table(
    measured.columns("accuracy"),
    title="Prompts followed (%), sdviz-mini, 25 DDIM steps",
    formats={"guidance g": "g"},
    notes=[
        f"n per scale: {measured.n['one_object']} one-object and "
        f"{measured.n['two_objects']} two-object prompts, {measured.n['held_out_pairs']} "
        f"with an unseen pair; one two-object prompt counts "
        f"{100 / measured.n['two_objects']:.1f} percentage points",
        "left/right right: both objects right and on the named sides",
    ],
)

# %%
sdviz.course.table(
    measured.columns("quality"),
    title="How far the drawings stray from ShapesWorld (lower is closer, except sharpness)",
    formats={"guidance g": "g"},
)

# %%
sdviz.course.table(
    measured.reference_columns(),
    title="The same statistics on 200 real ShapesWorld images",
    notes="through the VAE: encoded and decoded, what the decoder alone costs",
)

# %% [markdown]
# 推荐的系数也不是猜出来的：基准测试按一条明确的规则选出它。

# %%
print(measured.recommendation())
print("the model's settings file says g =", lesson.guidance, "(sdviz.json, used above)")

# %% [markdown]
# 用文字来说：先保留那些遵循的提示词与最佳系数一样多的系数——就这些提示词所能分辨的程度而言（每个系数用的是同样的提示词和随机种子，所以不确定性来自逐个提示词的差异）；然后在这些系数中，取颜色最接近训练图像的那一个。
# 比这更多的引导带不来任何可测量的好处，还要付出颜色的代价。

# %% [markdown]
# 现在用一个随机种子，在每个测量过的系数下现场生成同一个提示词——这是基准测试发现引导作用明显的一个双物体提示词。
# 图像上方是测得的曲线；每个 g 旁边的 ✓ 或 ✗ 是评分器对这张图像本身的判定（只在步数与基准测试的 25 步一致时显示）。

# %%
example = measured.example  # {'prompt', 'seed', 'followed': one verdict per scale}
runs = sdviz.probes.guidance_runs(
    pipe, example["prompt"], measured.scales, seed=example["seed"], steps=lesson.steps
)
sdviz.figures.guidance_benefit(measured, runs)

# %% [markdown]
# 从左到右读这张图。
# 没有引导时（g = 1），模型经常画对了形状却画错了颜色，或者画出它更熟悉的那种组合的颜色：文本对采样器的引导，只有有条件（conditional）预测本身那么多。
# 少量引导就能修正其中的大部分。
# 过了某一点，更多的引导带不来任何可测量的好处——曲线只在 96 个提示词中的几个之间波动（每个约一个百分点）——然后提示词遵循率又会下降。
# 中间的面板显示代价：颜色在 g 较小时最接近 ShapesWorld 的调色板，之后每往上一档就偏离得更远（在最大的几个系数下，形状会碎裂，背景会发白，就像最后几张图像那样）。
# 右边的面板显示引导*不*改变的东西：边缘始终和 VAE 所能画出的一样锐利（VAE 的蓝色点划线，在真实图像的绿线下方）；边缘的柔和来自解码器（decoder），而不是来自引导。
#
# 这些句子背后的数字：

# %%
print("two objects right (% of prompts):")
print(f"  g = 1 (no guidance): {measured.at(1.0)['two_objects']:.1f}")
print(
    f"  g = {measured.recommended:g} (recommended):",
    f"{measured.at(measured.recommended)['two_objects']:.1f}",
)
print(f"  g = 7.5 (SD's usual): {measured.at(7.5)['two_objects']:.1f}")
print(f"  g = 15: {measured.at(15.0)['two_objects']:.1f}")
print("colour off palette (mean RGB distance, 0-255; real images 0):")
print(
    f"  g = 1: {measured.at(1.0)['palette_error']:.1f}, g = {measured.recommended:g}:",
    f"{measured.at(measured.recommended)['palette_error']:.1f}, g = 7.5:",
    f"{measured.at(7.5)['palette_error']:.1f}, g = 15: {measured.at(15.0)['palette_error']:.1f}",
)
print(f"  real images through the VAE: {measured.reference_vae['palette_error']:.1f}")

# %% [markdown]
# 一个模型从未见过的组合讲的是同一个故事，而且更鲜明：没有引导时，它常常画出它见过的与该形状搭配的颜色，而不是提示词点名的颜色。
# 下面是基准测试中一个未见颜色–形状组合的例子，分别在无引导、推荐系数和最大系数下生成：

# %%
unseen = measured.held_out_example
print("held-out (colour, shape) pairs:", sdviz.shapes.HELD_OUT_PAIRS)
sdviz.figures.guidance_sweep(
    sdviz.probes.guidance_runs(
        pipe,
        unseen["prompt"],
        [1.0, measured.recommended, 15.0],
        seed=unseen["seed"],
        steps=lesson.steps,
    )
)

# %% [markdown]
# ## 4. 更大的模型
#
# 每一课都能不加修改地用于真正的 Stable Diffusion：在准备单元中把 `MODEL` 设为一个 hub ID，例如 `"stable-diffusion-v1-5/stable-diffusion-v1-5"`（约 4 GB，下载一次后缓存；在 CUDA GPU 上 sdviz 以 float16 加载它），或者设为一个本地的 diffusers 文件夹。
# 变化的是规模。
# sdviz 可以在 PyTorch 的 *meta* 设备上构建公开的 SD 1.5 架构，不带训练好的权重——有形状、不占内存——来与已加载的模型比较：

# %%
sd15 = sdviz.probes.sd_skeleton("1.5")  # its modules on the meta device: no memory
sdviz.course.components_table(pipe, sd15, labels=["parameters here", "in SD 1.5"])

# %%
sdviz.figures.components(sd15)

# %% [markdown]
# SD 1.5 那个 8.6 亿参数（parameters）的 UNet 在 float16 下需要约 2 GB，在较新的 GPU 上每张图像要几秒；在笔记本电脑的 CPU 上，一张图像就要好几分钟。
# 这些课程中的每一个图（figure）和交互控件（widget）都从它读取同样的追踪键。
# 第 1 课把两个模型并排比较（它们的图像、训练数据和各部分的参数量）。
#
# 有一个设置不能照搬：引导系数（guidance scale）。
# Stable Diffusion 通常在 7.5 下运行，这是为那个模型做的选择；第 3 节测量了 sdviz-mini 自己的曲线。
# Ho & Salimans（2022）在他们的 ImageNet 模型上测量了同样的权衡：更多的引导让每张图像更容易被认出是它的类别，而整组图像的多样性更低。
# 合适的系数是模型的属性，需要测量，而不是方法的常数。

# %% [markdown]
# ## 自测
#
# 每个问题先回答，再运行它下面的单元；单元会给出答案。
#
# 1. 用本课的步数、以强度 0.6 做图生图：要运行多少个去噪步？（强度就是所运行的逆向过程占整个过程的比例。）

# %%
print("strength 0.6 ran", edit.steps_run[1], "of", lesson.steps, "denoising steps")

# %% [markdown]
# 2. 在 g = 1 时，公式化简为 ε_text。那么 diffusers 是否仍然用空提示词运行 UNet，让工作量翻倍？每次运行都记录了流水线是否使用了无分类器引导（每一步一个大小为 2 的批次（batch））：

# %%
print("g = 1 used guidance:", runs[0]["pipeline.do_classifier_free_guidance"])
print(
    f"g = {runs[1]['pipeline.guidance_scale']:g} used guidance:",
    runs[1]["pipeline.do_classifier_free_guidance"],
)

# %% [markdown]
# 3. 看准确率表：引导对哪项任务帮助最大，单物体还是双物体？预测每一项从 g = 1 到推荐的 g 提高多少（以百分点计）：

# %%
gain_one = measured.at(measured.recommended)["one_object"] - measured.at(1.0)["one_object"]
gain_two = measured.at(measured.recommended)["two_objects"] - measured.at(1.0)["two_objects"]
print(f"one object: {gain_one:+.1f} points, two objects: {gain_two:+.1f} points")

# %% [markdown]
# 4. w = 0 的提示词插值给出的正是 "a red circle" 的向量。那么它的图像是否与用同一个随机种子生成 "a red circle" 得到的图像相同？（0 表示完全相同。）

# %%
plain = sdviz.generate(
    pipe, mix.first, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("largest pixel difference:", float((plain["vae.image"] - mix.images[0]).abs().max()))

# %% [markdown]
# ## 小结
#
# - **图生图**就是从中途开始的逆向过程，起点是一张现有图像加噪后的编码；强度决定起始的时间步。
# - UNet 只看到标记向量，所以**嵌入插值**能混合提示词。
# - **引导**，在 sdviz-mini 上从像素测得：少量引导（g ≈ 2）能大大提高遵循的提示词，对双物体提示词和训练中从未见过的颜色–形状组合提高最多；更多的引导带不来可测量的好处，还会把颜色拉离训练图像；很大的 g（10–15）又会丢掉一些提示词。
# 推荐的系数按一条明确的规则从这张表中选出，它是模型的属性，而不是方法的属性。
# - 内置模型和 Stable Diffusion 1.5 是同一个系统，只是规模不同。
#
# ### 练习
#
# 1. 用第 2 课中 Grace Hopper 的照片作为图生图的起始图像。强度到多少时，模型就不再重现这张照片？
# 2. 不在提示词之间插值，而在*噪声*之间插值：两个随机种子的初始潜在表示，以 `latents=` 传给流水线。这与提示词插值有什么不同？
# 3. 在 `with sdviz.schedulers.using_scheduler(pipe, "dpm++"):` 中生成，找出仍能得到干净图像的最少步数。
