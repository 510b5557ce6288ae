"""Train sdviz-mini-flow's denoiser: an SD3 transformer (MMDiT) with rectified flow.

Stable Diffusion 3 (Esser et al. 2024, "Scaling Rectified Flow Transformers") replaces the
UNet by a transformer whose image and text tokens attend to each other jointly, and the
DDPM noise schedule by a straight path from data to noise (rectified flow, Liu et al.
2022; flow matching, Lipman et al. 2022):

1. draw sigma in (0, 1) from a logit-normal: u = sigmoid(n), n ~ N(mean, std)
   (SD3 section 3.1), shifted by sigma = s u / (1 + (s - 1) u) (SD3 section 5.3.2);
2. mix a clean latent with noise on the straight line x_sigma = (1 - sigma) x_0 + sigma eps;
3. train the transformer to predict the line's velocity v = eps - x_0 (plain mean squared
   error), given x_sigma, the timestep 1000 sigma, the per-token text features and the
   pooled text vector, exactly as `StableDiffusion3Pipeline` will call it;
4. 10% of captions are the empty prompt's features, for classifier-free guidance.

The text features are those `StableDiffusion3Pipeline.encode_prompt` makes from sdviz-mini's
CLIP (one encoder in both CLIP slots, no T5), encoded once before training by the recipe
(`sdviz.training.stages`), so training and sampling cannot drift apart. The loop machinery
(data-parallel processes, resumable state, EMA) is the UNet's (`sdviz.training.unet`).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from .config import FlowConfig
from .data import descend, warmup_lr
from .parallel import agree_min, rank_and_size, run_data_parallel, stop_together
from .unet import _check_processes, _ema_update, _resume, _save_state


def build_transformer(
    cfg: FlowConfig, sample_size: int, channels: int, text_dim: int, pooled_dim: int
) -> SD3Transformer2DModel:
    """A small MMDiT for (channels, sample_size, sample_size) latents and CLIP features of
    `text_dim` per token and `pooled_dim` pooled (as `encode_prompt` makes them)."""
    width = cfg.heads * cfg.head_dim
    return SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=cfg.patch_size,
        in_channels=channels,
        out_channels=channels,
        num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim,
        num_attention_heads=cfg.heads,
        joint_attention_dim=text_dim,
        caption_projection_dim=width,
        pooled_projection_dim=pooled_dim,
        pos_embed_max_size=sample_size // cfg.patch_size * 2,
    )


def sample_sigmas(
    n: int, cfg: FlowConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Step 1: (n,) noise levels in (0, 1), logit-normal and shifted as in SD3."""
    u = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=generator))
    return cfg.shift * u / (1 + (cfg.shift - 1) * u)


