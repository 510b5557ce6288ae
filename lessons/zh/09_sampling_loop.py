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
# # 第 9 课：亲手写出采样循环
#
# *最好紧接在第 4 课之后学习。* 到目前为止，每一张图像都来自一次调用：`pipe(prompt)` 或 `sdviz.generate`。
# 在这里，你要亲手把这次调用写出来：大约十五行普通的 `diffusers` 和 `transformers` 调用，正好是文章画出的那条流水线：
#
# 1. **分词器**（tokenizer）把提示词（prompt）（以及一个空提示词（empty prompt））变成标记 ID（token id）；
# 2. **文本编码器**（text encoder）把这些 ID 变成标记向量；
# 3. **调度器**（scheduler）挑出要访问的时间步（timestep）；
# 4. 起始的**潜在表示**（latents）是带随机种子的高斯噪声；
# 5. 对每个时间步 t，**UNet** 预测噪声，**无分类器引导**（classifier-free guidance）把它的两个预测混合起来，调度器再走一步；
# 6. **变分自动编码器（VAE）的解码器**把最终的潜在表示画成图像。
#
# 然后你会检查：你的循环给出的图像与 `pipe(...)` *完全相同*，逐位一致；再一次只改一样东西——步数、调度器、引导系数、提示词——看看每样东西起什么作用。
# 这是唯一一节写 `for` 循环的课：循环本身就是主题。

# %% [markdown]
# ## 准备
#
# 下面的代码单元与英文版逐字相同（包括手写循环里的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述（caption），Stable Diffusion 1.x 的 CLIP 分词器和文本编码器也只在英文图文对上训练过，看不懂中文提示词，真正使用 SD 1.x 的用户同样得用英文写提示词。

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
# ## 各项设置
#
# 五个数字和词语决定了图像：提示词、去噪步数、引导系数（guidance scale）g、起始噪声的随机种子（seed），以及调度器（流水线自己的那个，sdviz-mini 用的是 DDIM）。
# 我们从本课的准备中取出它们。

# %%
import torch

prompt, steps, guidance, seed = lesson.prompt, lesson.steps, lesson.guidance, lesson.seed
scheduler = pipe.scheduler
tokenizer = pipe.tokenizer
print(f"prompt {prompt!r}, {steps} steps, guidance g = {guidance}, seed {seed}")
print("scheduler:", type(scheduler).__name__)

# %% [markdown]
# ## 1. 分词器：文本 → 标记 ID
#
# 无分类器引导（第 7 课）每一步运行两次 UNet：一次用提示词，一次用**空提示词** `""`，即无条件（unconditional）分支。所以两个都要分词。
# 每一个都被填充（padding）到文本编码器训练时所用的长度；这个长度属于分词器（`tokenizer.model_max_length`：Stable Diffusion 和 sdviz-mini 都是 77）。

# %%
ids = tokenizer(
    ["", prompt],
    padding="max_length",
    max_length=tokenizer.model_max_length,
    truncation=True,
    return_tensors="pt",
).input_ids  # (2, L): row 0 the empty prompt, row 1 ours
print("token ids:", tuple(ids.shape), "= (2 prompts, L tokens each)")
print("row 0, first 4 ids:", ids[0, :4].tolist(), "(start, end, then padding)")
print("row 1, first 12 ids:", ids[1, :12].tolist())

# %% [markdown]
# ## 2. 文本编码器：标记 ID → 标记向量
#
# 每个提示词调用一次，和流水线一样（`encode_prompt`）。
# `last_hidden_state` 为每个标记（token）保存一个向量；两个提示词的结果按 **[无条件, 文本]** 的顺序堆叠起来——这是流水线使用的顺序，也是下面拆分 UNet 输出时的顺序。
# `torch.no_grad()`：我们只运行这些网络，不训练它们。

# %%
with torch.no_grad():
    uncond = pipe.text_encoder(ids[:1].to(pipe.device)).last_hidden_state
    text = pipe.text_encoder(ids[1:].to(pipe.device)).last_hidden_state
