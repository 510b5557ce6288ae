"""The course's languages: English and Simplified Chinese, one term for each concept.

`GLOSSARY` maps each English course term to its ONE Chinese translation (the seed
article's own Chinese terms first: 图像信息创建者, 标记嵌入, 前向扩散, 潜在空间, 自动编码器;
then the Chinese diffusers/transformers documentation: 调度器, 分词器, 无分类器引导, 交叉注意力),
and `AVOID` the common alternates that must never appear. Every figure, widget and course
module keeps its on-screen strings in one `Texts` table (whole templates with named fields,
an English and a Chinese one: Chinese word order differs, so fragments are never glued),
registered in `REGISTRY` so a test can check each Chinese template against the glossary.

Chinese figures are drawn with Noto Sans SC (OFL-1.1, from the pip package
`pylopdf-fonts-zh-cn`) *behind* DejaVu Sans: Latin letters, digits and Greek (ε, ᾱ, x̂0)
keep the English figures' look, and matplotlib (>= 3.6) falls back per glyph to the CJK
font. `drawing("en")` changes nothing, so English figures keep their bytes.

    T = Texts(__name__, {"title": ("Forward diffusion at step {step}", "第 {step} 步的前向扩散")})
    lang = course_language(lang)          # the argument, $SDVIZ_LANG, ./sdviz-lang.txt, "en"
    with drawing(lang):
        ax.set_title(T("title", lang, step=3))

This module imports nothing from sdviz (every layer may use it) and matplotlib only
inside functions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import string
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path

LANGUAGES: tuple[str, ...] = ("en", "zh")
LANG_ENV = "SDVIZ_LANG"  # environment variable: the course's language (`sdviz.lab --lang`)
LANG_FILE = "sdviz-lang.txt"  # a file in the working directory naming it (lessons/zh/ has one)
CJK_FAMILIES = ("Noto Sans SC", "Noto Sans CJK SC", "Source Han Sans SC")  # fonts already known

GLOSSARY: dict[str, str] = {
    # the seed article's terms ("The Illustrated Stable Diffusion", Chinese edition)
    "stable diffusion": "Stable Diffusion",
    "image information creator": "图像信息创建者",
    "image decoder": "图像解码器",
    "token embeddings": "标记嵌入",
    "forward diffusion": "前向扩散",
    "latent space": "潜在空间",
    "autoencoder": "自动编码器",
    "denoising diffusion probabilistic models": "去噪扩散概率模型",
    "ddpm": "去噪扩散概率模型（DDPM）",
    "clip": "CLIP",
    "unet": "UNet",
    "u-net": "UNet",
    # text
    "text encoder": "文本编码器",
    "tokenizer": "分词器",
    "token": "标记",
    "token id": "标记 ID",
    "token position": "标记位置",
    "padding": "填充",
    "padding token": "填充标记",
    "start marker": "起始标记",
    "end marker": "结束标记",
    "vocabulary": "词表",
    "embedding": "嵌入",
    "embedding dimension": "嵌入维度",
    "pooled vector": "池化向量",
    # the autoencoder
    "vae": "变分自动编码器（VAE）",
    "variational autoencoder": "变分自动编码器",
    "encoder": "编码器",
    "decoder": "解码器",
    "latent": "潜在表示",
    "latent channel": "潜在通道",
    "pixel space": "像素空间",
    "reconstruction": "重建",
    "psnr": "峰值信噪比（PSNR）",
    "peak signal-to-noise ratio": "峰值信噪比",
    # noise and denoising
    "noise predictor": "噪声预测器",
    "scheduler": "调度器",
    "sampler": "采样器",
    "timestep": "时间步",
    "timestep embedding": "时间步嵌入",
    "sinusoidal features": "正弦特征",
    "mlp": "多层感知机（MLP）",
    "noise schedule": "噪声调度",
    "signal-to-noise ratio": "信噪比",
    "snr": "信噪比（SNR）",
    "noise": "噪声",
    "pure noise": "纯噪声",
    "noisy latent": "含噪潜在表示",
    "noise level": "噪声水平",
    "signal": "信号",
    "denoising": "去噪",
    "denoising step": "去噪步",
    "predicted clean image x̂0": "预测的干净图像 x̂0",
    "predicted noise ε̂": "预测噪声 ε̂",
    "linear preview": "线性预览",
    "vae-decoded": "经 VAE 解码",
    "diffusion": "扩散",
    "diffusion model": "扩散模型",
    "flow matching": "流匹配",
    "rectified flow": "整流",
    "velocity": "速度",
    "shift": "偏移",
    # guidance
    "classifier-free guidance": "无分类器引导",
    "guidance scale": "引导系数",
    "unconditional": "无条件",
    "conditional": "有条件",
    "guidance distillation": "引导蒸馏",
    # attention and the denoiser's parts
    "cross-attention": "交叉注意力",
    "self-attention": "自注意力",
    "joint attention": "联合注意力",
    "attention map": "注意力图",
    "attention weight": "注意力权重",
    "query": "查询",
    "key": "键",
    "value": "值",
    "head": "注意力头",
    "layer": "层",
    "block": "块",
    "resnet block": "ResNet 块",
    "skip connection": "跳跃连接",
    "convolution": "卷积",
    "downsample": "下采样",
    "upsample": "上采样",
    "channel": "通道",
    "single-stream block": "单流块",
    "double-stream block": "双流块",
    "transformer": "Transformer",
    "parameters": "参数",
    "denoiser": "去噪网络",
    # prompts and images
    "prompt": "提示词",
    "negative prompt": "负面提示词",
    "empty prompt": "空提示词",
    "seed": "随机种子",
    "step": "步",
    "steps": "步数",
    "generate": "生成",
    "generated image": "生成的图像",
    "image": "图像",
    "caption": "描述",
    # training and measuring
    "training": "训练",
    "training step": "训练步",
    "loss": "损失",
    "batch": "批次",
    "mean squared error": "均方误差",
    "mse": "均方误差（MSE）",
    "error": "误差",
    "cosine similarity": "余弦相似度",
    "dimension": "维度",
    "word": "词",
    "noun": "名词",
    "colour word": "颜色词",
    "color word": "颜色词",
    "object": "物体",
    "shape": "形状",
    "colour": "颜色",
    "color": "颜色",
    "mask": "掩码",
    "peak": "峰值",
    "pointing game": "指向游戏（pointing game）",
    "miou": "平均交并比（mIoU）",
    "held-out images": "留出图像",
    "palette": "调色板",
    "sharpness": "锐度",
    "benchmark": "基准测试",
    "shapesworld": "ShapesWorld",
    # the course itself
    "lesson": "课",
    "recap": "小结",
    "check yourself": "自测",
    "exercises": "练习",
    "your turn": "动手试试",
    "figure": "图",
    "widget": "交互控件",
    "gallery": "图库",
}
"""English course term (lower case) -> its one Simplified-Chinese translation
(docs/plans/issue-21-chinese.md, section 2). 'step 3' is written 第 3 步, 'Lesson 1' 第 1 课;
an abbreviation maps to its first-use form 中文（ABBR）, its `SHORT_FORMS` entry is what
tight labels write after that."""

SHORT_FORMS: dict[str, str] = {
    "ddpm": "DDPM",
    "vae": "VAE",
    "psnr": "PSNR",
    "mlp": "MLP",
    "snr": "SNR",
    "mse": "MSE",
    "miou": "mIoU",
    "pointing game": "指向游戏",
    "seed": "种子",
    "latent": "潜在",  # the adjective: 潜在网格, 潜在通道
}
"""The glossary's short forms (its 'note' column): figure labels and later uses in a lesson
may write these instead of the full `GLOSSARY` entry."""

AVOID: dict[str, str] = {
    "词元": "标记",
    "令牌": "标记",
    "潜伏": "潜在",
    "隐空间": "潜在空间",
    "潜空间": "潜在空间",
    "隐变量": "潜在表示",
    "引导尺度": "引导系数",
    "引导强度": "引导系数",
    "引导比例": "引导系数",
    "无分类器指导": "无分类器引导",
    "分类器无关引导": "无分类器引导",
    "跨注意力": "交叉注意力",
    "自编码器": "自动编码器",
    "去噪器": "去噪网络",
    "标记器": "分词器",
    "词汇表": "词表",
    "提示语": "提示词",
    "反向提示词": "负面提示词",
    "流量匹配": "流匹配",
    "时间步长": "时间步",
    "图片": "图像",
}
"""Chinese alternates that must never appear -> the glossary term to write instead."""


def _check_lang(lang: str, where: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(
            f"Unknown course language {lang!r} ({where}): use one of {', '.join(LANGUAGES)} "
            '("en" English, "zh" Simplified Chinese).'
        )
    return lang


def course_language(lang: str | None = None) -> str:
    """The language to draw and print in: `lang` if given, else $SDVIZ_LANG, else the
    contents of `sdviz-lang.txt` in the current working directory (lessons/zh/ has one:
    a Jupyter kernel runs in its notebook's folder), else "en"."""
    if lang is not None:
        return _check_lang(lang, "the lang argument")
    env = os.environ.get(LANG_ENV, "").strip()
    if env:
        return _check_lang(env, f"${LANG_ENV}")
    marker = Path.cwd() / LANG_FILE
    if marker.is_file():
        return _check_lang(marker.read_text(encoding="utf-8").strip(), str(marker))
    return "en"


def text_width(text: str) -> int:
    """Columns `text` takes on screen, in Latin characters: a wide (Chinese) character
    counts two (printed tables and Run listings align by it; figures wrap by it)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, right: bool = False) -> str:
    """`text` padded with spaces to `width` screen columns (`text_width`), on the left when
    `right` (numbers), else on the right."""
    fill = " " * (width - text_width(text))
    return fill + text if right else text + fill


def _fields(template: str) -> set[str]:
    """The names of a str.format template's fields ("{step}", "{t:.0f}", "{a[0]}" -> a)."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field.split(".")[0].split("[")[0])
    return names


class Term(str):
    """A text in a course language other than English that remembers its English
    (`.english`): code written once for both languages (a lesson's identical code cells)
    can still name, say, a table's column by its English header (`sdviz.course.table`'s
    `formats=`)."""

    english: str

    def __new__(cls, text: str, english: str) -> Term:
        term = super().__new__(cls, text)
        term.english = english
        return term


class Texts:
    """One module's on-screen strings in every language, registered in `REGISTRY`.

    `Texts(__name__, {"title": ("Forward diffusion at step {step}", "第 {step} 步的前向扩散")})`:
    a template per language in `LANGUAGES` order, str.format fields the same in each.
    `T("title", "zh", step=3)` -> "第 3 步的前向扩散" (a `Term`: its `.english` is
    "Forward diffusion at step 3"); English texts are plain str.
    """

    def __init__(self, module: str, table: Mapping[str, tuple[str, ...]]) -> None:
        for key, templates in table.items():
            if (
                not isinstance(templates, tuple)
                or len(templates) != len(LANGUAGES)
                or not all(isinstance(t, str) for t in templates)
            ):
                raise ValueError(
                    f"{module}: text {key!r} needs one template per language "
                    f"{LANGUAGES} as a tuple of str, got {templates!r}."
                )
            fields = [_fields(t) for t in templates]
            if any(f != fields[0] for f in fields):
                by_lang = ", ".join(
                    f"{lang}: {sorted(f)}" for lang, f in zip(LANGUAGES, fields, strict=True)
                )
                raise ValueError(
                    f"{module}: the templates of {key!r} use different fields ({by_lang}); "
                    "every language must show the same values."
                )
        self.module = module
        self.table: dict[str, tuple[str, ...]] = dict(table)
        REGISTRY[module] = self

    def __call__(self, key: str, lang: str, /, **fields: object) -> str:
        if key not in self.table:
            raise KeyError(
                f"{self.module} has no text {key!r}; its texts: {', '.join(sorted(self.table))}."
            )
        templates = self.table[key]
        text = templates[LANGUAGES.index(_check_lang(lang, self.module))].format(**fields)
        if lang == "en":
            return text
        return Term(text, templates[LANGUAGES.index("en")].format(**fields))

    def get(self, key: str, lang: str, default: str, /, **fields: object) -> str:
        """`self(key, lang, **fields)` when this table has `key`, else `default` (a value
        that is its own word in every language: a model's name, a kind diffusers added
        after this table was written)."""
        return self(key, lang, **fields) if key in self.table else default

    def templates(self, lang: str) -> dict[str, str]:
        """key -> this language's template."""
        index = LANGUAGES.index(_check_lang(lang, self.module))
        return {key: templates[index] for key, templates in self.table.items()}

    def __repr__(self) -> str:
        return f"Texts({self.module!r}, {len(self.table)} texts)"


REGISTRY: dict[str, Texts] = {}
"""module name -> its Texts (filled as modules are imported)."""


def cjk_font_path() -> Path:
    """The CJK font Chinese figures use: Noto Sans SC from `pylopdf-fonts-zh-cn` if
    installed, else a font matplotlib already knows (`CJK_FAMILIES`, e.g. Debian's
    fonts-noto-cjk), else an error saying what to install."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        pass
    else:
        path = Path(pylopdf_fonts_zh_cn.sans_path())
        if path.is_file():
            return path
    from matplotlib import font_manager

    for family in CJK_FAMILIES:
        for entry in font_manager.fontManager.ttflist:
            if entry.name == family:
                return Path(entry.fname)
    raise ModuleNotFoundError(
        "Chinese figures need a CJK font: pip install pylopdf-fonts-zh-cn "
        "(or install fonts-noto-cjk). matplotlib knows none of "
        f"{', '.join(CJK_FAMILIES)}, and DejaVu Sans has no Chinese characters.",
        name="pylopdf_fonts_zh_cn",
    )


@functools.cache
def cjk_family() -> str:
    """Register the CJK font with matplotlib (once) and return its family name."""
    from matplotlib import font_manager

    path = cjk_font_path()
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


@contextlib.contextmanager
def drawing(lang: str) -> Iterator[None]:
    """Draw in `lang`: for "zh" the CJK font behind DejaVu Sans (a Text keeps the font in
    force when it is created, so wrap a figure function's body); for "en" nothing at all."""
    if _check_lang(lang, "drawing") == "en":
        yield
        return
    import matplotlib

    with matplotlib.rc_context({"font.family": ["DejaVu Sans", cjk_family()]}):
        yield
