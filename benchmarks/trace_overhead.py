"""How much does tracing slow a generation, and how much memory does a trace hold?

Runs the same pipeline with the same seed plainly and inside `sdviz.trace` (cross-
attention capture on), interleaving the two so that drifting machine load hits both
alike, and prints the median traced/plain time ratio (target <= 1.05), the memory of
the recorded run, and the computed memory of SD 1.5's per-step per-token attention
maps at 512 px and 50 steps (target <= 64 MB, against ~3.3 GB for every layer and head).

    python benchmarks/trace_overhead.py                        # tiny pipeline on the CPU
    python benchmarks/trace_overhead.py --model sd15 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdviz.attention import AttentionCapture
from sdviz.builder import sd_architecture, tiny_pipeline
from sdviz.tracing import trace

MB = 10**6
SD15 = dict(steps=50, tokens=77, latent=64)  # 512 px / VAE factor 8


def build(model: str, device: torch.device, dtype: torch.dtype):
    if model == "tiny":
        pipe = tiny_pipeline().to(device)
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
    with torch.device(device):  # initialise the random weights where they will run
        return sd_architecture("1.5", dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, clock=time.perf_counter) -> float:
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def run_bytes(run) -> int:
    return sum(v.numel() * v.element_size() for v in run.values() if isinstance(v, torch.Tensor))


def sd15_map_bytes(unet=None) -> tuple[int, int]:
    """(aggregated maps, every layer and head) for SD 1.5 at 512 px, 50 steps."""
    if unet is None:
        with torch.device("meta"):  # the architecture without allocating its weights
            unet = sd_architecture("1.5").unet
    s, n, h = SD15["steps"], SD15["tokens"], SD15["latent"]
    agg, _ = AttentionCapture(unet).estimate_bytes(s, n, h, h)
    _, every = AttentionCapture(unet, layers="*", heads=True).estimate_bytes(s, n, h, h)
    return agg, every


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--size", type=int, default=None, help="image side in px (tiny 64, sd15 512)")
    p.add_argument("--prompt", default="a red circle to the left of a blue square")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared CPU machine)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    size = args.size or (512 if args.model == "sd15" else 64)

    t0 = time.perf_counter()
    pipe = build(args.model, device, dtype)
    print(f"built {args.model} on {device} ({args.dtype}) in {time.perf_counter() - t0:.1f} s")

    def plain():
        gen = torch.Generator(device).manual_seed(0)
        pipe(
            args.prompt,
            num_inference_steps=args.steps,
            height=size,
            width=size,
            generator=gen,
            output_type="pt",
        )

    runs = []

    def traced():
        with trace(pipe, budget_mb=4096) as tr:
            plain()
        runs.append(tr.last)

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    timed(plain, device), timed(traced, device)  # warm-up: kernels, allocator, caches
    ratios, t_plain, t_traced = [], [], []
    for r in range(args.reps):
        if r % 2 == 0:
            a, b = timed(plain, device, clock), timed(traced, device, clock)
        else:
            b, a = timed(traced, device, clock), timed(plain, device, clock)
        t_plain.append(a)
        t_traced.append(b)
        ratios.append(b / a)
        print(f"  rep {r}: plain {a:.3f} s, traced {b:.3f} s, ratio {b / a:.3f}")
    run = runs[-1]
    ratio = statistics.median(ratios)
    agg, every = sd15_map_bytes(pipe.unet if args.model == "sd15" else None)

    print(
        f"\n{args.model}, {size}x{size} px, {args.steps} steps, {device}, {args.dtype}, {args.clock} clock"
    )
    print(f"median plain  {statistics.median(t_plain):.3f} s")
    print(f"median traced {statistics.median(t_traced):.3f} s")
    print(f"median ratio  {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    print(f"trace memory  {run_bytes(run) / MB:.2f} MB in {len(run)} keys")
    print(
        f"SD 1.5, 512 px, 50 steps: per-step per-token maps {agg / MB:.1f} MB "
        f"(target <= 64 MB: {'met' if agg <= 64 * MB else 'NOT met'}); every layer and head "
        f"{every / MB:.0f} MB"
    )


if __name__ == "__main__":
    main()
