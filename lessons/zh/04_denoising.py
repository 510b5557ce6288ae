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
# # 第 4 课：通过去除噪声来作画
#
# 第 3 课训练了一个网络：看着一个含噪潜在表示（noisy latent），说出其中含有哪些噪声。
# 现在我们把它**反过来**运行，正如《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*）所画的那样：从噪声出发——一个随机的潜在表示（latent）x_T，按纯噪声（pure noise）的方式抽取，尽管正如第 2 课所测量的，第一个被采样的时间步（timestep）仍保留着一点信号（ᾱ > 0）。
# 每一步，UNet 预测其中的噪声，**调度器**（scheduler）减去其中的一部分，得到一个稍微干净一些的潜在表示。
# 几十步之后，剩下的就是一幅图像。
#
# 有两个量让每一步都一目了然：
#
# - **x_t**，当前的含噪潜在表示（UNet 看到的东西）；
# - **x̂0**，UNet 的噪声预测所对应的干净潜在表示：$\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$——也就是把第 2 课的前向公式反过来解出 x_0。它是模型当前对最终图像的猜测；调度器让 x_t 朝它移动（DDIM，Song 等 2021，正是这样做的）。

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
# ## 追踪一次生成
#
# `sdviz.generate` 记录每一步：进入的潜在表示、预测噪声、由此推出的 x̂0、时间步及其 ᾱ_t。
# 步从 0 开始计数，与 Python 的索引一致：第 k 步就是 `run["denoiser.latents"][k]`，在表格、图和探索器里都是如此。

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("scheduler:", run["scheduler.name"])
sdviz.course.table(
    {
        "step": range(run.n_steps),
        "t (timestep)": run["scheduler.step_timestep"].int(),
        "ᾱ_t (signal share)": run["scheduler.step_alpha_bar"],
    },
    formats={"ᾱ_t (signal share)": ".3f"},
    notes="step: counted from 0 (step k is run[...][k]); even the first step's ᾱ_t is above 0",
)

# %% [markdown]
# 胶片图分三行显示其中几步：
#
# - **x_t，线性预览**（linear preview）：潜在表示的每个位置画成一个像素，颜色由一个从各潜在通道（latent channel）到 RGB 的线性映射给出（最小二乘，在这次运行的最终图像上拟合）；
# - **x_t，经 VAE 解码**：同一个潜在表示经过变分自动编码器（VAE）的解码器（decoder）；
# - **x̂0，经 VAE 解码**：模型当前对最终图像的猜测。
#
# （`sdviz.probes.step_images` 用 VAE 解码它们；图只负责画。）

# %%
images = sdviz.probes.step_images(run, pipe)
sdviz.figures.denoising_filmstrip(run, images=images)

# %% [markdown]
# 起初 x_t 是噪声，预览也把它显示成噪声，而 x̂0 已经给出了布局的一个模糊猜测；之后这个猜测变得清晰，x_t 向它收敛。
# 解码后的 x_t 那一行讲的是另一回事：起初是浅色背景上的紫色碎片，而且——在 sdviz-mini 上——一个红色的圆有一阵子被画成**绿色**，之后才变红。
# 第 2 课解释过这两点：只在 ShapesWorld 上训练过的解码器会用 ShapesWorld 的“词汇”去画任何东西，包括噪声；而一个*缩小了*的潜在表示（x_t 只含图像的 √ᾱ_t），它会画成另一种颜色。
# UNet 从来看不到这些图；它看到的是潜在表示，而预览把潜在表示显示得更如实。
# 在这次运行的图像上测量：

# %%
k = lesson.steps // 2  # a middle step
sdviz.course.table(
    sdviz.probes.colour_statistics(
        {
            "x_t decoded, step 0": images.latents[[0]],
            f"x_t decoded, step {k}": images.latents[[k]],
            f"x̂0 decoded, step {k}": images.pred_original_sample[[k]],
            "final image": run["vae.image"][None],
        },
        sdviz.shapes.COLOURS,
    ),
    formats=sdviz.probes.images.COLOUR_FORMATS,
    notes=sdviz.probes.images.colour_notes(),
)

