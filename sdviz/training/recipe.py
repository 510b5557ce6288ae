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
the parts. The stages are in `sdviz.training.stages`, one function each; their
hyper-parameters in `FULL` and `QUICK` (`sdviz.training.config.RecipeConfig`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .config import FLOW, FLOW_QUICK, FULL, QUICK
from .stages import FLOW_STAGES, STAGES, run_stage
from .workdir import following_threads, grant_threads, log_to, update_json

__all__ = ["FULL", "QUICK", "STAGES", "add_arguments", "add_parser", "main", "run", "run_stage"]

# torch is imported inside the functions, so that building the `sdviz` command line
# (which imports `add_parser`) stays fast.


def _device(text: str) -> str:
    """An argparse type: a torch device that this machine has (`sdviz.pipeline.resolve_device`)."""
    from ..pipeline import resolve_device

    try:
        return str(resolve_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def positive_int(text: str) -> int:  # argparse type (training sits below sdviz.commands)
        value = int(text)  # a ValueError is argparse's "invalid positive_int value"
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
        return value

    parser.add_argument("--out", default="sdviz-mini", help="pipeline folder to write")
    parser.add_argument("--work", default=None, help="checkpoints folder (default: OUT.work)")
    parser.add_argument("--quick", action="store_true", help="tiny run (< 1 min) for tests")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the work folder's checkpoints (default: start over)",
    )
    parser.add_argument("--seed", type=int, default=0)
    stages = ("all",) + STAGES + tuple(s for s in FLOW_STAGES if s not in STAGES)
    parser.add_argument("--stage", choices=stages, default="all")
    parser.add_argument(
        "--flow",
        action="store_true",
        help="train sdviz-mini-flow (an SD3 transformer, rectified flow) on the VAE and CLIP "
        "of the sdviz-mini folder --base, instead of sdviz-mini itself",
    )
    parser.add_argument(
        "--base",
        default=None,
        help="with --flow: the sdviz-mini folder whose VAE and CLIP it uses (default: the "
        "embedded one)",
    )
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
        help="stop UNet (and decoder) training, or with --flow the transformer's, after this "
        "many minutes (snapshot kept)",
    )
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse subparsers object (used by sdviz.commands.train)."""
    p = subparsers.add_parser("train", help="train sdviz-mini (CLIP, VAE, UNet) from scratch")
    add_arguments(p)
    p.set_defaults(func=lambda args: run(args))
    return p


def run(args: argparse.Namespace) -> int:
    # On a shared CPU, busy-waiting OpenMP threads slow everything down: let them sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    cfg = QUICK if args.quick else FULL
    if getattr(args, "flow", False):
        return _run_flow(args)
    processes = args.threads if torch.device(args.device).type == "cpu" else 1
    if args.stage in ("all", "unet") and cfg.unet_batch % processes:
        raise ValueError(
            f"--threads {args.threads}: the UNet trains in one process per thread, each on an "
            f"equal slice of its batch of {cfg.unet_batch}; give a number of threads that "
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
    return _run_in_lanes(args, work, log)


def _run_flow(args: argparse.Namespace) -> int:
    """`sdviz train --flow`: data, flow_encode, flow, flow_assemble, one after the other in
    this process (the transformer's stage is data-parallel over `--threads` processes)."""
    import torch

    from ..pipeline import EMBEDDED_MODEL

    cfg, flow = (QUICK, FLOW_QUICK) if args.quick else (FULL, FLOW)
    processes = args.threads if torch.device(args.device).type == "cpu" else 1
    if args.stage in ("all", "flow") and flow.batch % processes:
        raise ValueError(
            f"--threads {args.threads}: the transformer trains in one process per thread, each "
            f"on an equal slice of its batch of {flow.batch}; give a number of threads that "
            "divides it (1, 2, 4, ...)."
        )
    if args.stage not in ("all",) + FLOW_STAGES:
        raise ValueError(f"--flow runs the stages {FLOW_STAGES}, not {args.stage!r}.")
    args.base = Path(args.base or EMBEDDED_MODEL)
    if not (args.base / "clip").is_dir() or not (args.base / "vae").is_dir():
        raise FileNotFoundError(
            f"--base {args.base}: sdviz-mini-flow borrows the VAE (vae/) and the full CLIP model "
            "(clip/) of an sdviz-mini folder; train one with `sdviz train` or leave --base out "
            "for the embedded one."
        )
    torch.set_num_threads(args.threads)
    if args.out == "sdviz-mini":  # the default belongs to the UNet recipe
        args.out = "sdviz-mini-flow"
    args.work = args.work or f"{args.out}.work"
    work = Path(args.work)
    if work.exists() and not args.resume and args.stage == "all":
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    log = log_to(work)
    t0 = time.time()
    path = work / "record.json"
    previous = json.loads(path.read_text()) if args.resume and path.exists() else {}
    for stage in FLOW_STAGES if args.stage == "all" else (args.stage,):
        run_stage(stage, args, cfg, log, flow=flow)
    if args.stage == "all":
        seconds = round(time.time() - t0 + previous.get("total_seconds", 0.0), 1)
        update_json(path, total_seconds=seconds)
        update_json(Path(args.out) / "training_record.json", total_seconds=seconds)
        log(f"all flow stages done in {seconds / 60:.1f} min")
    return 0


def _run_in_lanes(args: argparse.Namespace, work: Path, log) -> int:
    """Every stage, each in its own process, `args.lanes` at once (`sdviz.training.lanes`)."""
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
