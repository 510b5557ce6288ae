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
# # 第 7 课：文本条件——交叉注意力与引导
#
# 第 6 课把提示词（prompt）变成了一个由标记向量组成的矩阵。UNet 是怎样*使用*它的？
# 《图解 Stable Diffusion》给出了答案：UNet 的 ResNet 块（ResNet block）之间穿插着**注意力层**，在这些层里，潜在图像向文本提问。
# 每个潜在位置（一个*查询*（query））把自己和每个标记向量（*键*（key））作比较，然后取这些向量的加权混合（*值*（value））：
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt d}\right)V,
# \qquad Q = W_Q\,\varphi(x_t),\; K = W_K\,\tau(y),\; V = W_V\,\tau(y)$$
#
# （Rombach 等，2022，第 3.3 节）。softmax 权重构成**每个标记一张图**：每个图像位置的注意力有多少落在这个词上。
# sdviz 在每一步都记录它们，在注意力头（head）上、以及在 UNet 中间块（mid block）以外的 `attn2` 层上取平均——正是 DAAM（Tang 等，2023）取平均的那些层——并可按需逐层记录。
# 本课还会*测量*这样一张图能多准确地找到它的词所指的物体，以及为什么选这些层。
#
# 本课的后半部分讲**无分类器引导**（classifier-free guidance），这个技巧让文本起更大的作用。

# %% [markdown]
# ## 准备
#
# 下面的代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词也保持英文：模型只认识英文提示词——sdviz-mini 只学过 ShapesWorld 的英文描述（caption），Stable Diffusion 1.x 的 CLIP 分词器（tokenizer）和文本编码器（text encoder）也只在英文图文对上训练过，看不懂中文提示词，真正使用 SD 1.x 的用户同样得用英文写提示词。

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
# ## 一次生成的注意力图
#
# 哪些层关注文本？在 UNet 的每个 Transformer 块（block）里，diffusers 把自注意力（self-attention）层命名为 `attn1`（图像位置彼此相看），把交叉注意力（cross-attention）层命名为 `attn2`（图像位置看向标记（token））。
# 模型也可以让 `attn1` 成为交叉注意力层（UNet 配置中的 `only_cross_attention`，每个下行块（down block）一个开关，上行块（up block）与之镜像对应）：sdviz-mini 在它的第一个下行块和最后一个上行块里这样做了，也就是潜在表示（latents）处于完整分辨率的那两个块。
# sdviz 记录每一个关注文本的层，不管它叫什么名字；`attention_layers="*"` 会保留每一层自己的图。（Stable Diffusion 1.5 有 16 个这样的层，全是 `attn2`。）
# 平均值 `attention.maps` 只取中间块以外的 `attn2` 层（`sdviz.attention.default_aggregate_layers`）：下面“哪些层和哪些步知道词在哪里”一节会测量为什么这样选。

# %%
run = sdviz.generate(
    pipe,
    lesson.prompt,
    steps=lesson.steps,
    seed=lesson.seed,
    guidance_scale=lesson.guidance,
    attention_layers="*",
)
maps = run["attention.maps"]  # (steps, tokens, h, w)
print("tokens:", run.words)
print("only_cross_attention per down block:", pipe.unet.config.only_cross_attention)
print(f"{run['attention.n_layers']} layers attend to the text")
averaged = sdviz.attention.default_aggregate_layers(pipe.unet)
print(
    f"{len(averaged)} of them are averaged into the maps:",
    tuple(maps.shape),
    "(steps, tokens, h, w)",
)
sdviz.course.attention_layers_table(run)

# %% [markdown]
# softmax 是在标记上做的，所以在每个位置，各标记分到的注意力加起来等于 1：

# %%
print("sum over tokens, min and max:", float(maps.sum(1).min()), float(maps.sum(1).max()))

# %% [markdown]
# 每个词看向哪里？每个词一张热力图，叠在生成的图像上（在所有步上取平均）：