embeddings = torch.cat([uncond, text])  # (2, L, d)
print("token vectors:", tuple(embeddings.shape), "= (2 prompts, L tokens, d numbers each)")

# %% [markdown]
# ## 3. 时间步
#
# UNet 是在 1,000 个噪声水平（noise level）上训练的；采样器（sampler）只访问其中的 `steps` 个。
# `set_timesteps` 选出是哪几个（第 4 课把它们画在了噪声调度（noise schedule）上）。
# 它在生成噪声之前调用，和流水线一样：有些调度器要按它们将访问的第一个时间步来确定起始噪声的大小。

# %%
scheduler.set_timesteps(steps, device=pipe.device)
print(f"{len(scheduler.timesteps)} timesteps, from noisiest to cleanest:")
print(scheduler.timesteps.tolist())

# %% [markdown]
# ## 4. 起始潜在表示：带随机种子的噪声
#
# 生成从潜在空间（latent space）中的高斯噪声开始。
# 它的形状来自模型的配置：UNet 的输入通道（channel）数和它原生的潜在尺寸（`sample_size`；图像要大 `pipe.vae_scale_factor` 倍）。
# 用 `seed` 设定种子的 `torch.Generator` 让噪声——从而让图像——可以复现。
# 调度器可能希望噪声比一个标准差更宽：`init_noise_sigma` 说明宽多少（DDIM 为 1；以 σ 计量噪声的调度器，如 Euler，起始时更宽，宽多少取决于第一个时间步——这就是 `set_timesteps` 要先调用的原因）。
#
# *运行这个单元之前先想一想：`latents` 会是什么形状？*

# %%
shape = (
    1,
    pipe.unet.config.in_channels,
    pipe.unet.config.sample_size,
    pipe.unet.config.sample_size,
)
generator = torch.Generator(pipe.device).manual_seed(seed)
latents = torch.randn(shape, generator=generator, device=pipe.device, dtype=embeddings.dtype)
latents = latents * scheduler.init_noise_sigma
print("latents:", tuple(latents.shape), "= (1 image, channels, height, width) in latent cells")
print(
    f"the image will be {pipe.vae_scale_factor} × {tuple(latents.shape[2:])} = "
    f"{pipe.vae_scale_factor * latents.shape[2]} × {pipe.vae_scale_factor * latents.shape[3]} pixels"
)
print(f"init_noise_sigma = {float(scheduler.init_noise_sigma)}: the noise's standard deviation")

# %% [markdown]
# ## 5. 循环
#
# 就是它——Stable Diffusion 的核心，每一步四行：
#
# - `scale_model_input` 按调度器的 UNet 所期望的方式缩放 x_t（DDIM：不变；Euler：除以 √(σ²+1)）；
# - **UNet** 在一个包含两份潜在表示的批次（batch）上运行一次，第一份读取空提示词的向量，第二份读取我们的提示词的向量，并预测每一份中的噪声；
# - **无分类器引导**：ε̂ = ε̂_uncond + g · (ε̂_text − ε̂_uncond)，从“任意图像”朝“这个提示词的图像”迈一步，步长是两者之差的 g 倍；
# - **调度器**把这个噪声预测变成下一个噪声更少的潜在表示。

# %%
with torch.no_grad():
    for t in scheduler.timesteps:
        latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)  # (2, c, h, w)
        noise_uncond, noise_text = pipe.unet(
            latent_input, t, encoder_hidden_states=embeddings
        ).sample.chunk(2)
        noise = noise_uncond + guidance * (noise_text - noise_uncond)  # classifier-free guidance
        latents = scheduler.step(noise, t, latents).prev_sample  # x_t → the next, cleaner x
print("final latents:", tuple(latents.shape))