def noisy_and_target(
    x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-3: x_sigma = (1 - sigma) x0 + sigma eps (batch, c, h, w) and v = eps - x0."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise, noise - x0


def learning_rate(step: int, total: int, cfg: FlowConfig) -> float:
    """Warm-up, then a cosine from `lr` to `final_lr_fraction * lr` at step `total`."""
    progress = min(1.0, step / max(1, total))
    floor = cfg.final_lr_fraction
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * cosine * warmup_lr(step, cfg.warmup)


@dataclass(frozen=True)
class FlowData:
    """What the transformer trains on, all encoded before training."""

    latents: torch.Tensor  # (n, c, h, w) scaled as the pipeline's latents
    row_text: torch.Tensor  # (n,) index into `texts` of each row's caption
    texts: torch.Tensor  # (u, tokens, text_dim) encode_prompt's prompt_embeds
    pooled: torch.Tensor  # (u, pooled_dim) its pooled_prompt_embeds
    empty_text: torch.Tensor  # (tokens, text_dim) the empty prompt's
    empty_pooled: torch.Tensor  # (pooled_dim,)


@dataclass(frozen=True)
class _FlowJob:
    """`train_flow`'s arguments as one picklable object for each training process (`_resume`
    reads `work`, `resume`, `device` and `log`, as from the UNet's job)."""

    transformer: SD3Transformer2DModel
    data: FlowData
    cfg: FlowConfig
    steps: int
    work: Path
    deadline: float | None
    resume: bool
    seed: int
    log: Callable[[str], None]
    device: str | torch.device
    processes: int


def train_flow(
    transformer: SD3Transformer2DModel,
    data: FlowData,
    cfg: FlowConfig,
    work: Path,
    deadline: float | None = None,
    resume: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
    processes: int = 1,
) -> tuple[SD3Transformer2DModel, int]:
    """Train `transformer` with rectified flow; returns (EMA transformer, steps done).

    Saves a resumable state and an EMA snapshot every `cfg.snapshot_every` steps under
    `work` (`flow_state.pt`, `flow_ema_NNNNNN.safetensors`) and stops (after saving) at
    `deadline`. `processes` > 1 trains data-parallel on the CPU, as `train_unet` does.
    """
    _check_processes(processes, device, cfg.batch)
    job = _FlowJob(
        transformer, data, cfg, cfg.steps, work, deadline, resume, seed, log, device, processes
    )
    train = functools.partial(_train, job)
    if processes == 1:
        return train()
    run_data_parallel(train, processes)
    state = torch.load(work / "flow_state.pt", weights_only=False)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    ema.load_state_dict(load_file(work / f"flow_ema_{state['step']:06d}.safetensors"))
    return ema.eval(), state["step"]


def _draw(job: _FlowJob, step: int, rank: int, size: int) -> tuple[torch.Tensor, ...]:
    """`step`'s batch (rows, noise, sigmas, captions dropped), drawn alike in every process
    from the step's own seed; returns this process's slice."""
    gen = torch.Generator().manual_seed(job.seed * 1_000_003 + step)
    batch, latents = job.cfg.batch, job.data.latents
    idx = torch.randint(len(latents), (batch,), generator=gen)
    noise = torch.randn((batch, *latents.shape[1:]), generator=gen)
    sigma = sample_sigmas(batch, job.cfg, gen)
    drop = torch.rand(batch, generator=gen) < job.cfg.uncond_prob
    mine = slice(rank, None, size)
    return idx[mine], noise[mine], sigma[mine], drop[mine]


def _plan(job: _FlowJob, step: int, start: int, t0: float) -> int:
    """The run's number of steps: all of `job.steps`, or with a deadline as many as this
    process's speed so far fits before it (the same in every process)."""
    if job.deadline is None:
        return job.steps
    rate = (step - start) / max(1e-6, time.time() - t0)  # steps/s of this run
    fits = step + int(0.98 * rate * max(0.0, job.deadline - time.time()))
    return int(agree_min(float(min(job.steps, fits))))


def _train(job: _FlowJob) -> tuple[SD3Transformer2DModel, int]:
    rank, size = rank_and_size()
    began = time.time()
    model_ = copy.deepcopy(job.transformer) if size > 1 else job.transformer
    data, cfg, work, log, device = job.data, job.cfg, job.work, job.log, job.device
    work.mkdir(parents=True, exist_ok=True)
    model_.to(device)
    model = DistributedDataParallel(model_) if size > 1 else model_
    ema = copy.deepcopy(model_).requires_grad_(False)
    opt = torch.optim.AdamW(model_.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, seconds_before = _resume(job, model_, ema, opt, rank, name="flow")
    state_path = work / "flow_plan.pt"
    total = torch.load(state_path)["steps"] if job.resume and state_path.exists() else job.steps
    planned = job.deadline is None or (job.resume and state_path.exists())
    model_.train()
    t0 = time.time()

    def save(step: int) -> None:
        if rank == 0:
            seconds = seconds_before + time.time() - began
            _save_state(work, model_, ema, opt, step, seconds, name="flow")

    step = start
    while step < total:
        if not planned and step - start == cfg.plan_at:
            total, planned = _plan(job, step, start, t0), True
            if rank == 0:
                torch.save({"steps": total}, state_path)
                log(f"flow: {total} steps fit before the deadline (planned at step {step})")
            if step >= total:
                break
        idx, noise, sigma, drop = _draw(job, step, rank, size)
        x0 = data.latents[idx].float()  # (batch / size, c, h, w)
        xt, target = noisy_and_target(x0, noise, sigma)
        text = data.texts[data.row_text[idx]].float()  # (batch / size, tokens, text_dim)
        pooled = data.pooled[data.row_text[idx]].float()  # (batch / size, pooled_dim)
        text[drop], pooled[drop] = data.empty_text.float(), data.empty_pooled.float()
        pred = model(
            hidden_states=xt.to(device),
            encoder_hidden_states=text.to(device),
            pooled_projections=pooled.to(device),
            timestep=(sigma * 1000).to(device),
        ).sample
        loss = ((pred - target.to(device)) ** 2).mean()
        descend(loss, opt, model_.parameters(), learning_rate(step, total, cfg))
        _ema_update(ema, model_, min(cfg.ema_decay, (1 + step) / (10 + step)))
        if step % 50 == 0 and rank == 0:
            rate = (step + 1 - start) / (time.time() - t0)
            log(f"flow step {step}/{total} loss {loss.item():.4f} {rate:.2f} it/s")
        step += 1
        if step % cfg.snapshot_every == 0:
            save(step)
        if job.deadline is not None and stop_together(time.time() > job.deadline):
            if rank == 0:
                log(f"deadline reached at step {step}")
            save(step)
            return ema.eval(), step
    if step > start and step % cfg.snapshot_every:
        save(step)
    return ema.eval(), step


# ---- the recipe's flow stages (`sdviz train --flow`) --------------------------------------


# the classes StableDiffusion3Pipeline's model_index.json names for the borrowed parts
FLOW_CLASSES = {
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
}


def borrowed_components(base: Path, tokens: int) -> dict:
    """`sdviz.json`'s "borrowed" entry: sdviz-mini's VAE, CLIP text tower and tokenizer
    from the folder `base`, made fit for `StableDiffusion3Pipeline` (its decode adds the VAE's
    `shift_factor`, which must then be a number; its CLIP slots need the projected pooled
    vector; prompts of at most `tokens` tokens). One encoder and tokenizer fill both slots."""
    return {
        "folder": str(base),
        "components": {
            "vae": {"subfolder": "vae", "config": {"shift_factor": 0.0}},
            "text_encoder": {"subfolder": "clip", "config": {"projection_dim": _projection(base)}},
            "text_encoder_2": "text_encoder",
            "tokenizer": {"subfolder": "tokenizer", "config": {"model_max_length": tokens}},
            "tokenizer_2": "tokenizer",
        },
    }


def _projection(base: Path) -> int:
    import json

    return int(json.loads((Path(base) / "clip" / "config.json").read_text())["projection_dim"])


def prompt_tokens(tokenizer, captions: list[str], multiple: int = 8) -> int:
    """Token positions the flow model reads: the longest caption with its start and end
    markers, rounded up to a multiple of `multiple` (CLIP's causal mask makes the first
    positions the same whatever the padding after them)."""
    longest = max(len(ids) for ids in tokenizer(sorted(set(captions))).input_ids)
    return -(-longest // multiple) * multiple


def flow_pipeline(parts: dict, cfg: FlowConfig, sample_size: int, scheduler=None):
    """A `StableDiffusion3Pipeline` of the borrowed `parts` and a fresh transformer of `cfg`
    (the recipe trains its weights), without T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    te, te2 = parts["text_encoder"], parts["text_encoder_2"]
    transformer = build_transformer(
        cfg,
        sample_size,
        parts["vae"].config.latent_channels,
        te.config.hidden_size + te2.config.hidden_size,  # the two CLIP slots, concatenated
        te.config.projection_dim + te2.config.projection_dim,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=cfg.shift),
        vae=parts["vae"],
        text_encoder=te,
        tokenizer=parts["tokenizer"],
        text_encoder_2=te2,
        tokenizer_2=parts["tokenizer_2"],
        text_encoder_3=None,
        tokenizer_3=None,
    )


@torch.no_grad()
def encode_flow_data(pipe, images, captions: list[str], chunk: int = 256) -> dict:
    """Latents of `images` (n, H, W, 3) uint8 as the pipeline's latents, and every distinct
    caption's (and the empty prompt's) features by `pipe.encode_prompt`, without T5."""
    from .vae import encode_all

    vae = pipe.vae
    latents = (encode_all(vae, images) - vae.config.shift_factor) * vae.config.scaling_factor
    distinct = sorted(set(captions))
    where = {c: i for i, c in enumerate(distinct)}
    texts, pooled = [], []
    for i in range(0, len(distinct) + 1, chunk):
        batch = (distinct + [""])[i : i + chunk]
        t, _, p, _ = pipe.encode_prompt(
            batch, batch, None, do_classifier_free_guidance=False, max_sequence_length=0
        )
        texts.append(t)
        pooled.append(p)
    texts, pooled = torch.cat(texts), torch.cat(pooled)  # (u + 1, tokens, d), (u + 1, d')
    return {
        "latents": latents.half(),  # (n, c, h, w)
        "row_text": torch.tensor([where[c] for c in captions]),  # (n,)
        "texts": texts[:-1],
        "pooled": pooled[:-1],
        "empty_text": texts[-1],
        "empty_pooled": pooled[-1],
    }