# %%
sdviz.figures.cross_attention(run, ["red", "circle", "blue", "square"])

# %% [markdown]
# 注意力并不全落在词上。
# 在 Stable Diffusion 中，很大一部分注意力落在起始标记 `<start>` 上：在 CLIP 的因果文本编码器里，之后的每个标记都能看到它，它充当一个“不特指任何东西”的汇聚点（sink）；`<end>` 之后的填充标记（padding token）已经看过整个句子，携带着它的概括。
# 你的模型是怎样分配注意力的？下面是最后一步每个标记分到的平均份额：

# %%
share = run.token_shares(step=-1)  # (tokens,): the mean over the image positions
n = run["tokenizer.n_tokens"]  # the real tokens; the rest is padding
sdviz.course.table(
    {"token": run.words, "share of the attention": share[:n]},
    formats={"share of the attention": ".1%"},
    notes=f"and all {len(share) - n} padding tokens together: {float(share[n:].sum()):.1%}",
)

# %% [markdown]
# 同样的划分画成图：起始标记、提示词中的词，以及结束标记和它后面的填充。
# 把 `MODEL` 设为 Stable Diffusion 1.5，同样的单元就会测量真实的模型：在那里，大部分注意力同样落在不是词的标记上。

# %%
shares = sdviz.probes.token_shares(maps, run["tokenizer.n_tokens"])  # averaged over steps
sdviz.figures.attention_shares({"this run (default aggregate)": shares})

# %% [markdown]
# ## 跨层与跨步
#
# 每一层在自己的分辨率上工作：UNet 中间的粗糙层决定布局，靠近输出的精细层决定细节。
# 而且随着图像逐渐成形，注意力图（attention map）会在各步之间变化。

# %%
sdviz.figures.attention_drilldown(run, "circle")

# %% [markdown]
# 自己探索一下：选一个词、一层和一步。

# %%
sdviz.widgets.AttentionExplorer(run, word="circle")

# %% [markdown]
# ## 哪些层和哪些步知道词在哪里
#
# 一张*看起来*对的热力图证明不了什么。
# 在 ShapesWorld 图像上，我们确切地知道每个物体在哪里，所以可以给注意力图打分。
# `sdviz.probes.localisation` 取一些留出图像（held-out images）——从未用于训练的 ShapesWorld 图像——把每张图加噪到时间步（timestep）t，用图像自己的描述运行一次 UNet，然后把每个名词（"circle"）和颜色词（"red"）的注意力图与该物体的掩码（mask）比较打分：**指向游戏（pointing game）**（图中最亮的像素是否落在物体内？），以及注意力图（缩放到 [0, 1] 并在 0.4 处截断）与掩码的**交并比（IoU）**。
# 逐层、逐时间步地打分——另外还有两种平均：所有层的平均，以及默认平均。
# （描述是 ShapesWorld 的：换一个 `MODEL`，这个探针照样能运行，只是很慢，而且用的是它的模型从未见过的 64 像素图画。）

# %%
loc = sdviz.probes.localisation(pipe, count=24, timesteps=(901, 701, 501, 301, 101))
sdviz.figures.attention_localisation(loc)

# %%
rates = loc.rate(loc.aggregates["default"], "pointing").mean(0)  # (noun, colour), mean over t
sdviz.course.table(
    {
        "word": ["noun", "colour word"],
        "peak inside its object (default maps)": rates,
        "mIoU": loc.rate(loc.aggregates["default"], "iou").mean(0),
    },
    formats={"peak inside its object (default maps)": ".0%", "mIoU": ".0%"},
    notes=f"{loc.n_images} held-out images, averaged over t = {loc.timesteps}",
)

