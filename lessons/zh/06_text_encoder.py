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
# # 第 6 课：文本编码器，以及 CLIP 是怎样训练的
#
# 流水线中的第一个模型读取提示词（prompt）。
# 在《图解 Stable Diffusion》（*"The Illustrated Stable Diffusion"*）里，它是“一个 Transformer 语言模型”（"a Transformer language model"）：**CLIP** 的文本部分（Radford 等 2021）。
# 它做两件事：
#
# 1. **分词器**（tokenizer）把提示词切分成标记（token）——整个词，或者未知词的片段——并把每个标记映射成一个 ID；这个列表前面加一个起始标记（start marker），后面加一个结束标记（end marker），再**填充**（padding）到一个固定长度——Stable Diffusion 中为 77——或者**截断**到这个长度；
# 2. **文本编码器**（text encoder）是一个 Transformer，它把这些 ID 变成每个标记一个向量。每个向量都取决于它前面的词："a red circle" 和 "a blue circle" 里的 "circle" 不是同一个向量。
#
# 为什么用 CLIP 的编码器？因为 CLIP 训练的目标，就是让一段描述（caption）的向量靠近它所描述的图像的向量。
# 本课的后半部分会现场训练一个小 CLIP。

# %% [markdown]
# ## 准备
#
# 代码单元与英文版逐字相同（包括其中的英文注释和打印出的英文标签），这样测试就能保证两个版本始终同步。
# 提示词也保持英文：模型只认识英文提示词——sdviz-mini 的分词器只从 ShapesWorld 的英文描述中学习，Stable Diffusion 1.x 的 CLIP 分词器和文本编码器也只在英文图文对上训练过，所以它们看不懂中文提示词，真正使用 SD 1.x 的用户同样得用英文写提示词。
# 想看看中文会怎样，可以在下面的提示词输入框里试一试：分词器不会拒绝中文，但会把每个汉字拆成几个字节（在 UTF-8 中一个汉字占 3 个字节），每个字节成为一个标记，而模型从这些字节标记里学不到任何意思。

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
# ## 标记与 ID

# %%
tok = sdviz.tokenize(pipe, lesson.prompt)
n, L = tok["n_tokens"], pipe.tokenizer.model_max_length
print(f"context length L = {L}; vocabulary of {len(pipe.tokenizer):,} tokens")
print("tokens:", tok["tokens"][:n])
print("ids:   ", tok["input_ids"][:n].tolist())
print(f"then {L - n} padding tokens {tok['tokens'][n]!r} (id {int(tok['input_ids'][n])})")

# %% [markdown]
# ## 字节对编码：片段从哪里来
#
# CLIP 的分词器使用**字节对编码**（byte-pair encoding，BPE；Sennrich 等 2016）。
# 它的词表（vocabulary）是从文本中*学*出来的：从每一个单个字符开始（也就是每一个字节，这样任何文本都能写下来），然后一次又一次地把语料中出现最频繁的一对相邻片段作为一个新标记加进来——这叫一次**合并**（merge）——直到词表达到想要的大小。
# 所加载的分词器的词表，按类别计数：

# %%
sdviz.course.tables.vocabulary_table(pipe.tokenizer)

# %% [markdown]
# sdviz-mini 的分词器只从 ShapesWorld 的描述中学习合并，并在描述里的每个词都成为一个标记时停止：表中的合并拼出了 ShapesWorld 的几十个词，仅此而已。
# 它是一个很小的、**封闭**的词表。
# Stable Diffusion 的 CLIP 分词器从大量网络文本中学到了 48,894 次合并（它共有 49,408 个标记），所以它拥有英语中常见字母序列的片段。
#
# 对一个词分词，就是重放学到的合并：最早学到的（最频繁的）先用，只要还有能用的合并就继续下去。
# 一个 ShapesWorld 的词会被一路合并成一个标记：

# %%
sdviz.course.tables.bpe_table(pipe.tokenizer, "triangle")

# %% [markdown]
# 一个词永远不会被拒绝：它会被切成合并能够拼出的片段。
# 下面是描述里从未出现过的两个词，与一个出现过的词对比：

# %%
sdviz.course.tables.pieces_table(pipe.tokenizer, ["triangle", "rectangle", "dodecahedron"])

