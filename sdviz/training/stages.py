"""The stages of `sdviz train`, one function each, and `run_stage`, which runs one by name.

Every stage gets the same `_Stage` (the run's settings, the training images, captions
and tokenizer as one `data.CaptionedImages`) and saves its result under the work folder. A stage whose result is
already there (`RESULT`) is skipped, so that an interrupted run resumes; `data`, `unet`
(which resumes from its own snapshots) and `assemble` always run.

No stage touches torch's global RNG: the models a stage builds (and those it loads,
whose constructors may draw initial weights) draw from the stage's own generator,
seeded with the run's seed (`sdviz.seeding.drawing_from`), and the training functions draw
from generators of their own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..seeding import drawing_from
from .assemble import assemble_pipeline, text_encoder_from_clip
from .config import FlowConfig, RecipeConfig
from .workdir import log_to, previous_seconds, record

if TYPE_CHECKING:
    import torch

    from .data import CaptionedImages

# torch, diffusers and transformers are imported inside the functions, so that building
# the `sdviz` command line (which imports `sdviz.training.recipe`) stays fast.


@dataclass(frozen=True)
class _Stage:
    """What every stage is given: the run's settings and its training data."""

    work: Path
    out: Path
    seed: int
    generator: torch.Generator  # seeded with `seed`: the stage's models draw from it
    device: str
    deadline: float | None  # wall clock shared by the UNet stage and those run beside it
    cfg: RecipeConfig
    log: Callable[[str], None]
    captioned: CaptionedImages  # images (n, 64, 64, 3) uint8, captions, tokenizer
    base: Path | None = None  # `--flow`: the sdviz-mini folder whose VAE and CLIP it borrows
    flow: FlowConfig | None = None  # `--flow`: the transformer and its training


def _stage_data(s: _Stage) -> None:
    s.log(f"data: {len(s.captioned.images)} images, vocabulary {len(s.captioned.tokenizer)}")


def _stage_vae(s: _Stage) -> None:
    from . import vae as vae_mod

    images = s.captioned.images
    with drawing_from(s.generator):
        vae = vae_mod.build_vae(images.shape[1])
    vae = vae_mod.train_vae(
        vae,
        images,
        s.cfg.vae_steps,
        batch=s.cfg.vae_batch,
        seed=s.seed,
        log=s.log,
    )
    vae.save_pretrained(s.work / "vae")


def _stage_clip(s: _Stage) -> None:
    from . import clip as clip_mod

    data = s.captioned
    with drawing_from(s.generator):
        clip = clip_mod.build_clip(data.tokenizer, data.images.shape[1])
    clip = clip_mod.train_clip(
        clip, data, s.cfg.clip_steps, batch=s.cfg.clip_batch, seed=s.seed, log=s.log
    )
    clip = clip_mod.train_clip(  # so that the text tower reads relations
        clip,
        data,
        s.cfg.clip_hard_negative_steps,
        batch=s.cfg.clip_hard_negative_batch,
        lr=s.cfg.clip_hard_negative_lr,
        seed=s.seed + 1,
        hard_negatives=True,
        warmup=100,
        log=s.log,
    )
    clip.save_pretrained(s.work / "clip")


def _stage_encode(s: _Stage) -> None:
    import torch
    from diffusers import AutoencoderKL

    from . import data
    from . import vae as vae_mod

    with drawing_from(s.generator):
        vae = AutoencoderKL.from_pretrained(s.work / "vae")
    tokenizer, images, captions = s.captioned
    lat = vae_mod.encode_all(vae, images)  # (n, c, h, w) posterior means
    mean, std = vae_mod.channel_stats(lat)
    target = float(lat.float().std())  # keep the overall spread: only balance channels
    lat = (lat - mean[:, None, None]) / std[:, None, None] * target
    sf = vae_mod.measure_scaling_factor(lat)
    s.log(
        f"encode: latents {tuple(lat.shape)}, channel means {mean.tolist()} and stds "
        f"{std.tolist()} balanced to 0 and {target:.4f} -> scaling_factor {sf:.4f}"
    )
    torch.save(
        {
            "latents": (lat * sf).half(),
            "scaling_factor": sf,
            "ids": data.tokenize(tokenizer, captions),
            # folded into the VAE at assembly (vae.balance_channels)
            "channel_mean": mean,
            "channel_std": std,
            "channel_target": target,
        },
        s.work / "latents.pt",
    )