# %% [markdown]
# 这些现场算出的数字来自 24 张图像、约 40 个物体：一个物体就占 2.5 个百分点，所以两行平均值在某些 t 上可能因偶然而互换位置。
# 说了算的是完整的基准测试：`benchmarks/attention_localisation.py`（其输出见 `benchmarks/results/2026-12-07-attention-cpu.txt`）在六个时间步上给 96 张留出图像打分，还给 64 张生成的双物体图像打分（"a red circle to the left of a blue square"，各用自己的随机种子，25 步，g = 2），这些图像中的物体由它从像素中找出——在 53 张图像中两个物体都找到了，共 106 个物体。
# 在那里，每个词的注意力图先在各步上取平均，再打分：峰值是否落在它的物体内？它放在自己物体上的质量是否多于另一个物体？它有多少落在自己的物体内？
# 与在相同 UNet 输入上运行的 DAAM 0.2.0 本身对比：
#
# | 生成的图像，106 个物体 | 峰值在物体内：名词 | 颜色词 | 自己 > 另一个：名词 | 颜色词 | 质量在物体内：名词 | 颜色词 |
# |---|---|---|---|---|---|---|
# | sdviz 之前的默认（全部 10 层，双线性） | 96.2% | 27.4% | 84.9% | 67.0% | 14.2% | 6.0% |
# | DAAM 0.2.0（6 个 `attn2` 层，双三次） | 97.2% | 29.2% | 93.4% | 70.8% | 18.0% | 6.4% |
# | **sdviz 现在的默认**（5 个 `attn2` 层，双三次） | **97.2%** | **41.5%** | **93.4%** | **71.7%** | **19.7%** | **9.7%** |
#
# （随机一个像素落在物体内的概率是 4.9%，图像中心是 3.8%。）
# 在留出图像上，默认注意力图对名词有 86.7% 的时候指向物体内，对颜色词是 29.1%（之前：86.1% 和 26.6%；DAAM 对同样注意力图的聚合：86.4% 和 23.2%），平均交并比（mIoU）为 38.6% 和 18.6%（之前：33.8% 和 12.1%；DAAM：38.3% 和 14.4%）。
#
# 改了什么、为什么，都在同一个基准测试里测得。**取哪些层**做平均：中间块的 4×4 注意力图（一个单元有图像的四分之一宽）只对 4.5% 的名词指向物体内，sdviz-mini 设为交叉注意力的那些 `attn1` 层为 10–52%，编码器的 8×8 层（`down 1.0`）对名词为 35%、对颜色词为 11%：去掉这些层，颜色词从 27% 提高到 41%。
# 以及**怎样放大粗糙的注意力图**：双三次缩放（DAAM 的做法）保住了 8×8 注意力图的峰值，双线性缩放则会把它们抹平；名词的“自己 > 另一个”由 92.5% → 93.4%，质量由 18.0% → 19.7%。
# 两者都和 DAAM 一样，使用引导批次（batch）中文本的那一半；都不对单个词的注意力图重新缩放。
#
# ### 为什么 "red" 和 "blue" 的注意力图是平的？
#
# 名词有 97% 的时候找到自己的物体，颜色词只有 41%。测得的原因有三个：
#
# 1. *大多数层不负责放置颜色。* 名词由上行路径的粗糙层放置（单是 `up 1.1` 就对 75% 的留出名词指向正确的物体）；颜色词只在一层里指对，即最后一个完整分辨率的层（`up 2.1`：41%），在其他层只有 7–24%。对层取平均会把它稀释。
# 2. *颜色来得晚。* 在留出图像上，颜色词的注意力图在 t = 901 时指对 16%，在 t = 21 时为 35%，名词则为 59% 和 93%；在一次生成中，颜色词的得分从第一步的 25% 升到第 16 步的 41%。形状放在哪里，在噪声最大的那几步就定下了；它是什么颜色，要等有了可以上色的图像才定。
# 3. *颜色标记不知道自己的物体。* CLIP 的文本编码器是因果的（第 6 课）：它在读到 "circle" 之前就编码了 "red"，所以 "red" 的向量无法说明哪个物体是红的——不管后面跟着什么，它都一样。名词的向量是在读过颜色之后编码的，两者都带着。验证一下：两个提示词里第 2 个标记都是 "red"，第 3 个标记是名词。