# %% [markdown]
# "rectangle" 从没在 ShapesWorld 中出现过，却被切成了三个片段："re"（来自 "red"）、"ct"（来自 "picture"）和 "angle"（来自 "triangle"）都是学过的。
# 这正是 BPE 的用途：一个没见过的词由已知的片段拼成。
# "dodecahedron" 中几乎没有哪个字母对是 ShapesWorld 的描述反复出现的，所以这个词表只能把它一个字母一个字母地拼出来——这是小小的封闭词表的症状，而不是 BPE 的问题。
# 从大规模语料学到的词表拥有词中常见部分的合并：Stable Diffusion 的分词器（CLIP 的 48,894 次合并）把 "dodecahedron" 切成五个片段 do·de·ca·he·dron，把 "rectangle" 切成 rec·tangle，并让 "triangle" 保持完整。
# 加载它（设置单元中的 `MODEL`），这些单元就会显示出来。
#
# 每个片段都占用 L 个位置中的一个，一个超过 L 个标记的提示词会被截断：文本编码器永远看不到它的结尾。
# sdviz 会报告丢掉了什么（diffusers 只打印一条警告）：

# %%
long_prompt = ", ".join([lesson.prompt] * 12)
cut = sdviz.tokenize(pipe, long_prompt)
print(
    f"{len(long_prompt.split())} words; kept {cut['n_tokens']} tokens (start and end included);"
    f" cut off: {len(cut['truncated'])} tokens"
)
print("cut off:", sdviz.text.readable_text(cut["truncated"])[:150], "...")

# %% [markdown]
# 动手试试：在输入框里打字，看标记如何变化。**Generate**（生成）按钮运行流水线。

# %%
sdviz.widgets.PromptExplorer(
    pipe, lesson.prompt, steps=lesson.steps, guidance_scale=lesson.guidance
)

# %% [markdown]
# ## 嵌入（embedding）：每个标记一个向量
#
# 文本编码器的输出是一个 L × d 的矩阵：UNet 的每个交叉注意力（cross-attention）层关注的就是它（第 7 课）。
# 填充位置也会得到向量。

# %%
embeds = sdviz.embed(pipe, lesson.prompt)
print("embeddings:", tuple(embeds.shape), "(tokens × dimensions)")
sdviz.figures.tokens_and_embeddings(sdviz.text.prompt_record(pipe, lesson.prompt))

# %% [markdown]
# 生成它们的文本编码器，从所加载的模型中读出：

# %%
text_config = pipe.text_encoder.config
print(
    f"{text_config.num_hidden_layers} Transformer layers, {text_config.hidden_size} wide (d), "
    f"{text_config.num_attention_heads} attention heads: "
    f"{sdviz.course.count_parameters(pipe.text_encoder):,} parameters"
)

# %% [markdown]
# 文章说 "ClipText" 有 6300 万（63M）个参数（parameters）。
# 那是 CLIP 论文中*基础*文本 Transformer 的大小（Radford 等 2021：12 层，宽 512）。
# Stable Diffusion 1.x 用的是一个更大的 CLIP——ViT-L/14——的文本塔：同样 12 层，但宽 768（d = 768），于是有 1.23 亿（123M）个参数——加载 SD 1.5 时，这个单元打印的就是这个数。
# 两者跟 UNet 比都很小；sdviz-mini 的还要更小，它的大小只够应付它那几十个词。

# %% [markdown]
# **上下文。** 比较两个只有颜色不同的提示词中 "circle" 的向量。
# 在进入 Transformer 之前，一个标记只是嵌入表中的一行——在两个提示词里是同一行。
# 经过 Transformer 之后，颜色就渗进了形状的向量。
# CLIP 的文本编码器是*因果*的（每个标记只能看到它前面的标记），所以颜色前面的那个标记 "a" 在两个提示词里完全相同。

# %%
import torch

red, blue = sdviz.embed(pipe, "a red circle"), sdviz.embed(pipe, "a blue circle")
position = sdviz.tokenize(pipe, "a red circle")["tokens"].index("circle</w>")
cosine = torch.nn.functional.cosine_similarity
print(
    f"'circle' (position {position}), red vs blue prompt: cosine {float(cosine(red[position], blue[position], dim=0)):.3f}"
)
print(
    f"'a' (position 1), before the colour:         cosine {float(cosine(red[1], blue[1], dim=0)):.3f}"
)

