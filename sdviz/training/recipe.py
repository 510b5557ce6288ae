"""`sdviz train`: the whole sdviz-mini recipe, end to end, seeded and resumable.

Stages (each saves its result under the work folder and is skipped when that result
exists, so an interrupted run resumes): `data` (ShapesWorld images + tokenizer), `vae`
and `clip` (independent: can run in parallel processes; CLIP ends with hard negatives,
`sdviz.training.clip`), `encode` (latents of every
training image, each channel centred and brought to the same spread, then scaled by
the measured `scaling_factor`), `unet` (DDPM on the cached
latents, snapshots every few hundred steps), `where` (a fine-tune of that UNet that
oversamples captions saying where things are), `assemble` (a `StableDiffusionPipeline`
saved with safetensors, plus the full CLIP model in `clip/` for similarity lessons).
Hyper-parameters live in `FULL` and `QUICK`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

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
    # The shipped UNet's first run stopped here (by the clock), on unbalanced latents; it
    # was then fine-tuned on balanced ones (see the model card). This recipe trains on
    # balanced latents from the start, which was not run at full length.
    unet_steps=15_093,
    unet_batch=32,
    # lr 1e-3, then lower from these steps (where the shipped run's timed segments ended)
    unet_lr_drops=((4_300, 3e-4), (12_057, 1e-4)),
    # what the UNet predicts ("epsilon" or "v_prediction") and its Min-SNR cap (None: plain)
    unet_prediction_type="epsilon",
    unet_snr_gamma=5.0,
    # then a fine-tune that teaches position words (the shipped UNet's last run): captions
    # that say where (`sdviz.shapes.says_where`) 3 times as often, and the x0 error of the
    # noisiest steps weighted at least 1
    where_steps=4000,
    where_oversample=2,
    where_lr=3e-4,
    where_lr_drops=(),
    where_snr_floor=1.0,
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
    where_steps=2,
    where_oversample=FULL["where_oversample"],
    where_lr=FULL["where_lr"],
    where_lr_drops=((1, FULL["where_lr"] / 3),),
    where_snr_floor=FULL["where_snr_floor"],
    snapshot_every=2,
    decoder_steps=2,
    decoder_batch=4,
    clip_image_steps=2,
)
STAGES = ("data", "vae", "clip", "encode", "unet", "where", "decoder", "clip_image", "assemble")


def _log_to(work: Path):
    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(work / "train.log", "a") as f:
            f.write(line + "\n")

    return log


def _record(work: Path, key: str, value) -> None:
    path = work / "record.json"
    rec = json.loads(path.read_text()) if path.exists() else {}
    rec[key] = value
    path.write_text(json.dumps(rec, indent=1))


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
    t0 = time.time()
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
    elif stage in ("unet", "where"):
        cached = torch.load(work / "latents.pt")
        text_encoder = text_encoder_from_clip(CLIPModel.from_pretrained(work / "clip"))
        unet = unet_mod.build_unet(text_encoder.config.hidden_size, cached["latents"].shape[-1])
        rows = torch.arange(len(captions))
        settings = dict(lr_drops=cfg["unet_lr_drops"], seed=seed)
        if stage == "where":
            # With Min-SNR alone the UNet learned to ignore position words: fine-tune it on
            # captions that say where, oversampled, with the noisiest steps weighted up.
            from safetensors.torch import load_file

            from ..shapes import says_where

            if not (work / "where" / "unet_state.pt").exists():  # else train_unet resumes
                unet.load_state_dict(load_file(latest_snapshot(work, fine_tuned=False)))
            where = torch.tensor([i for i, c in enumerate(captions) if says_where(c)])
            rows = torch.cat([rows] + [where.long()] * cfg["where_oversample"])
            log(f"where: {len(where)} of {len(captions)} captions say where, oversampled")
            settings = dict(
                lr=cfg["where_lr"],
                lr_drops=cfg["where_lr_drops"],
                seed=seed + 1,
                snr_floor=cfg["where_snr_floor"],
            )
        _, done = unet_mod.train_unet(
            unet,
            text_encoder,
            cached["latents"][rows],
            cached["ids"][rows],
            data.tokenize(tokenizer, [""]),
            cfg[f"{stage}_steps"],
            work if stage == "unet" else work / "where",
            batch=cfg["unet_batch"],
            snapshot_every=cfg["snapshot_every"],
            deadline=deadline,
            resume=True,
            log=log,
            device=args.device,
            prediction_type=cfg["unet_prediction_type"],
            snr_gamma=cfg["unet_snr_gamma"],
            **settings,
        )
        _record(work, f"{stage}_steps_done", done)
        _record(work, "unet_prediction_type", cfg["unet_prediction_type"])
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
    _record(work, f"{stage}_seconds", round(time.time() - t0 + _previous(work, stage), 1))
    log(f"{stage}: done in {time.time() - t0:.0f} s")


def _previous(work: Path, stage: str) -> float:
    path = work / "record.json"
    if stage not in ("unet", "where") or not path.exists():  # the resumable stages
        return 0.0
    return json.loads(path.read_text()).get(f"{stage}_seconds", 0.0)


def text_encoder_from_clip(clip: Any) -> Any:
    """The CLIP text tower as a standalone `CLIPTextModel` (what SD calls `text_encoder`)."""
    from transformers import CLIPTextModel

    text = CLIPTextModel(clip.config.text_config)
    prefix = "text_model."
    weights = {k[len(prefix) :]: v for k, v in clip.state_dict().items() if k.startswith(prefix)}
    missing, unexpected = text.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"CLIP text tower mismatch: {missing} {unexpected}")
    return text.eval()


def latest_snapshot(work: Path, fine_tuned: bool = True) -> Path:
    """The newest EMA snapshot of the UNet: the `where` stage's if it ran (and
    `fine_tuned`), else the `unet` stage's."""
    for folder in (work / "where", work) if fine_tuned else (work,):
        snaps = sorted(folder.glob("unet_ema_*.safetensors"))
        if snaps:
            return snaps[-1]
    raise FileNotFoundError(f"no UNet snapshot in {work}: run the 'unet' stage first.")