# %%
red_circle = sdviz.text.embed(pipe, "a red circle")  # (tokens, width)
red_square = sdviz.text.embed(pipe, "a red square")
blue_circle = sdviz.text.embed(pipe, "a blue circle")
print(
    "'red' before 'circle' vs before 'square', largest difference:",
    float((red_circle[2] - red_square[2]).abs().max()),
)
print(
    "'circle' after 'red' vs after 'blue', largest difference:",
    float((red_circle[3] - blue_circle[3]).abs().max()),
)

# %% [markdown]
# 不管后面跟着什么形状，颜色词的向量都完全相同（差为 0），而名词的向量随它前面的颜色而变：所以 UNet 可以从名词的标记学到要把什么涂成红色，"red" 的注意力图也就不必单独圈出红色的物体。

# %% [markdown]
# ## 无分类器引导
#
# 每一步，UNet 实际上都运行**两次**：一次用提示词，得到 ε_text；一次用空提示词（empty prompt），得到 ε_uncond。
# 两者之差就是“更像提示词”的方向。流水线用**引导系数**（guidance scale）g 把它放大（Ho & Salimans 2022）：
#
# $$\hat\varepsilon = \varepsilon_\text{uncond} + g\,(\varepsilon_\text{text} - \varepsilon_\text{uncond})$$
#
# 这次运行把两半都记录了下来；验证一下这个公式：

# %%
g = run["pipeline.guidance_scale"]
guided = run["denoiser.noise_pred_uncond"] + g * (
    run["denoiser.noise_pred_text"] - run["denoiser.noise_pred_uncond"]
)
print(
    f"guidance scale {g}; largest difference to the pipeline's guided prediction:",
    float((guided - run["denoiser.noise_pred"]).abs().max()),
)
print("the empty prompt's embeddings:", tuple(run["text_encoder.negative_prompt_embeds"].shape))

# %%
sdviz.figures.guidance_terms(run)

# %% [markdown]
# 同一个提示词、同一个随机种子（seed），取几个不同的引导系数。
# g = 1 就是普通的有条件（conditional）采样（这时 diffusers 会跳过无条件（unconditional）的那一半）；g 越大，沿 ε_text − ε_uncond 推得越用力。
# Stable Diffusion 1.5 通常用 7.5；上面的运行用的是 `lesson.guidance`，即所加载模型推荐的系数。
# `sdviz.probes.guidance_runs` 每个系数生成一次，图把这些运行画出来：

# %%
sweep = sdviz.probes.guidance_runs(
    pipe, lesson.prompt, [1.0, 2.0, 4.0, 7.5, 15.0], seed=lesson.seed, steps=lesson.steps
)
sdviz.figures.guidance_sweep(sweep)

# %% [markdown]
# ### 引导带来什么、付出什么：测量结果
#
# 一个提示词、一个随机种子说明不了引导有没有用：这个提示词也许在任何系数下都很容易。
# `benchmarks/guidance_sweep.py` 用固定的随机种子，在九个系数下生成了 96 个单物体提示词（"a red circle"）、96 个双物体提示词（"a blue star to the left of a green star"），以及 36 个点名训练中从未见过的颜色–形状组合的提示词，并从像素给每张图打分：找出饱和的色块，取 ShapesWorld 六种颜色中最近的那一种，再用一个在 ShapesWorld 掩码上拟合的形状分类器——从不用模型自己的 CLIP。
# 它还测量了画出的颜色偏离 ShapesWorld 调色板（palette）多远（物体像素的平均 RGB 距离，0–255），以及边缘有多锐利。
# sdviz-mini 附带了这份结果（它文件夹里的 `guidance.json`），所以这里什么也不用生成：

