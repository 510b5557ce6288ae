"""Which layers and steps know where the words are? Attention localisation on sdviz-mini.

Part 1, exact masks: held-out ShapesWorld images are noised to t and denoised once by
the UNet with their caption under sdviz's capture (`sdviz.probes.attention.localisation`);
each noun's and colour word's map is scored against its object's mask: pointing game
(the map's maximum inside the mask) and IoU of the map min-max scaled and cut at 0.4
(DAAM's rule), per layer, timestep and head.

Part 2, generated images (issue 18's measures): two-object prompts and seeds of our own
(benchmarks/mini_quality.two_object_prompts, offset 700), 25 DDIM steps at the model's
guidance 3, objects segmented from pixels (mini_quality's segmenter) and kept when both
named objects are found; each word's map averaged over the steps is scored: its peak
inside its object, more mass in its own object than in the other, mass inside its own
mask; and the share of attention on the start token / words / end + padding tokens.
Aggregates compared: sdviz's old default (all 10 text-attention layers), the new default
(`sdviz.attention.default_aggregate_layers`), layer-set ablations, DAAM's aggregation
re-implemented (6 `attn2` layers, per head bicubic to 96x96 and clamped, then averaged),
and, with `--daam-python`, DAAM 0.2.0 itself, run in its own venv on the same UNet
inputs (the x_t of every step of the same generations, recorded here).

An SD3-family model (`--model sdviz-mini-flow`: an MMDiT with joint attention, Esser et al.
2024) is scored the same way on its joint attention's text->image part (image queries
over the text keys, softmax over the text: `sdviz.joint_attention`): part 1 noises the
held-out latents on the flow's straight line (sigma = t / 1000) and calls the transformer
once with the caption's features as its pipeline encodes them; part 2 generates the same
prompts and seeds and scores every joint block, their mean (`attention.maps`) and the
steps. `default_map_scores` gives part 2's measures of `attention.maps` for either family
(used by benchmarks/flow_vs_unet.py).

    python benchmarks/attention_localisation.py [--images 64] [--heldout 96]
        [--daam-python /tmp/h3/daam/bin/python] [--model sdviz-mini-flow]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
DAAM_SIZE = 96  # DAAM 0.2.0's heat-map side for a UNet whose sample_size is not 64


def _mini_quality():
    spec = importlib.util.spec_from_file_location("mini_quality", ROOT / "mini_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def short(name: str) -> str:
    parts = name.split(".")
    kind = "" if parts[-1] == "attn2" else " attn1"
    if parts[0] == "mid_block":
        return f"mid{kind}"
    return f"{parts[0].split('_')[0]} {parts[1]}.{parts[3]}{kind}"


# -- part 1: held-out images with exact masks --------------------------------------------
def heldout_tables(pipe, count: int, timesteps: list[int]) -> str:
    from sdviz.attention import cross_attention_layers, layer_halvings
    from sdviz.probes.attention import localisation

    names = cross_attention_layers(pipe.unet)
    six = [n for n in names if n.endswith("attn2") and not n.startswith("mid")]

    def daam(maps):  # {layer: (N, kinds, heads, h, w)} -> (N, kinds, S, S)
        n, kinds, heads = next(iter(maps.values())).shape[:3]
        flat = {
            k: m.permute(2, 0, 1, 3, 4).reshape(heads, n * kinds, *m.shape[-2:])
            for k, m in maps.items()
        }
        return daam_style(flat, six).reshape(n, kinds, DAAM_SIZE, DAAM_SIZE)

    rec = localisation(pipe, count=count, timesteps=timesteps, compare={"DAAM's aggregation": daam})
    halv = layer_halvings(pipe.unet, rec.layers)
    side = pipe.unet.config.sample_size
    n_obj = rec.per_layer["pointing"].shape[-1]
    out = [
        f"== Part 1: held-out ShapesWorld images, exact masks ({rec.n_images} images, "
        f"{n_obj} objects; one UNet call per image and t, text branch) ==",
        "pointing = the map's maximum lies inside the object's mask; mIoU = mean IoU of the map "
        f"min-max scaled and cut at {rec.config.threshold} against the mask. Averaged over "
        f"t = {timesteps}.",
        "",
        f"{'layer':<30}{'res':>6} | {'pointing':>17} | {'mIoU':>17} | {'own mass':>17}",
        f"{'':<30}{'':>6} | {'noun':>8} {'colour':>8} | {'noun':>8} {'colour':>8} | "
        f"{'noun':>8} {'colour':>8}",
    ]

    def row(label: str, res: str, where) -> str:
        cells = []
        for m in ("pointing", "iou", "mass"):
            r = where[m].nanmean(-1).mean(-2)  # (kinds,) averaged over t
            cells.append(f"{pct(float(r[0])):>8} {pct(float(r[1])):>8}")
        return f"{label:<30}{res:>6} | " + " | ".join(cells)

    for i, name in enumerate(rec.layers):
        s = side >> halv[name]
        out.append(row(short(name), f"{s}x{s}", {m: v[i] for m, v in rec.per_layer.items()}))
    for label, agg in rec.aggregates.items():
        out.append(row(f"[{label}]", "", agg))
    out += [
        "",
        "By timestep (t: 999 = pure noise): pointing noun / colour; the last row mIoU noun / colour",
    ]
    head = f"{'layer':<30}" + "".join(f"{'t=' + str(t):>16}" for t in timesteps)
    out.append(head)

    def by_t(label: str, where) -> str:
        p = where["pointing"].nanmean(-1)  # (T, kinds)
        return f"{label:<30}" + "".join(
            f"{100 * float(p[j, 0]):7.1f}/{100 * float(p[j, 1]):5.1f}%  "
            for j in range(len(timesteps))
        )

    for i, name in enumerate(rec.layers):
        out.append(by_t(short(name), {m: v[i] for m, v in rec.per_layer.items()}))
    for label, agg in rec.aggregates.items():
        out.append(by_t(f"[{label}]", agg))
    d = rec.aggregates["default"]["iou"].nanmean(-1)
    out.append(
        f"{'[default] mIoU':<30}"
        + "".join(
            f"{100 * float(d[j, 0]):7.1f}/{100 * float(d[j, 1]):5.1f}%  "
            for j in range(len(timesteps))
        )
    )
    out += ["", "Per head (pointing noun / colour, averaged over t): best and worst head per layer"]
    ph = rec.per_head["pointing"].nanmean(-1).mean(2)  # (layers, heads, kinds)
    for i, name in enumerate(rec.layers):
        heads = " ".join(
            f"h{h}:{100 * float(ph[i, h, 0]):.0f}/{100 * float(ph[i, h, 1]):.0f}"
            for h in range(ph.shape[1])
        )
        out.append(f"{short(name):<30}{heads}")
    s = rec.shares
    out += [
        "",
        f"Attention shares (default aggregate, held-out images): start {pct(s['start'])}, "
        f"words {pct(s['words'])}, end+padding {pct(s['end+padding'])}",
    ]
    return "\n".join(out)


# -- part 2: generated images -------------------------------------------------------------
def object_masks(image: np.ndarray, found: list[dict]) -> list[np.ndarray]:
    """The pixel mask of each object `find_objects` found (its connected saturated blob)."""
    import colorsys

    from scipy import ndimage

    hsv = np.array(
        [colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3) / 255.0], dtype=np.float32
    ).reshape(*image.shape[:2], 3)
    labels, _ = ndimage.label((hsv[..., 1] > 0.4) & (hsv[..., 2] > 0.3))
    masks = []
    for o in found:
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        areas = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        cy, cx = o["y"] * image.shape[0], o["x"] * image.shape[1]
        best = min(
            (lab for lab, a in areas.items() if a == o["area"]),
            key=lambda lab: np.hypot(*(np.argwhere(labels == lab).mean(0) - (cy, cx))),
        )
        masks.append(labels == best)
    return masks


def daam_style(maps_by_layer: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """DAAM 0.2.0's aggregation of step-summed per-head maps (heads, W, h_l, w_l) -> (W, S, S).

    Each head of each layer is resized bicubically to DAAM_SIZE and clamped at 0, then all
    (layer, head) maps are averaged with equal weight (daam/trace.py compute_global_heat_map).
    """
    ups = []
    for n in names:
        m = maps_by_layer[n]  # (heads, W, h, w)
        heads, words = m.shape[:2]
        up = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=(DAAM_SIZE,) * 2, mode="bicubic")
        ups.append(up.clamp_min(0).reshape(heads, words, DAAM_SIZE, DAAM_SIZE))
    return torch.cat(ups).mean(0)


def default_layers(pipe, run) -> list[str]:
    """The layers `attention.maps` averages: the UNet's default set, or every joint block."""
    from sdviz.attention import default_aggregate_layers

    if getattr(pipe, "unet", None) is not None:
        return default_aggregate_layers(pipe.unet)
    return list(run["attention.aggregate_layers"])