def assemble_pipeline(work: Path, out: Path, log=print, snapshot: Path | None = None):
    """Build the StableDiffusionPipeline from the work folder and save it to `out`.

    The full CLIP model (both towers), its tokenizer and image preprocessing go to
    `out/clip`, which `StableDiffusionPipeline.from_pretrained` ignores.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from ..builder import SD_SCHEDULE, assemble
    from . import data
    from . import unet as unet_mod
    from .vae import balance_channels

    tokenizer = data.make_tokenizer(work)
    cached = torch.load(work / "latents.pt")
    # the fine-tuned decoder when there is one (same encoder, so the same latents)
    vae_dir = work / "vae_decoder" if (work / "vae_decoder").exists() else work / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    if "channel_mean" in cached:  # the UNet learned balanced latents: the VAE must make them
        balance_channels(
            vae, cached["channel_mean"], cached["channel_std"], cached["channel_target"]
        )
    vae.register_to_config(scaling_factor=round(cached["scaling_factor"], 5))
    clip = CLIPModel.from_pretrained(work / "clip")
    text_encoder = text_encoder_from_clip(clip)
    if (work / "clip_image").exists():  # image tower trained further, text tower unchanged
        clip = CLIPModel.from_pretrained(work / "clip_image")
        same = text_encoder_from_clip(clip).state_dict()
        if any(not torch.equal(v, same[k]) for k, v in text_encoder.state_dict().items()):
            raise RuntimeError("clip_image changed the text tower; it must stay frozen.")
    unet = unet_mod.build_unet(text_encoder.config.hidden_size, cached["latents"].shape[-1])
    snapshot = snapshot or latest_snapshot(work)
    unet.load_state_dict(load_file(snapshot))
    rec = json.loads((work / "record.json").read_text()) if (work / "record.json").exists() else {}
    # the sampler must read the UNet's output as what it was trained to predict
    prediction_type = rec.get("unet_prediction_type", "epsilon")
    scheduler = DDIMScheduler(prediction_type=prediction_type, **SD_SCHEDULE)
    pipe = assemble(tokenizer, text_encoder, unet.eval(), vae.eval(), scheduler)
    pipe.save_pretrained(out, safe_serialization=True)
    clip.save_pretrained(out / "clip", safe_serialization=True)
    tokenizer.save_pretrained(out / "clip")
    side = clip.config.vision_config.image_size
    preprocessor = {  # the CLIP image tower saw pixels scaled to [-1, 1]
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": side},
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    (out / "clip" / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    rec["unet_snapshot"] = (
        str(snapshot.relative_to(work)) if snapshot.is_relative_to(work) else snapshot.name
    )
    (out / "training_record.json").write_text(json.dumps(rec, indent=1))
    log(f"assemble: pipeline saved to {out} (UNet {snapshot.name})")
    return pipe


def _device(text: str) -> str:
    """An argparse type: a torch device that this machine has (`sdviz.pipeline.resolve_device`)."""
    from ..pipeline import resolve_device

    try:
        return str(resolve_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
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

    torch.set_num_threads(args.threads)
    args.work = args.work or f"{args.out}.work"
    work = Path(args.work)
    if work.exists() and not args.resume and args.stage == "all":
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = QUICK if args.quick else FULL
    log = _log_to(work)
    for stage in STAGES if args.stage == "all" else (args.stage,):
        run_stage(stage, args, cfg, log)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="sdviz train", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