def _fine_tune(
    s: _Stage, train: Callable, model: Any, data: Any, steps: int, batch: int, to: str
) -> None:
    """Train a saved model further with `train(model, data, steps, ...)`, within the
    run's deadline, and save it as `to` in the work folder."""
    model = train(model, data, steps, batch=batch, seed=s.seed, log=s.log, deadline=s.deadline)
    model.save_pretrained(s.work / to)


def _stage_decoder(s: _Stage) -> None:
    from diffusers import AutoencoderKL

    from .vae import finetune_decoder

    with drawing_from(s.generator):
        vae = AutoencoderKL.from_pretrained(s.work / "vae")
    steps, batch = s.cfg.decoder_steps, s.cfg.decoder_batch
    _fine_tune(s, finetune_decoder, vae, s.captioned.images, steps, batch, "vae_decoder")


def _stage_clip_image(s: _Stage) -> None:
    from transformers import CLIPModel

    from .clip import finetune_image_tower

    with drawing_from(s.generator):
        clip = CLIPModel.from_pretrained(s.work / "clip")
    steps, batch = s.cfg.clip_image_steps, s.cfg.clip_batch
    _fine_tune(s, finetune_image_tower, clip, s.captioned, steps, batch, "clip_image")


def _stage_unet(s: _Stage) -> None:
    import torch
    from transformers import CLIPModel

    from ..shapes import says_where
    from . import data
    from . import unet as unet_mod

    cfg, log, (tokenizer, _, captions) = s.cfg, s.log, s.captioned
    cached = torch.load(s.work / "latents.pt")
    with drawing_from(s.generator):
        text_encoder = text_encoder_from_clip(CLIPModel.from_pretrained(s.work / "clip"))
        unet = unet_mod.build_unet(text_encoder.config.hidden_size, cached["latents"].shape[-1])
    where = torch.tensor([i for i, c in enumerate(captions) if says_where(c)], dtype=torch.long)
    rows = torch.cat([torch.arange(len(captions))] + [where] * cfg.unet_where_oversample)
    log(f"unet: {len(where)} of {len(captions)} captions say where; {len(rows)} rows")
    # data-parallel on the CPU: one process per thread it was given (each on one thread)
    processes = torch.get_num_threads() if torch.device(s.device).type == "cpu" else 1
    log(f"unet: {processes} process{'es' * (processes > 1)}, batch {cfg.unet_batch}")
    _, done = unet_mod.train_unet(
        unet,
        text_encoder,
        cached["latents"][rows],
        cached["ids"][rows],
        data.tokenize(tokenizer, [""]),
        cfg.unet_steps,
        s.work,
        batch=cfg.unet_batch,
        lr_drops=cfg.unet_lr_drops,
        snapshot_every=cfg.snapshot_every,
        deadline=s.deadline,
        resume=True,
        seed=s.seed,
        log=log_to(s.work),  # picklable, for the processes (no thread grants to follow)
        device=s.device,
        prediction_type=cfg.unet_prediction_type,
        snr_gamma=cfg.unet_snr_gamma,
        snr_floor=cfg.unet_snr_floor,
        processes=processes,
    )
    record(s.work, "unet_steps_done", done)
    record(s.work, "unet_prediction_type", cfg.unet_prediction_type)


def _stage_assemble(s: _Stage) -> None:
    with drawing_from(s.generator):  # the models it builds get the trained weights
        assemble_pipeline(s.work, s.out, s.log)


def _flow_parts(s: _Stage) -> tuple[dict, dict]:
    """(the "borrowed" spec, the loaded parts): the base's VAE, CLIP and tokenizer."""
    from transformers import CLIPTokenizer

    from ..borrowed import load_borrowed
    from .flow import FLOW_CLASSES, borrowed_components, prompt_tokens

    base = Path(s.base).resolve()
    tokens = prompt_tokens(CLIPTokenizer.from_pretrained(base / "tokenizer"), s.captioned.captions)
    spec = borrowed_components(base, tokens)
    return spec, load_borrowed(base, spec, FLOW_CLASSES)


def _stage_flow_encode(s: _Stage) -> None:
    import torch

    from .flow import encode_flow_data, flow_pipeline

    spec, parts = _flow_parts(s)
    side = s.captioned.images.shape[1] // 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    with drawing_from(s.generator):
        pipe = flow_pipeline(parts, s.flow, side)
    data = encode_flow_data(pipe, s.captioned.images, s.captioned.captions)
    tokens = tuple(data["texts"].shape[1:])
    s.log(
        f"flow_encode: latents {tuple(data['latents'].shape)} (std "
        f"{data['latents'].float().std():.3f}), {len(data['texts'])} distinct captions -> "
        f"text features {tokens}, pooled {tuple(data['pooled'].shape[1:])}"
    )
    torch.save({**data, "borrowed": spec}, s.work / "flow_data.pt")