# %% [markdown]
# ## 探索每一步
#
# 拖动滑块（或按播放）。
# 所有面板显示的是同一步（从 0 开始计数，与表格一致）：经线性预览和经 VAE 解码的 x_t、经 VAE 解码的 x̂0、潜在空间（latent space）中的预测噪声（每个潜在通道一块）、提示词中每个词被关注的位置（第 7 课），以及这一步在噪声调度（noise schedule）上的位置。
# 这里什么都不重新计算：这个交互控件（widget）读取的是记录下来的运行。

# %%
sdviz.widgets.DenoisingExplorer(run, pipe)

# %% [markdown]
# ## 手动走一步
#
# `sdviz.denoise_step` 执行单独的一步——一次带引导的 UNet 调用，一次调度器更新——作用于你给它的任何潜在表示。
# 把记录下来的中间某一步的 x_t 交给它：它应当重现流水线在这一步所做的事。
# （第 9 课 `09_sampling_loop.py` 会把它拆开：你用普通的 diffusers 调用写出整个循环——分词器（tokenizer）、文本编码器（text encoder）、在 [无条件, 文本] 上运行的 UNet、引导、`scheduler.step`、解码——并与 `pipe(...)` 的结果完全对上。）

# %%
x_t, t = run["denoiser.latents"][k], int(run["scheduler.step_timestep"][k])
step = sdviz.denoise_step(
    pipe,
    x_t,
    t,
    lesson.prompt,
    guidance_scale=run["pipeline.guidance_scale"],
    num_inference_steps=lesson.steps,
)
print(f"step {k}: t = {t} → next t = {step['prev_t']}")
print(
    "noise prediction, largest difference to the run:",
    float((step["noise_pred"] - run["denoiser.noise_pred"][k]).abs().max()),
)
print(
    "next latent,      largest difference to the run:",
    float((step["prev_sample"] - run["denoiser.latents"][k + 1]).abs().max()),
)

# %% [markdown]
# 而 x̂0 确实就是把前向公式反过来解出的 x_0：

# %%
abar = run["scheduler.step_alpha_bar"][k]
x0_by_hand = (x_t - (1 - abar).sqrt() * run["denoiser.noise_pred"][k]) / abar.sqrt()
print(
    "x̂0 by hand vs the run's, largest difference:",
    float((x0_by_hand - run["denoiser.pred_original_sample"][k]).abs().max()),
)

# %% [markdown]
# ## 每一步去掉了什么
#
# 每一步离最终结果还有多远？测量 x_t 以及 UNet 的猜测 x̂0 到最终潜在表示的距离：

# %%
latents, x0_hat = run["denoiser.latents"], run["denoiser.pred_original_sample"]
final = latents[-1]
sdviz.course.table(
    {
        "step": range(run.n_steps),
        "t": run["scheduler.step_timestep"].int(),
        "‖x_t − final‖": (latents[:-1] - final).flatten(1).norm(dim=1),
        "‖x̂0 − final‖": (x0_hat - final).flatten(1).norm(dim=1),
    },
    formats={"‖x_t − final‖": ".1f", "‖x̂0 − final‖": ".1f"},
    notes=f"‖·‖: Euclidean distance in latent space; the final latent's own ‖final‖ = {float(final.norm()):.1f}",
)

# %% [markdown]
# x_t 稳步接近结果，每步去掉一层噪声。
# x̂0 接近得早得多：构图——哪些形状、哪些颜色、在哪里——在最初几步就已确定，后面的步主要是去除剩下的噪声、细化细节。

# %% [markdown]
# ## 比较调度器
#
# UNet 还是同一个；由**调度器**决定如何把它的噪声预测变成下一个潜在表示，以及访问哪些时间步。
# DDIM 确定性地朝 x̂0 迈步；Euler 把同一个过程当作关于 σ 的常微分方程来积分；DPM-Solver++ 用一个更高阶的求解器，用更少的步数也能应付。
# 三者都使用模型的 ᾱ_t：它属于训练，而不属于采样器（sampler），所以图中三者共用一条曲线。
# 不同的是各自在哪里迈步（右图）——在这些设置下，DDIM 和 Euler 访问的是完全相同的时间步：

