"""`sdviz train`: the whole sdviz-mini recipe, end to end, seeded and resumable.

Stages (each saves its result under the work folder and is skipped when that result
exists, so an interrupted run resumes): `data` (ShapesWorld images + tokenizer), `vae`
and `clip` (CLIP ends with hard negatives, `sdviz.training.clip`), `encode` (latents of
every training image, each channel centred and brought to the same spread, then scaled
by the measured `scaling_factor`), `decoder` (the VAE decoder fine-tuned on whole
images), `clip_image` (CLIP's image tower trained further), `unet` (DDPM on the cached
latents, captions that say where things are oversampled, data-parallel over the CPU's
cores with `sdviz.training.parallel`; snapshots every few hundred steps), `assemble` (a
`StableDiffusionPipeline` saved with safetensors, plus the full CLIP model in `clip/`
for similarity lessons). By default the stages run in two parallel processes
(`sdviz.training.lanes`), each as soon as the stages it needs are done; they share
the work folder through `sdviz.training.workdir`, and `sdviz.training.assemble` joins
the parts. Hyper-parameters live in `FULL` and `QUICK`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .assemble import assemble_pipeline, text_encoder_from_clip
from .workdir import (
    following_threads,
    grant_threads,
    log_to,
    previous_seconds,
    record,
    update_json,
)

# torch, diffusers and transformers are imported inside the functions, so that building
# the `sdviz` command line (which imports `add_parser`) stays fast.

FULL = dict(
    images=16_000,
    vae_steps=600,
    vae_batch=32,
    clip_steps=1000,
    clip_batch=64,
    # then both towers with hard negatives (counterfactual captions). From scratch they
    # did not help at 1,000 steps; after plain training they did (shipped: 1,500 steps at
    # lr 3e-4 and 1,000 at 2e-4, two runs; see the model card)
    clip_hard_negative_steps=2500,
    clip_hard_negative_batch=128,
    clip_hard_negative_lr=3e-4,
    # From scratch on balanced latents, with the captions that say where things are
    # (`sdviz.shapes.says_where`) `unet_where_oversample` times more often and the x0 error
    # of the noisiest steps weighted at least `unet_snr_floor` (Min-SNR alone gives them
    # snr, 0.005 at t=999, and that is where the layout is decided): with Min-SNR alone
    # the UNet learned to ignore position words (see the model card). The stage runs
    # data-parallel, one process per thread (`sdviz.training.parallel`), each with half of
    # every batch of 32: on this 2-core CPU 2.9 steps/s (92 images/s) alone, 2.4 on
    # average over a long run beside evaluations, where one process made 50 images/s (and
    # two threads in one process fewer than one). It waits for the decoder and CLIP image
    # stages so as to have both cores: about 154 min in all (model card). From scratch
    # this way (shipped text encoder and latents), 14,000 steps scored 99.0 / 82.3 / 72.9%
    # (one object / two / placement, reported set): every bar; the old batch-16 one-process
    # recipe 86.5 / 61.5 / 31.2% at its end (15,600 steps).
    # The whole recipe in one run (seed 0, shipped): 96.9 / 84.4 / 84.4% at step 18,000,
    # 161.9 min in two lanes (the UNet at 2.18 steps/s on a shared host).
    unet_steps=18_000,
    unet_batch=32,
    # lr 1e-3, then lower from these steps
    unet_lr_drops=((8_000, 3e-4), (15_000, 1e-4)),
    # what the UNet predicts ("epsilon" or "v_prediction") and its Min-SNR cap (None: plain)
    unet_prediction_type="epsilon",
    unet_snr_gamma=5.0,
    unet_snr_floor=1.0,
    unet_where_oversample=2,
    snapshot_every=100,
    decoder_steps=2000,
    decoder_batch=16,
    clip_image_steps=1500,
)
QUICK = dict(
    images=64,
    vae_steps=4,
    vae_batch=8,
    clip_steps=4,
    clip_batch=16,
    clip_hard_negative_steps=2,
    clip_hard_negative_batch=8,
    clip_hard_negative_lr=3e-4,
    unet_steps=4,
    unet_batch=8,
    unet_lr_drops=((2, 3e-4),),
    unet_prediction_type=FULL["unet_prediction_type"],
    unet_snr_gamma=FULL["unet_snr_gamma"],
    unet_snr_floor=FULL["unet_snr_floor"],
    unet_where_oversample=FULL["unet_where_oversample"],
    snapshot_every=2,
    decoder_steps=2,
    decoder_batch=4,
    clip_image_steps=2,
)
# in priority order: when two stages could start, the earlier one does (`lanes.run_lanes`)
STAGES = ("data", "vae", "clip", "encode", "decoder", "clip_image", "unet", "assemble")


def run_stage(stage: str, args: argparse.Namespace, cfg: dict, log) -> None:
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPModel

    from . import clip as clip_mod
    from . import data
    from . import unet as unet_mod
    from . import vae as vae_mod

    work, seed = Path(args.work), args.seed
    # wall-clock budget shared by the UNet stage and the stages run beside it
    deadline = time.time() + 60 * args.unet_minutes if args.unet_minutes else None
    torch.manual_seed(seed)
    t0, before = time.time(), previous_seconds(work, stage)  # before: a stopped run's time
    images, captions = data.make_dataset(work, cfg["images"], seed=seed, workers=args.threads)
    tokenizer = data.make_tokenizer(work, seed=seed)
    if stage == "data":
        log(f"data: {len(images)} images, vocabulary {len(tokenizer)}")
    elif stage == "vae" and not (work / "vae").exists():
        vae = vae_mod.train_vae(
            vae_mod.build_vae(images.shape[1]),
            images,
            cfg["vae_steps"],
            batch=cfg["vae_batch"],
            seed=seed,
            log=log,
        )
        vae.save_pretrained(work / "vae")
    elif stage == "clip" and not (work / "clip").exists():
        clip = clip_mod.train_clip(
            clip_mod.build_clip(tokenizer, images.shape[1]),
            tokenizer,
            images,
            captions,
            cfg["clip_steps"],
            batch=cfg["clip_batch"],
            seed=seed,
            log=log,
        )
        clip = clip_mod.train_clip(  # so that the text tower reads relations
            clip,
            tokenizer,
            images,
            captions,
            cfg["clip_hard_negative_steps"],
            batch=cfg["clip_hard_negative_batch"],
            lr=cfg["clip_hard_negative_lr"],
            seed=seed + 1,
            hard_negatives=True,
            warmup=100,
            log=log,
        )
        clip.save_pretrained(work / "clip")
    elif stage == "encode" and not (work / "latents.pt").exists():
        vae = AutoencoderKL.from_pretrained(work / "vae")
        lat = vae_mod.encode_all(vae, images)  # (n, c, h, w) posterior means
        mean, std = vae_mod.channel_stats(lat)
        target = float(lat.float().std())  # keep the overall spread: only balance channels
        lat = (lat - mean[:, None, None]) / std[:, None, None] * target
        sf = vae_mod.measure_scaling_factor(lat)
        log(
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
            work / "latents.pt",
        )
    elif stage == "unet":
        from ..shapes import says_where

        cached = torch.load(work / "latents.pt")
        text_encoder = text_encoder_from_clip(CLIPModel.from_pretrained(work / "clip"))
        unet = unet_mod.build_unet(text_encoder.config.hidden_size, cached["latents"].shape[-1])
        where = torch.tensor([i for i, c in enumerate(captions) if says_where(c)], dtype=torch.long)
        rows = torch.cat([torch.arange(len(captions))] + [where] * cfg["unet_where_oversample"])
        log(f"unet: {len(where)} of {len(captions)} captions say where; {len(rows)} rows")
        # data-parallel on the CPU: one process per thread it was given (each on one thread)
        processes = torch.get_num_threads() if torch.device(args.device).type == "cpu" else 1
        log(f"unet: {processes} process{'es' * (processes > 1)}, batch {cfg['unet_batch']}")
        _, done = unet_mod.train_unet(
            unet,
            text_encoder,
            cached["latents"][rows],
            cached["ids"][rows],
            data.tokenize(tokenizer, [""]),
            cfg["unet_steps"],
            work,
            batch=cfg["unet_batch"],
            lr_drops=cfg["unet_lr_drops"],
            snapshot_every=cfg["snapshot_every"],
            deadline=deadline,
            resume=True,
            seed=seed,
            log=log_to(work),  # picklable, for the processes (no thread grants to follow)
            device=args.device,
            prediction_type=cfg["unet_prediction_type"],
            snr_gamma=cfg["unet_snr_gamma"],
            snr_floor=cfg["unet_snr_floor"],
            processes=processes,
        )
        record(work, "unet_steps_done", done)
        record(work, "unet_prediction_type", cfg["unet_prediction_type"])
    elif stage == "decoder" and not (work / "vae_decoder").exists():
        vae = AutoencoderKL.from_pretrained(work / "vae")
        vae = vae_mod.finetune_decoder(
            vae,
            images,
            cfg["decoder_steps"],
            batch=cfg["decoder_batch"],
            seed=seed,
            log=log,
            deadline=deadline,
        )
        vae.save_pretrained(work / "vae_decoder")
    elif stage == "clip_image" and not (work / "clip_image").exists():
        clip = clip_mod.finetune_image_tower(
            CLIPModel.from_pretrained(work / "clip"),
            tokenizer,
            images,
            captions,
            cfg["clip_image_steps"],
            batch=cfg["clip_batch"],
            seed=seed,
            log=log,
            deadline=deadline,
        )
        clip.save_pretrained(work / "clip_image")
    elif stage == "assemble":
        assemble_pipeline(work, Path(args.out), log)
    else:
        log(f"{stage}: already done in {work}, skipped")
        return
    record(work, f"{stage}_seconds", round(time.time() - t0 + before, 1))
    log(f"{stage}: done in {time.time() - t0:.0f} s")


def _device(text: str) -> str:
    """An argparse type: a torch device that this machine has (`sdviz.pipeline.resolve_device`)."""
    from ..pipeline import resolve_device

    try:
        return str(resolve_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..cli import positive_int  # the command line's argument types

    parser.add_argument("--out", default="sdviz-mini", help="pipeline folder to write")
    parser.add_argument("--work", default=None, help="checkpoints folder (default: OUT.work)")
    parser.add_argument("--quick", action="store_true", help="tiny run (< 1 min) for tests")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the work folder's checkpoints (default: start over)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=("all",) + STAGES, default="all")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads in all")
    parser.add_argument(
        "--lanes",
        type=positive_int,
        default=2,
        help="stages run at once, in separate processes that share the threads (1: one "
        "after the other in this process)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        type=_device,
        help="torch device for the UNet stage: cpu, cuda, mps or auto (the CPU recipe is "
        "the reference)",
    )
    parser.add_argument(
        "--unet-minutes",
        type=float,
        default=None,
        help="stop UNet (and decoder) training after this many minutes (snapshot kept)",
    )
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse subparsers object (used by sdviz.cli)."""
    p = subparsers.add_parser("train", help="train sdviz-mini (CLIP, VAE, UNet) from scratch")
    add_arguments(p)
    p.set_defaults(func=lambda args: run(args))
    return p