# %% [markdown]
# ## CLIP 是怎样训练的
#
# CLIP 有两座塔：一个图像编码器和一个文本编码器，各自输出一个同样大小的向量。
# 一个包含 N 对图像–描述的批次（batch）给出一张 N × N 的余弦相似度（cosine similarity）表；训练把 N 对相互匹配的（对角线上的）相似度往上推，把每一对不匹配的往下压——这是一种**对比**（contrastive）损失（loss）。
# 训练之后，一段描述的向量就落在与它相符的图像的向量附近：这就是 Stable Diffusion 从文本塔借来的知识。
#
# 下面在 ShapesWorld 上从随机权重开始做一次简短的现场训练：

# %%
import sdviz.training.live

BATCH = 64  # image-caption pairs per training step: each image has 64 captions to choose from
clip_run = sdviz.training.live.train_small_clip(
    pipe.tokenizer,
    steps=lesson.pick(full=200, smoke=5),  # training steps (5 in the tests' smoke mode)
    batch=BATCH,
    seed=lesson.seed,
)
print(
    f"a {sdviz.course.count_parameters(clip_run.model):,}-parameter CLIP trained "
    f"{len(clip_run.loss)} steps in {clip_run.seconds:.1f} s: contrastive loss "
    f"{clip_run.loss[0]:.2f} → {clip_run.loss[-1]:.2f}; images whose best caption in the "
    f"batch is their own: {clip_run.accuracy[0]:.0%} → {clip_run.accuracy[-1]:.0%}"
)
sdviz.figures.live_training(clip_run)

# %% [markdown]
# 随机 CLIP 的损失是 log(批次大小)（虚线）：每段描述的可能性都一样，准确率是批次大小分之一。
# 随着损失下降，图像在批次的描述中找到了自己的描述。
#
# ## CLIP 相似度矩阵
#
# 模型从未见过的测试图像——ShapesWorld 的测试集，其中还包含训练时特意留出的颜色–形状组合——与它们的描述相对照。
# 每个格子是一张图像的嵌入与一段描述的嵌入之间的余弦相似度；每张图像的最佳描述用框标出。
# 训练得好，对角线就会亮起来。
# （`sdviz.probes.clip_embeddings` 运行两座塔；图只负责画。）

# %%
test = sdviz.shapes.ShapesWorld(size=32, split="test", seed=lesson.seed)
pairs = sdviz.course.examples(test, 6)  # six test pictures and their captions
similarities = sdviz.probes.clip_embeddings(
    pairs.images,
    pairs.captions,
    model=clip_run.model,
    tokenizer=pipe.tokenizer,
    image_mean=clip_run.image_mean,
    image_std=clip_run.image_std,
)
sdviz.figures.clip_similarity(similarities)

# %% [markdown]
# ## CLIP 分得清左和右吗？
#
# 一个由随机描述组成的批次里，几乎不会有两段描述只在 "left" 和 "right" 上不同，所以不读词序也能把对比损失压下去：CLIP 可以凭**词袋**（bag of words）给描述排序（Yuksekgonul 等 2023）。
# 下面，每张测试图像面对它自己的描述和两段**反事实**（counterfactual）描述——同样的词，另一幅画面：一段把关系颠倒，一段把两种颜色互换（`sdviz.shapes.contrast_captions`）。
# `sdviz.probes.clip.counterfactuals` 挑出那些描述同时具有这两种反事实描述的测试图像。

# %%
relational = sdviz.probes.clip.counterfactuals(test, 3)  # pictures with both kinds
print(*relational.captions, sep="\n")
sdviz.figures.clip_similarity(
    sdviz.probes.clip_embeddings(
        relational.images,
        relational.captions,
        model=clip_run.model,
        tokenizer=pipe.tokenizer,
        image_mean=clip_run.image_mean,
        image_std=clip_run.image_std,
    ),
    truth=relational.truth,
    caption_kinds=relational.kinds,
)

# %% [markdown]
# 三张图像太少了。
# 在一百张图像上做同样的测试：真实描述的得分高于每种反事实描述的频率是多少？
# 只读词袋的 CLIP 给两者打分相同：50%（平局算一半）；能读懂关系和（颜色与形状的）绑定的 CLIP：100%。

# %%
import transformers