# %% [markdown]
# ## 6. 解码器：潜在表示 → 像素
#
# UNet 处理的潜在表示乘过 VAE 的 `scaling_factor`（SD 为 0.18215；第 5 课），所以解码之前先把它除掉。
# 解码器（decoder）画出的值在 [−1, 1] 内；`/ 2 + 0.5` 把它们映射到 [0, 1]，即显示图像所用的范围。

# %%
with torch.no_grad():
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
image = (image / 2 + 0.5).clamp(0, 1)  # (1, 3, H, W) in [0, 1]
print("image:", tuple(image.shape), "= (1 image, 3 colours, height, width)")

# %% [markdown]
# ## 这是流水线的图像吗？
#
# 现在运行流水线，用同样的设置，以及用同样方式设定种子的生成器。
# `output_type="pt"` 要求返回 [0, 1] 内的解码张量；默认的 PIL 图像会先把每个值舍入到 8 位。
# 只有当每一个数都完全相同时，`torch.equal` 才为 True——不是接近，而是*相等*。

# %%
reference = pipe(
    prompt,
    num_inference_steps=steps,
    guidance_scale=guidance,
    generator=torch.Generator(pipe.device).manual_seed(seed),
    output_type="pt",
).images  # (1, 3, H, W) in [0, 1]
print("torch.equal(image, reference):", torch.equal(image, reference))
print(f"(True: all {image.numel():,} numbers of the two images are the same)")
print(
    "largest |difference|:",
    float((image - reference).abs().max()),
    "(pixel values lie in [0, 1]; one step of an 8-bit colour is 1/255 ≈ 0.004)",
)
sdviz.figures.filmstrip(torch.cat([image, reference]), ["your loop", "pipe(...)"])

# %% [markdown]
# 逐位一致。
# `pipe(...)` 内部再没有别的事情会改变图像：它的 `__call__` 的其余部分检查输入、选择设备、显示进度条、调用回调函数，并处理这里没用到的选项（负面提示词（negative prompt）、引导重缩放（guidance rescale）、IP-Adapter 图像、安全检查器——sdviz 不加载它）。
# 要做到相等，需要同样的操作、同样的顺序、作用在同样的数上：
#
# - **同样的噪声**：同一设备上、同一种子的生成器（CPU 和 CUDA 的生成器从同一个种子抽出的数不同），同样的 dtype，乘以 `init_noise_sigma`；
# - **同样的文本向量**：每个提示词调用一次文本编码器，填充到 `model_max_length`，顺序为 [无条件, 文本]；
# - **同样的算术**：按所写的引导公式计算，调用调度器的 `step`；
# - **同样的输出**：解码后的张量，而不是 8 位的 PIL 图像。
#
# 换掉其中任何一样——另一个种子、另一个 g、把批次顺序换成 [文本, 无条件]——`torch.equal` 都会给出 False。

# %% [markdown]
# ## 改一样东西
#
# 下面把整个循环再写一遍，放在一个单元里：第 1–6 步的那些行，对下面每一种改动各运行一次。
# 每种改动只改变一个设置；第一种什么也不改，必须重现上面的图像。
# （名字 `prompt`、`steps`、`scheduler` 和 `guidance` 会依次取每种改动的值；本课自己的设置保存在 `lesson` 中。）
#
# - **更少的步数**：5 步，而不是本课的步数；
# - **另一个调度器**：Euler，用模型自己的调度器配置构建（同样的训练调度，不同的求解器；第 4 课）；
# - **引导 1**：ε̂ = ε̂_text，不再远离无条件预测；
# - **引导 7.5**：Stable Diffusion 常用的系数（加载 SD 时就是本课自己的系数）；
# - **另一个提示词**。

# %%
import diffusers