# %%
sdviz.figures.noise_schedule(
    pipe, "euler", "dpm++", steps=[lesson.steps, lesson.steps, lesson.steps // 2]
)

# %% [markdown]
# 在一个 `with` 块的范围内换掉调度器（`sdviz.schedulers.using_scheduler` 用模型自己的噪声调度构建它，并在之后把原来的调度器放回去，即使块中出错也一样），保持随机种子（seed）不变，再生成一次——DPM-Solver++ 只用一半的步数：

# %%
with sdviz.schedulers.using_scheduler(pipe, "euler"):
    run_euler = sdviz.generate(
        pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
    )
with sdviz.schedulers.using_scheduler(pipe, "dpm++"):
    run_dpm = sdviz.generate(
        pipe,
        lesson.prompt,
        steps=lesson.steps // 2,
        seed=lesson.seed,
        guidance_scale=lesson.guidance,
    )
print("after the with-blocks the pipeline samples with", type(pipe.scheduler).__name__, "again")
difference = f"mean |difference| to the {run['scheduler.name']} image"
sdviz.course.table(
    {
        "scheduler": [run_euler["scheduler.name"], run_dpm["scheduler.name"]],
        "steps": [run_euler.n_steps, run_dpm.n_steps],
        difference: [
            (run_euler["vae.image"] - run["vae.image"]).abs().mean(),
            (run_dpm["vae.image"] - run["vae.image"]).abs().mean(),
        ],
    },
    formats={difference: ".3f"},
    notes="pixel values lie in [0, 1]: 0 is the same picture, 0.01 a barely visible change",
)

# %%
sdviz.figures.denoising_filmstrip(run_euler, images=sdviz.probes.step_images(run_euler, pipe))

# %%
sdviz.figures.denoising_filmstrip(run_dpm, images=sdviz.probes.step_images(run_dpm, pipe))

# %% [markdown]
# ## 自测
#
# 先预测，再运行下面的单元来检查：
#
# 1. `run["denoiser.latents"]` 保存的潜在表示比步数多一个。它的形状是什么？为什么多一个？
# 2. 这次运行的第一个和最后一个时间步是多少？第一个是 999 吗？
# 3. 在 `images`（来自 `sdviz.probes.step_images`）中，x_t 的线性预览和它的 VAE 解码哪个更大？每边大几倍？

# %%
print(
    "1. latents",
    tuple(run["denoiser.latents"].shape),
    "for",
    run.n_steps,
    "steps: x_T and each step's output",
)
print(
    "2. first and last timestep:",
    int(run["scheduler.step_timestep"][0]),
    int(run["scheduler.step_timestep"][-1]),
)
print(
    "3. preview",
    tuple(images.preview.shape[-2:]),
    "vs decode",
    tuple(images.latents.shape[-2:]),
    "(height, width): the VAE's factor",
    pipe.vae_scale_factor,
)

# %% [markdown]
# ## 小结
#
# - 生成就是把扩散（diffusion）反过来运行：每一步 UNet 预测 x_t 中的噪声，调度器去掉其中一部分。
# - x̂0，即预测所对应的干净图像，是一个随时更新的猜测，一步比一步清晰；x_t 跟随着它。
# - 要看 x_t，请用线性预览：VAE 会把它解码进自己训练过的那个世界（对 sdviz-mini 来说，就是 ShapesWorld 式的碎片和走了样的颜色）。
# - 前面的步决定构图，后面的步决定细节。
# - 调度器可以互换：同一过程的不同求解器访问不同的时间步，需要的步数（steps）也不同。
#
# ### 练习
#
# 1. 在探索器中，找出 x̂0 第一次显示正确颜色的那一步，以及第一次显示正确形状的那一步。那里的 ᾱ_t 是多少？
# 2. 在 `run["scheduler.step_timestep"]` 的第一个时间步上，对纯噪声（`torch.randn_like(x_t)`）运行 `sdviz.denoise_step`：仅仅一步之后，x̂0 是什么样子？用 `sdviz.decode(pipe, ...)` 解码它。
# 3. 用同一个随机种子运行 `"euler_ancestral"` 两次：为什么它的结果不只取决于初始噪声？