def run(args: argparse.Namespace) -> int:
    # On a shared CPU, busy-waiting OpenMP threads slow everything down: let them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    cfg = QUICK if args.quick else FULL
    processes = args.threads if torch.device(args.device).type == "cpu" else 1
    if args.stage in ("all", "unet") and cfg["unet_batch"] % processes:
        raise ValueError(
            f"--threads {args.threads}: the UNet trains in one process per thread, each on an "
            f"equal slice of its batch of {cfg['unet_batch']}; give a number of threads that "
            "divides it (1, 2, 4, ...)."
        )
    torch.set_num_threads(args.threads)
    args.work = args.work or f"{args.out}.work"
    work = Path(args.work)
    if work.exists() and not args.resume and args.stage == "all":
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = log_to(work)
    if args.stage != "all":
        run_stage(args.stage, args, cfg, following_threads(work, args.stage, log))
        return 0
    if args.lanes == 1:
        for stage in STAGES:
            run_stage(stage, args, cfg, log)
        return 0
    from .lanes import run_lanes

    t0 = time.time()
    path = work / "record.json"
    previous = json.loads(path.read_text()) if args.resume and path.exists() else {}
    shutil.rmtree(work / "lanes", ignore_errors=True)  # grants of a run that was stopped
    (work / "lanes").mkdir()

    def grant(stage: str, threads: int) -> None:
        grant_threads(work, stage, threads)

    def command(stage: str, threads: int) -> list[str]:
        return _stage_command(args, stage, threads)

    try:
        run_lanes(STAGES, command, args.lanes, args.threads, log, grant=grant)
    finally:  # a stage run by hand later keeps the threads it is given
        shutil.rmtree(work / "lanes", ignore_errors=True)
    # the wall clock of the whole recipe (added to that of the runs it resumed)
    seconds = round(time.time() - t0 + previous.get("total_seconds", 0.0), 1)
    totals = {"total_seconds": seconds, "lanes": args.lanes}
    update_json(work / "record.json", **totals)
    # assemble wrote the pipeline's record (with its UNet snapshot) before these were known
    update_json(Path(args.out) / "training_record.json", **totals)
    log(f"all stages done in {seconds / 60:.1f} min with {args.lanes} lanes")
    return 0


def _stage_command(args: argparse.Namespace, stage: str, threads: int) -> list[str]:
    """The command line that runs one stage of this run in its own process."""
    cmd = [sys.executable, "-m", "sdviz.training.recipe", "--stage", stage, "--resume"]
    cmd += ["--out", str(args.out), "--work", str(args.work), "--seed", str(args.seed)]
    cmd += ["--threads", str(threads), "--device", str(args.device)]
    if args.quick:
        cmd.append("--quick")
    if args.unet_minutes is not None:
        cmd += ["--unet-minutes", str(args.unet_minutes)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="sdviz train", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