def _stage_flow(s: _Stage) -> None:
    import torch

    from ..shapes import says_where
    from . import flow as flow_mod

    cfg, captions = s.flow, s.captioned.captions
    cached = torch.load(s.work / "flow_data.pt")
    latents = cached["latents"]
    with drawing_from(s.generator):
        transformer = flow_mod.build_transformer(
            cfg,
            latents.shape[-1],
            latents.shape[1],
            cached["texts"].shape[-1],
            cached["pooled"].shape[-1],
        )
    where = torch.tensor([i for i, c in enumerate(captions) if says_where(c)], dtype=torch.long)
    rows = torch.cat([torch.arange(len(captions))] + [where] * cfg.where_oversample)
    data = flow_mod.FlowData(
        latents=latents[rows],
        row_text=cached["row_text"][rows],
        texts=cached["texts"],
        pooled=cached["pooled"],
        empty_text=cached["empty_text"],
        empty_pooled=cached["empty_pooled"],
    )
    processes = torch.get_num_threads() if torch.device(s.device).type == "cpu" else 1
    params = sum(p.numel() for p in transformer.parameters())
    s.log(
        f"flow: transformer {params / 1e6:.2f}M parameters, {len(rows)} rows ({len(where)} "
        f"captions say where), {processes} process{'es' * (processes > 1)}, batch {cfg.batch}"
    )
    _, done = flow_mod.train_flow(
        transformer,
        data,
        cfg,
        s.work,
        deadline=s.deadline,
        resume=True,
        seed=s.seed,
        log=log_to(s.work),
        device=s.device,
        processes=processes,
    )
    record(s.work, "flow_steps_done", done)


def _stage_flow_assemble(s: _Stage) -> None:
    from .assemble import assemble_flow

    with drawing_from(s.generator):
        assemble_flow(s.work, s.out, s.flow, s.log)


# in priority order: when two stages could start, the earlier one does (`lanes.run_lanes`)
STAGE_FUNCTIONS: dict[str, Callable[[_Stage], None]] = {
    "data": _stage_data,
    "vae": _stage_vae,
    "clip": _stage_clip,
    "encode": _stage_encode,
    "decoder": _stage_decoder,
    "clip_image": _stage_clip_image,
    "unet": _stage_unet,
    "assemble": _stage_assemble,
}
STAGES = tuple(STAGE_FUNCTIONS)
# `sdviz train --flow`: sdviz-mini-flow, on the VAE and CLIP of a trained sdviz-mini
FLOW_STAGE_FUNCTIONS: dict[str, Callable[[_Stage], None]] = {
    "data": _stage_data,
    "flow_encode": _stage_flow_encode,
    "flow": _stage_flow,
    "flow_assemble": _stage_flow_assemble,
}
FLOW_STAGES = tuple(FLOW_STAGE_FUNCTIONS)
# what a stage saves in the work folder: when it is there, the stage is skipped
RESULT = {
    "vae": "vae",
    "clip": "clip",
    "encode": "latents.pt",
    "decoder": "vae_decoder",
    "clip_image": "clip_image",
    "flow_encode": "flow_data.pt",
}


def run_stage(
    stage: str,
    args: argparse.Namespace,
    cfg: RecipeConfig,
    log,
    flow: FlowConfig | None = None,
) -> None:
    """Run one stage of `sdviz train` (`args` from its command line) and record its time."""
    import torch

    from . import data

    work, seed = Path(args.work), args.seed
    deadline = time.time() + 60 * args.unet_minutes if args.unet_minutes else None
    t0, before = time.time(), previous_seconds(work, stage)  # before: a stopped run's time
    images, captions = data.make_dataset(work, cfg.images, seed=seed, workers=args.threads)
    captioned = data.CaptionedImages(data.make_tokenizer(work, seed=seed), images, captions)
    if stage in RESULT and (work / RESULT[stage]).exists():
        log(f"{stage}: already done in {work}, skipped")
        return
    functions = FLOW_STAGE_FUNCTIONS if flow is not None else STAGE_FUNCTIONS
    functions[stage](
        _Stage(
            work=work,
            out=Path(args.out),
            seed=seed,
            generator=torch.Generator().manual_seed(seed),  # not the global RNG
            device=args.device,
            deadline=deadline,
            cfg=cfg,
            log=log,
            captioned=captioned,
            base=getattr(args, "base", None),
            flow=flow,
        )
    )
    record(work, f"{stage}_seconds", round(time.time() - t0 + before, 1))
    log(f"{stage}: done in {time.time() - t0:.0f} s")