# %%
measured = sdviz.probes.measured_guidance()  # sdviz-mini's sweep, whatever MODEL is
sdviz.course.table(
    measured.columns("accuracy"),
    title="Prompts followed (%), sdviz-mini, 25 DDIM steps",
    formats={"guidance g": "g"},
    notes=(
        f"n per scale: {measured.n['one_object']} one-object and "
        f"{measured.n['two_objects']} two-object prompts; {measured.n['held_out_pairs']} "
        "name a colour-shape pair never seen in training"
    ),
)

# %%
sdviz.figures.guidance_benefit(measured)

# %% [markdown]
# 引导对得起它多花的那一次 UNet 调用。
# 没有引导时（g = 1），sdviz-mini 遵循了 58% 的双物体提示词和 69% 的未见组合（它倾向于画出它见过的与该形状搭配的颜色）；在 g = 2 时，分别为 83% 和 97%。
# 从 2 到 7.5，准确率与最佳值只差几个提示词；到 15 时，双物体提示词回落到 65%。
# 代价体现在颜色上：在 g = 2 附近最接近调色板（相距 15.3 个 RGB 单位；经变分自动编码器（VAE）编码再解码的真实图像：11.3），之后每往上一档就更远（7.5 时 20.1，15 时 25.3）——也就是上面最大系数下那种过饱和的样子。
# 边缘不随 g 变化。模型推荐的系数就是这样选出来的：

# %%
print(measured.recommendation())

# %% [markdown]
# ## 自测
#
# 先回答，再运行下面的单元来检查。
#
# 1. `run["attention.maps"]` 每一步、每个标记各有一张图：这次运行中它的四个维度各是多少（步数、分词器的长度、潜在表示的高和宽）？
# 2. 在一个图像位置上，所有标记的注意力权重加起来等于多少？
# 3. 哪一层的注意力图最常找到颜色词的物体——粗糙的层，还是完整分辨率的层？
# 4. 词得到的注意力是多于还是少于全部注意力的一半？

# %%
print("1. maps:", tuple(run["attention.maps"].shape), "(steps, tokens, h, w)")
print("2. sum over the tokens at one position:", float(run["attention.maps"][0, :, 0, 0].sum()))
colour_by_layer = loc.rate(loc.per_layer, "pointing").mean(1)[:, 1]  # (layers,), mean over t
print("3. best layer for colour words:", loc.layers[int(colour_by_layer.argmax())])
print(f"4. the words' share of the attention: {shares['words']:.0%}")

# %% [markdown]
# ## 小结
#
# - 文本只通过**交叉注意力**进入 UNet：潜在位置是查询，标记向量是键和值；注意力权重为每个标记构成一张图。
# - 在注意力头、层和步上取平均后，一个词的注意力图显示模型把它放在了哪里；逐层看，粗糙的层放置物体，精细的层加以细化。
# 用精确的掩码来衡量，名词的注意力图能找到自己的物体；颜色词的注意力图是平的，因为因果文本编码器在编码颜色时还没读到名词。
# - 大部分注意力落在起始标记、结束标记和填充标记上，而不是落在词上。
# - **无分类器引导**分别在有提示词和无提示词的情况下运行 UNet，并沿两者之差按引导系数外推。
# 在 sdviz-mini 上测得，少量引导（g = 2）把遵循的双物体提示词从 58% 提高到 83%；很大的系数会把颜色拉离调色板，又丢掉一些提示词。
#
# ### 练习
#
# 1. 生成 "a red circle to the right of a blue square"："circle" 和 "square" 的注意力图会不会换边？多试几个随机种子。
# 2. 在 `sdviz.generate` 中对提示词 "a circle" 使用 `negative_prompt="red"`：负面提示词（negative prompt）替换了引导公式中的哪一项？颜色会怎样？
# 3. 用 `sdviz.widgets.AttentionExplorer` 找出 "circle" 的注意力图最清晰的那一层。它在哪些步变得清晰？