euler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
other_prompt = "a small yellow star at the top"
changes = [  # (what changed, prompt, steps, scheduler, guidance)
    ("nothing", lesson.prompt, lesson.steps, pipe.scheduler, lesson.guidance),
    ("5 steps", lesson.prompt, 5, pipe.scheduler, lesson.guidance),
    ("Euler scheduler", lesson.prompt, lesson.steps, euler, lesson.guidance),
    ("guidance 1", lesson.prompt, lesson.steps, pipe.scheduler, 1.0),
    ("guidance 7.5", lesson.prompt, lesson.steps, pipe.scheduler, 7.5),
    ("another prompt", other_prompt, lesson.steps, pipe.scheduler, lesson.guidance),
]
images = {}
with torch.no_grad():
    for change, prompt, steps, scheduler, guidance in changes:
        ids = tokenizer(
            ["", prompt],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        uncond = pipe.text_encoder(ids[:1].to(pipe.device)).last_hidden_state
        text = pipe.text_encoder(ids[1:].to(pipe.device)).last_hidden_state
        embeddings = torch.cat([uncond, text])
        generator = torch.Generator(pipe.device).manual_seed(seed)
        scheduler.set_timesteps(steps, device=pipe.device)
        latents = torch.randn(
            shape, generator=generator, device=pipe.device, dtype=embeddings.dtype
        )
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            latent_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_uncond, noise_text = pipe.unet(
                latent_input, t, encoder_hidden_states=embeddings
            ).sample.chunk(2)
            noise = noise_uncond + guidance * (noise_text - noise_uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        images[change] = (decoded / 2 + 0.5).clamp(0, 1)
print("unchanged settings reproduce the image above:", torch.equal(images["nothing"], reference))

# %% [markdown]
# ### 更少的步数
#
# 同样的噪声，用 5 步而不是本课的步数走下来：每一步都要一次去掉多得多的噪声，而调度器的每一步都只是近似，所以误差会变大。
# 变化的不只是细节：最先的、最大的那几步决定布局（第 4 课），从同样的噪声出发走得更粗糙，可能会落到另一种布局上。

# %%
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["5 steps"]]),
    [f"{lesson.steps} steps", "5 steps"],
)

# %% [markdown]
# ### 另一个调度器
#
# Euler 把同一个去噪（denoising）过程当作关于 σ 的常微分方程（ODE）来求解：它的噪声起始时宽 `init_noise_sigma` 倍，`scale_model_input` 再把 UNet 的输入缩回来——循环中对 DDIM 不起作用的那两行，现在起作用了。
# 同样的模型、同样的噪声、不同的路径：得到一张相似的图像，但不是同一张。
# 而放进了 Euler 的你的循环，仍然就是流水线：`sdviz.schedulers.using_scheduler` 在一个 `with` 块里把同样的 Euler 放进 `pipe`。

# %%
print(
    f"init_noise_sigma: Euler {float(euler.init_noise_sigma):.2f},",
    f"{type(pipe.scheduler).__name__} {float(pipe.scheduler.init_noise_sigma)}",
)
with sdviz.schedulers.using_scheduler(pipe, "euler"):
    reference_euler = pipe(
        lesson.prompt,
        num_inference_steps=lesson.steps,
        guidance_scale=lesson.guidance,
        generator=torch.Generator(pipe.device).manual_seed(lesson.seed),
        output_type="pt",
    ).images
print(
    "your Euler loop equals pipe(...) with Euler:",
    torch.equal(images["Euler scheduler"], reference_euler),
)
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["Euler scheduler"]]),
    [type(pipe.scheduler).__name__, "EulerDiscreteScheduler"],
)

# %% [markdown]
# ### 引导系数
#
# 在 g = 1 时，公式给出 ε̂_text：模型单纯的有条件（conditional）预测，不远离“任意图像”。g 越大，就越用力地推向提示词。
# 一个简单的提示词显示不出这带来了什么——第 7 课在许多提示词上测量了它——但能显示代价：在 7.5 时颜色过冲，轮廓更暗，背景也带上了颜色。

# %%
sdviz.figures.filmstrip(
    torch.cat([images["guidance 1"], images["nothing"], images["guidance 7.5"]]),
    ["g = 1", f"g = {lesson.guidance} (the model's choice)", "g = 7.5"],
)