def generate_all(pipe, prompts, record_inputs: bool, layers: bool = True):
    """Generate every prompt traced; keep the scored words' maps per layer and head
    (`layers=False`: only the default aggregate, `attention.maps`)."""
    import sdviz
    from sdviz.attention import aggregate
    from sdviz.probes.attention import word_positions
    from sdviz.tracing.keys import LAYER_PREFIX

    mq = _mini_quality()
    classify = mq.ShapeClassifier()
    items, inputs, images = [], [], 0
    detail = dict(attention_layers="*", attention_heads=True) if layers else {}
    for prompt, seed, (a, b, _side) in prompts:
        run = sdviz.generate(pipe, prompt, seed=seed, **detail)
        image = (run["vae.image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        found = mq.find_objects(image, classify)
        oa, ob = mq._has(found, *a, top=2), mq._has(found, *b, top=2)
        if record_inputs:
            inputs.append(
                dict(
                    prompt=prompt,
                    latents=run["denoiser.latents"][:-1],  # (S, c, h, w) x_t fed to the UNet
                    timesteps=run["scheduler.step_timestep"].tolist(),
                    cond=run["text_encoder.prompt_embeds"],
                    uncond=run["text_encoder.negative_prompt_embeds"],
                    n_tokens=run["tokenizer.n_tokens"],
                )
            )
        if not (oa and ob and oa is not ob):
            continue
        images += 1
        mask_a, mask_b = object_masks(image, [oa, ob])
        n_tokens = run["tokenizer.n_tokens"]
        for (colour, shape), own, other in ((a, mask_a, mask_b), (b, mask_b, mask_a)):
            noun, col = word_positions(pipe.tokenizer, prompt, colour, shape)
            if not layers:
                items.append(
                    dict(
                        prompt=prompt,
                        own=torch.from_numpy(own),
                        other=torch.from_numpy(other),
                        n_tokens=n_tokens,
                        tokens=(noun, col),
                        default=run["attention.maps"][:, [noun, col]],  # (S, 2, h, w)
                    )
                )
                continue
            per_head = {}  # layer -> (heads, 2, h, w) step mean
            per_step = {}  # layer -> (S, 2, h, w) head mean
            shares = {}  # layer -> (L, h, w) step and head mean
            full = {}  # layer -> (S, L, h, w) head mean
            for key in run.attention_layers:
                m = run[key]  # (S, heads, L, h, w)
                name = key.removeprefix(LAYER_PREFIX)
                per_head[name] = m[:, :, [noun, col]].mean(0)
                per_step[name] = m[:, :, [noun, col]].mean(1)
                shares[name] = m.mean((0, 1))
                full[name] = m.mean(1)
            latent = run["attention.maps"].shape[-2:]
            recomputed = aggregate(full, default_layers(pipe, run), latent)
            items.append(
                dict(
                    prompt=prompt,
                    image=len(inputs) - 1 if record_inputs else None,
                    own=torch.from_numpy(own),
                    other=torch.from_numpy(other),
                    per_head=per_head,
                    per_step=per_step,
                    shares=shares,
                    n_tokens=n_tokens,
                    tokens=(noun, col),
                    default=run["attention.maps"][:, [noun, col]],  # (S, 2, h, w)
                    recomputed=recomputed[:, [noun, col]],
                )
            )
    return items, inputs, images


def run_daam(python: str, inputs: list[dict], model: Path) -> list[torch.Tensor] | None:
    """DAAM 0.2.0's word maps for the recorded UNet inputs, computed in its own venv."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "inputs.pt", Path(tmp) / "maps.pt"
        torch.save(inputs, src)
        done = subprocess.run(
            [python, __file__, "--daam-worker", str(model), str(src), str(dst)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print("DAAM worker failed:\n" + done.stderr[-3000:], file=sys.stderr)
            return None
        return torch.load(dst)


def daam_worker(model: str, src: str, dst: str) -> None:
    """Inside DAAM's venv (diffusers 0.21.2): DAAM's trace on sdviz-mini's UNet, fed the x_t,
    timesteps and [uncond, text] embeddings that sdviz recorded; DAAM's own
    compute_global_heat_map (every heat-map size it saw) gives each token's map."""
    import daam
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(model) / "unet").eval()

    class Holder:  # what DAAM's trace reads and patches on a pipeline
        def __init__(self, unet):
            self.unet, self.vae_scale_factor = unet, 4  # 64 px images, 16x16 latents
            self.tokenizer = self

        def tokenize(self, prompt):  # keep all 77 maps; we index tokens ourselves
            return [0] * 75

        def check_inputs(self, *args, **kwargs):
            return None

    holder = Holder(unet)
    out = []
    with torch.no_grad(), daam.trace(holder) as tc:
        for item in torch.load(src):
            tc.all_heat_maps.clear()
            emb = torch.stack([item["uncond"], item["cond"]])  # (2, L, d): DAAM keeps half 2
            for x, t in zip(item["latents"], item["timesteps"], strict=True):
                unet(torch.stack([x, x]), t, encoder_hidden_states=emb)
            factors = tc.all_heat_maps.factors()  # 6 and 12 here: not in DAAM's default set
            maps = tc.compute_global_heat_map(item["prompt"], factors=factors).heat_maps
            out.append(maps[: item["n_tokens"]].float().clone())
    torch.save(out, dst)


MAP_MEASURES = ("pointing", "own>other", "mass", "iou")  # the columns of part 2's table


def _part2_legend(own: torch.Tensor) -> list[str]:
    hw = own.shape[-2:]
    centre = float(own[:, hw[0] // 2, hw[1] // 2].float().mean())
    chance = float(own.float().mean())
    return [
        "peak = the word's map (mean over steps) peaks inside its object's pixels; own>other = "
        "more map mass inside its own object than inside the other; mass = share of the map "
        "inside its own object. Baselines for peak: the image centre "
        f"{pct(centre)}, a random pixel (mean object area) {pct(chance)}.",
    ]


def score_table(variants: dict, own: torch.Tensor, other: torch.Tensor, width: int = 68) -> list:
    """Part 2's table: a row per aggregate (maps (2, N, h, w): noun, colour), four measures."""
    from sdviz.probes.attention import scores

    out = [
        f"{'aggregate':<{width}} | {'peak inside':>15} | {'own > other':>15} | {'own mass':>15} | "
        f"{'mIoU':>15}",
        f"{'':<{width}} | {'noun':>7} {'colour':>7} | {'noun':>7} {'colour':>7} | {'noun':>7} "
        f"{'colour':>7} | {'noun':>7} {'colour':>7}",
    ]
    for label, maps in variants.items():
        sc = scores(maps, own, other)
        cells = []
        for m in MAP_MEASURES:
            cells.append(" ".join(f"{pct(float(sc[m][k].nanmean())):>7}" for k in range(2)))
        out.append(f"{label:<{width}} | " + " | ".join(cells))
    return out


def by_step(items: list[dict], own: torch.Tensor, other: torch.Tensor) -> list[str]:
    """Peak inside noun / colour of the recorded maps at every 4th sampling step."""
    from sdviz.probes.attention import scores

    out = []
    for s in range(0, items[0]["default"].shape[0], 4):
        sc = scores(torch.stack([it["default"][s] for it in items], 1), own, other)
        out.append(
            f"  step {s:2d}: {pct(float(sc['pointing'][0].mean()))} / "
            f"{pct(float(sc['pointing'][1].mean()))}"
        )
    return out


def generated_tables(pipe, n_prompts: int, daam_python: str | None, model: Path) -> str:
    from sdviz.attention import (
        aggregate,
        cross_attention_layers,
        default_aggregate_layers,
        mean_of_layers,
    )
    from sdviz.probes.attention import scores, token_shares

    mq = _mini_quality()
    prompts = mq.two_object_prompts(n_prompts, offset=700)
    t0 = time.perf_counter()
    items, inputs, n_images = generate_all(pipe, prompts, daam_python is not None)
    took = time.perf_counter() - t0
    names = cross_attention_layers(pipe.unet)
    default = default_aggregate_layers(pipe.unet)
    attn2 = [n for n in names if n.endswith("attn2")]
    latent = (pipe.unet.config.sample_size,) * 2
    own = torch.stack([it["own"] for it in items])  # (N, H, W)
    other = torch.stack([it["other"] for it in items])

    def layer_mean(chosen: list[str]) -> torch.Tensor:  # (2, N, h, w)
        return torch.stack(
            [mean_of_layers(it["per_head"], chosen, latent, head_dim=0) for it in items], 1
        )

    six = [n for n in attn2 if not n.startswith("mid")]  # DAAM's layers
    sets = {
        "sdviz old default: all 10 text-attention layers, bilinear": names,
        "DAAM's 6 layers (attn2, no mid block), bilinear": six,
        "7 attn2 layers (mid block in, no attn1), bilinear": attn2,
        "9 layers (attn1 in, no mid block), bilinear": [
            n for n in names if not n.startswith("mid")
        ],
        f"new default's {len(default)} layers (no 8x8 encoder layer), bilinear": default,
    }
    variants = {label: layer_mean(chosen) for label, chosen in sets.items()}
    variants["DAAM's 6 layers, bicubic (per pixel shares)"] = torch.stack(
        [aggregate(it["shares"], six, latent)[list(it["tokens"])] for it in items], 1
    )
    variants[f"sdviz NEW DEFAULT: {len(default)} layers, bicubic (attention.maps)"] = torch.stack(
        [it["default"].mean(0) for it in items], 1
    )
    variants["DAAM's aggregation re-implemented (6 attn2, bicubic 96, per head)"] = torch.stack(
        [daam_style(it["per_head"], six) for it in items], 1
    )
    if inputs:
        daam = run_daam(daam_python, inputs, model)
        if daam is not None:
            variants["DAAM 0.2.0 itself (its venv, same UNet inputs)"] = torch.stack(
                [daam[it["image"]][list(it["tokens"])] for it in items], 1
            )
    # the traced run's own aggregate is the new default recomputed from its layers
    gap = max(float((it["default"] - it["recomputed"]).abs().max()) for it in items)

    out = [
        f"== Part 2: generated two-object images ({len(prompts)} prompts, both objects found "
        f"in {n_images}: {len(items)} objects; 25 steps, g={pipe_guidance(pipe)}; "
        f"{took:.0f} s) ==",
        *_part2_legend(own),
        f"(recorded attention.maps vs the new default recomputed from the layers: max "
        f"difference {gap:.1e})",
        "",
        *score_table(variants, own, other),
    ]
    out.append("")
    out.append(
        "Min-max scaled maps (what DAAM's WordHeatMap.expand_as draws): own mass noun / colour"
    )
    for label, maps in variants.items():
        flat = maps.flatten(-2)
        scaled = (flat - flat.amin(-1, keepdim=True)) / (
            flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True)
        ).clamp_min(1e-12)
        sc = scores(scaled.reshape(maps.shape), own, other)
        out.append(
            f"  {label:<66} {pct(float(sc['mass'][0].mean()))} / {pct(float(sc['mass'][1].mean()))}"
        )
    out += ["", "Single layers (step mean, heads averaged): peak inside noun / colour, own mass"]
    for n in names:
        sc = scores(layer_mean([n]), own, other)
        out.append(
            f"  {short(n):<20} {pct(float(sc['pointing'][0].mean()))} / "
            f"{pct(float(sc['pointing'][1].mean()))}   mass {pct(float(sc['mass'][0].mean()))} / "
            f"{pct(float(sc['mass'][1].mean()))}"
        )
    out += [
        "",
        "By sampling step (new default's recorded maps, step s of 25): peak inside noun / colour",
    ]
    out += by_step(items, own, other)
    out += ["", "Share of all attention (mean over steps, positions and images):"]
    share_sets = {"sdviz old default (10 layers, bilinear)": (names, "bilinear")}
    share_sets["sdviz new default"] = (default, "bicubic")
    for label, (chosen, mode) in share_sets.items():
        sh = [
            token_shares(
                (
                    aggregate(it["shares"], chosen, latent)
                    if mode == "bicubic"
                    else mean_of_layers(it["shares"], chosen, latent)
                )[None],
                it["n_tokens"],
            )
            for it in items[::2]  # one per image
        ]
        mean = {k: float(np.mean([s[k] for s in sh])) for k in sh[0]}
        out.append(
            f"  {label:<40} start {pct(mean['start'])}  words {pct(mean['words'])}  "
            f"end+padding {pct(mean['end+padding'])}"
        )
    return "\n".join(out)


# -- the same measures for an SD3-family transformer (joint attention) ---------------------
def short_joint(name: str) -> str:
    """'transformer_blocks.3.attn' -> 'block 3'."""
    parts = name.split(".")
    return f"block {parts[1]}" if len(parts) > 1 and parts[1].isdigit() else name


def _grid_and_masks(items: list[dict]) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor]:
    own = torch.stack([it["own"] for it in items])  # (N, H, W)
    other = torch.stack([it["other"] for it in items])
    return tuple(items[0]["default"].shape[-2:]), own, other


@torch.no_grad()
def joint_heldout_tables(pipe, count: int, timesteps: list[int]) -> str:
    """Part 1 for an SD3-family pipeline: held-out ShapesWorld images noised on the flow's
    straight line to sigma = t / 1000 (x = (1 - sigma) z0 + sigma eps, one noise draw per
    image) and denoised once by the transformer with the caption's features (as the
    pipeline encodes them), under the joint-attention capture; scored as the UNet's part 1."""
    from sdviz.autoencoder import encode, native_size
    from sdviz.joint_attention import JointAttentionCapture
    from sdviz.pipeline import recommended
    from sdviz.probes.attention import named_objects, scores
    from sdviz.shapes import ShapesWorld

    world = ShapesWorld(size=native_size(pipe), split="test", seed=0)
    samples = named_objects(world, pipe.tokenizer, count)
    images = torch.from_numpy(np.stack([s.image for s, _ in samples])).permute(0, 3, 1, 2)
    z0 = encode(pipe, images)  # (n, c, h, w)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    captions = [s.caption for s, _ in samples]
    emb, _, pooled, _ = pipe.encode_prompt(
        captions,
        captions,
        None,
        do_classifier_free_guidance=False,
        **recommended(pipe).call_arguments(),
    )  # (n, L, d), (n, d_pool)
    own = torch.stack([it.own for _, items in samples for it in items])  # (N, H, W)
    other = torch.stack([it.other for _, items in samples for it in items])
    owner = [(k, it.noun, it.colour) for k, (_, items) in enumerate(samples) for it in items]
    patch = pipe.transformer.config.patch_size
    grid = (z0.shape[-2] // patch, z0.shape[-1] // patch)
    transformer = pipe.transformer
    cap = JointAttentionCapture(transformer, layers="*", heads=True)
    per_t = []  # per t: {layer or DEFAULT: (2, N, h, w)}
    cap.install(transformer)
    try:
        for t in timesteps:
            sigma = t / 1000
            x = (1 - sigma) * z0 + sigma * noise
            calls = []
            for k in range(len(samples)):
                cap.begin(*grid, 0, emb.shape[1])
                transformer(
                    hidden_states=x[k : k + 1],
                    timestep=torch.tensor([float(t)]),
                    encoder_hidden_states=emb[k : k + 1],
                    pooled_projections=pooled[k : k + 1],
                )
                mean, detail, names, _ = cap.end()  # (L, h, w); layer -> (heads, L, h, w)
                calls.append({**{n: d.mean(0) for n, d in detail.items()}, "default": mean})
            per_t.append(
                {
                    n: torch.stack(
                        [calls[k][n][[noun, colour]] for k, noun, colour in owner], 1
                    ).float()
                    for n in [*names, "default"]
                }
            )
    finally:
        cap.restore(transformer)
    rows = [*names, "default"]
    scored = {n: [scores(d[n], own, other) for d in per_t] for n in rows}  # per t
    out = [
        f"== Part 1: held-out ShapesWorld images, exact masks, joint attention ({len(samples)} "
        f"images, {own.shape[0]} objects; one transformer call per image and t, text only) ==",
        "pointing = the map's maximum lies inside the object's mask; mIoU = mean IoU of the map "
        "min-max scaled and cut at 0.4 against the mask. Averaged over t = "
        f"{timesteps} (flow: sigma = t / 1000). Maps on the {grid[0]}x{grid[1]} patch grid.",
        "",
        f"{'block':<30} | {'pointing':>17} | {'mIoU':>17} | {'own mass':>17}",
        f"{'':<30} | {'noun':>8} {'colour':>8} | {'noun':>8} {'colour':>8} | "
        f"{'noun':>8} {'colour':>8}",
    ]
    for n in rows:
        cells = []
        for m in ("pointing", "iou", "mass"):
            r = torch.stack([sc[m].nanmean(-1) for sc in scored[n]]).mean(0)  # (kinds,)
            cells.append(f"{pct(float(r[0])):>8} {pct(float(r[1])):>8}")
        label = "[default: all blocks]" if n == "default" else short_joint(n)
        out.append(f"{label:<30} | " + " | ".join(cells))
    out += ["", "By timestep (t: 999 = pure noise): pointing noun / colour"]
    out.append(f"{'block':<30}" + "".join(f"{'t=' + str(t):>16}" for t in timesteps))
    for n in rows:
        label = "[default: all blocks]" if n == "default" else short_joint(n)
        out.append(
            f"{label:<30}"
            + "".join(
                f"{100 * float(sc['pointing'][0].nanmean()):7.1f}/"
                f"{100 * float(sc['pointing'][1].nanmean()):5.1f}%  "
                for sc in scored[n]
            )
        )
    return "\n".join(out)


def default_map_scores(pipe, n_prompts: int, offset: int = 700) -> dict:
    """Part 2's measures for the default aggregate (`attention.maps`, mean over the steps) of
    any family: UNet cross-attention or SD3's joint attention, on the same two-object prompts
    and seeds. {"noun"/"colour": {measure: rate}, "n_prompts", "n_images", "n_objects",
    "seconds"} (rates NaN when no image had both objects found)."""
    from sdviz.probes.attention import scores

    prompts = _mini_quality().two_object_prompts(n_prompts, offset=offset)
    t0 = time.perf_counter()
    items, _, n_images = generate_all(pipe, prompts, False, layers=False)
    out = {
        "n_prompts": len(prompts),
        "n_images": n_images,
        "n_objects": len(items),
        "seconds": time.perf_counter() - t0,
    }
    if not items:
        nan = float("nan")
        return {
            **out,
            "noun": dict.fromkeys(MAP_MEASURES, nan),
            **{"colour": dict.fromkeys(MAP_MEASURES, nan)},
        }
    _, own, other = _grid_and_masks(items)
    sc = scores(torch.stack([it["default"].mean(0) for it in items], 1), own, other)
    for k, kind in enumerate(("noun", "colour")):
        out[kind] = {m: float(sc[m][k].nanmean()) for m in MAP_MEASURES}
    return out


def joint_generated_tables(pipe, n_prompts: int) -> str:
    """Part 2 for an SD3-family pipeline: each word's joint-attention map (image queries over
    the text keys, softmax over the text: what sdviz records as `attention.maps`) scored as
    the UNet's cross-attention maps are, per block, per step, and its token shares."""
    from sdviz.attention import mean_of_layers
    from sdviz.pipeline import recommended
    from sdviz.probes.attention import token_shares

    prompts = _mini_quality().two_object_prompts(n_prompts, offset=700)
    t0 = time.perf_counter()
    items, _, n_images = generate_all(pipe, prompts, False)
    took = time.perf_counter() - t0
    head = (
        f"== Part 2: generated two-object images, joint attention ({len(prompts)} prompts, "
        f"both objects found in {n_images}: {len(items)} objects; "
        f"{recommended(pipe).num_inference_steps} steps, g={pipe_guidance(pipe)}; {took:.0f} s) =="
    )
    if not items:
        return head + "\nno image had both named objects found: nothing to score."
    grid, own, other = _grid_and_masks(items)
    names = list(items[0]["per_head"])  # the joint-attention blocks, in order

    def layer_mean(chosen: list[str]) -> torch.Tensor:  # (2, N, h, w)
        return torch.stack(
            [mean_of_layers(it["per_head"], chosen, grid, head_dim=0) for it in items], 1
        )

    half = len(names) // 2
    variants = {
        f"sdviz default: all {len(names)} joint blocks (attention.maps)": torch.stack(
            [it["default"].mean(0) for it in items], 1
        ),
        f"first {half} blocks": layer_mean(names[:half]),
        f"last {len(names) - half} blocks": layer_mean(names[half:]),
    }
    variants.update({short_joint(n): layer_mean([n]) for n in names})
    gap = max(float((it["default"] - it["recomputed"]).abs().max()) for it in items)
    out = [
        head,
        *_part2_legend(own),
        f"Maps on the transformer's {grid[0]}x{grid[1]} patch grid, resized bilinearly to the "
        f"masks' {own.shape[-2]}x{own.shape[-1]} pixels. (recorded attention.maps vs the mean "
        f"of the blocks recomputed: max difference {gap:.1e})",
        "",
        *score_table(variants, own, other),
        "",
        "By sampling step (recorded attention.maps): peak inside noun / colour",
    ]
    out += by_step(items, own, other)
    sh = [
        token_shares(mean_of_layers(it["shares"], names, grid)[None], it["n_tokens"])
        for it in items[::2]  # one per image
    ]
    mean = {k: float(np.mean([s[k] for s in sh])) for k in sh[0]}
    out += [
        "",
        "Share of the text part of attention (mean over steps, image tokens, blocks and images): "
        f"start {pct(mean['start'])}  words {pct(mean['words'])}  "
        f"end+padding {pct(mean['end+padding'])}",
    ]
    return "\n".join(out)


def pipe_guidance(pipe) -> float:
    from sdviz.pipeline import recommended

    return recommended(pipe).guidance_scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="sdviz-mini (default), sdviz-mini-flow or a folder"
    )
    parser.add_argument("--images", type=int, default=64, help="two-object prompts to generate")
    parser.add_argument("--heldout", type=int, default=96, help="held-out ShapesWorld images")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[901, 701, 501, 301, 101, 21])
    parser.add_argument("--daam-python", default=None, help="python of a venv with daam 0.2.0")
    args = parser.parse_args(argv)
    import sdviz
    from sdviz.pipeline import EMBEDDED_MODEL

    torch.set_num_threads(1)
    pipe = sdviz.load(args.model)
    pipe.set_progress_bar_config(disable=True)
    model = Path(args.model) if args.model else EMBEDDED_MODEL
    print(f"# attention localisation, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}")
    if getattr(pipe, "transformer", None) is not None:  # SD3 family: joint attention
        print(joint_heldout_tables(pipe, args.heldout, args.timesteps), flush=True)
        print()
        print(joint_generated_tables(pipe, args.images), flush=True)
        return 0
    print(heldout_tables(pipe, args.heldout, args.timesteps), flush=True)
    print()
    print(generated_tables(pipe, args.images, args.daam_python, model), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--daam-worker"]:
        daam_worker(*sys.argv[2:5])
    else:
        sys.exit(main())