many = sdviz.probes.clip.counterfactuals(test, lesson.pick(full=100, smoke=8))
live_wins = many.true_wins(
    sdviz.probes.clip_embeddings(
        many.images,
        many.captions,
        model=clip_run.model,
        tokenizer=pipe.tokenizer,
        image_mean=clip_run.image_mean,
        image_std=clip_run.image_std,
    )
)
# sdviz-mini's whole CLIP (both towers), trained with counterfactuals as extra negatives;
# it ships in the embedded model's folder with its own tokenizer and image processor
mini = sdviz.pipeline.EMBEDDED_MODEL / "clip"
mini_wins = many.true_wins(
    sdviz.probes.clip_embeddings(
        many.images,
        many.captions,
        model=transformers.CLIPModel.from_pretrained(mini),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(mini),
        image_processor=transformers.CLIPImageProcessor.from_pretrained(mini),
    )
)
sdviz.course.table(
    {
        "counterfactual": live_wins.keys(),
        f"live CLIP ({len(clip_run.loss)} steps)": live_wins.values(),
        "sdviz-mini's CLIP": mini_wins.values(),
    },
    formats={f"live CLIP ({len(clip_run.loss)} steps)": ".0%", "sdviz-mini's CLIP": ".0%"},
    notes=f"how often the true caption scores higher, over {len(many.images)} test pictures",
)

# %% [markdown]
# 如果颠倒后的描述得分与真实描述差不多（接近 50%），这个 CLIP 就读不懂关系——而 UNet 只看得到文本编码器的向量，也就无法根据它们摆放物体。
# 把这类反事实描述作为额外的负样本来训练，对文本一侧有帮助：sdviz-mini 的 CLIP 就是这样训练的（`sdviz.training.clip` 中的 `hard_negatives=True`），表格显示了它选中真实描述的次数多了多少；关系仍然比颜色难。
# 文本一侧并不是全部：UNet 也必须学会使用这些词。
# sdviz-mini 的训练方案让它看到说明位置的描述的次数提高到三倍，并给噪声最大的那些步（布局就在那里决定）更大的权重；即便如此，它最后才学会顺序，而且是在训练后期的一次跃升中学会的（它的模型卡里有具体数字）。

# %% [markdown]
# ## 自测
#
# 先自己回答每个问题，再运行它下面的单元。
#
# **1.** "a big purple triangle above a small green circle" 占多少个标记（包括起始标记和结束标记）？后面跟着多少个填充标记？

# %%
check = sdviz.tokenize(pipe, "a big purple triangle above a small green circle")
print(f"{check['n_tokens']} tokens, then {L - check['n_tokens']} padding tokens")

# %% [markdown]
# **2.** ShapesWorld 只说 "square"，从不说 "squares"。复数会被切成 "square" 加 "s" 吗？（回头看看 "triangle" 的合并是怎样用到 `</w>` 的。）

# %%
sdviz.course.tables.bpe_table(pipe.tokenizer, "squares")

# %% [markdown]
# **3.** CLIP 的文本编码器是因果的。"circle" *后面*的词会改变 "circle" 的向量吗？先预测余弦值，再比较 "a red circle" 和 "a red circle on the left"：

# %%
longer = sdviz.embed(pipe, "a red circle on the left")
print(f"'circle': cosine {float(cosine(red[position], longer[position], dim=0)):.3f}")

# %% [markdown]
# ## 小结
#
# - 分词器把提示词变成恰好 L 个 ID：起始标记、词的片段、结束标记、填充；超出 L 的部分都被截掉。
# - 这些片段来自字节对编码：从语料中学到的合并，在每个词上重放。sdviz-mini 的语料是 ShapesWorld 的描述，所以它把无关的词一个字母一个字母地拼出来；SD 的 CLIP 分词器从网络文本学来，能把大多数词控制在几个片段之内。
# - 文本编码器把它们变成 L 个带上下文的向量（L × d）：UNet 读的就是这些。
# - CLIP 以对比的方式学习这些向量：把匹配的图像–描述对拉近，把其余的推开。随机批次只教会它读词袋；用词相同、意思不同的描述作为额外的负样本，才让它去读关系。
#
# ### 练习
#
# 1. 找一个由普通词组成、标记数多于词数的提示词。哪些词被切开了？为什么？
# 2. 比较 "a red square" 和 "a square" 中 "square" 的向量：一个形容词让它移动了多远？"big" 让它移动得和颜色词一样远吗？
# 3. 把小 CLIP 的训练步数加倍：损失和相似度矩阵有什么变化？它是更常分辨出反事实描述了，还是这需要反事实负样本（`sdviz.training.clip.train_clip` 中的 `hard_negatives=True`）？