# %% [markdown]
# ### 另一个提示词
#
# 同样的噪声、同样的步数、不同的标记向量：UNet 把同样的噪声引向另一张图像。
# 变的只有文本编码器的输出。

# %%
print("the lesson's prompt:", repr(lesson.prompt), "— another prompt:", repr(other_prompt))
sdviz.figures.filmstrip(
    torch.cat([images["nothing"], images["another prompt"]]),
    ["the lesson's prompt", "another prompt"],
)

# %% [markdown]
# ## 自测
#
# 每个问题先回答，再运行它下面的单元。
#
# **1.** 在循环内部，UNet 的输入是什么形状，为什么它的第一个维度是 2？引导后的噪声 `noise` 是什么形状？

# %%
print("UNet input:", tuple(latent_input.shape), "— guided noise:", tuple(noise.shape))

# %% [markdown]
# **2.** 在本课的设置下，一张图像调用了多少次 UNet，每次调用是否都运行了两个分支？
# `sdviz.generate` 的图像——第 1–8 课中被追踪的那些运行——和你的一样吗？（追踪会记录 UNet 在每一步的输出。）

# %%
run = sdviz.generate(
    pipe, lesson.prompt, steps=lesson.steps, seed=lesson.seed, guidance_scale=lesson.guidance
)
print("UNet calls recorded:", run["denoiser.noise_pred_text"].shape[0])
print("both branches in each call:", run["pipeline.do_classifier_free_guidance"])
print("sdviz.generate's image equals your loop's:", torch.equal(run["vae.image"], image[0]))

# %% [markdown]
# **3.** 循环中有两行对 DDIM（sdviz-mini 的调度器；SD 1.5 的 PNDM 也一样）不起任何作用：是哪两行？它们对 Euler 有作用吗？（下面的 True 表示：这一行原样返回了它收到的东西。）

# %%
x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
euler.set_timesteps(lesson.steps)
print(f"the pipeline's scheduler: {type(pipe.scheduler).__name__}")
print("init_noise_sigma     it:", float(pipe.scheduler.init_noise_sigma), end="   ")
print("Euler:", round(float(euler.init_noise_sigma), 2))
print(
    "scale_model_input    it:",
    torch.equal(pipe.scheduler.scale_model_input(x, pipe.scheduler.timesteps[0]), x),
    end="  ",
)
print("Euler:", torch.equal(euler.scale_model_input(x, euler.timesteps[0]), x))

# %% [markdown]
# ## 小结
#
# - `pipe(prompt)` 大约就是十五行：对 `""` 和提示词分词、编码，抽取带随机种子的噪声并乘以 `init_noise_sigma`，然后对每个时间步在 [无条件, 文本] 上运行 UNet，用 ε̂_u + g·(ε̂_t − ε̂_u) 混合，再让调度器走一步；最后解码 `latents / scaling_factor`。
# - 用同样的操作、按同样的顺序写出来，这个循环就能逐位重现流水线；`torch.equal` 负责检查。
# - 每个设置都是循环中的一行：步数（`set_timesteps`）、调度器（循环调用的那个对象）、引导（那个公式）、提示词（标记向量）、随机种子（噪声）。
#
# ### 练习
#
# 1. **负面提示词**替换的是分词器调用中的 `""`。在那里放上 `"blue"`，并与 `pipe(..., negative_prompt="blue", output_type="pt")` 比较：仍然相等吗？图像离没有负面提示词时的那张变了多少？
# 2. `scheduler.step(...)` 还会返回 `pred_original_sample`，即第 4 课的 x̂0。在每一步都把它保存下来，并用 `sdviz.figures.filmstrip` 把这个列表画出来（先用 VAE 解码每一个）。
# 3. 使用 `diffusers.EulerAncestralDiscreteScheduler`：它在每一步都加入新的噪声。你必须给 `scheduler.step` 传入什么，你的循环才能再次与 `pipe(...)` 一致？
