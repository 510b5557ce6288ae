"""How much does tracing slow a generation, and how much memory does a trace hold?

Runs the same pipeline with the same seed plainly and inside `sdviz.trace` (cross-
attention capture on), interleaving the two so that drifting machine load hits both
alike, and prints the median traced/plain time ratio (target <= 1.05 for SD 1.5's
architecture, <= 1.10 for the tiny families), the memory of the recorded run, and the
memory the trace's own estimate (the one its budget check uses) gives for per-step
per-token attention maps of each family's published architecture (sdviz.architectures,
built on the meta device) at its native resolution and default steps: SD 1.5 (target
<= 64 MB), SDXL, SD3-medium and FLUX.1-dev (target <= 256 MB each), next to keeping
every head of every layer.

    python benchmarks/trace_overhead.py                        # tiny SD pipeline on the CPU
    python benchmarks/trace_overhead.py --model tiny-sd3       # tiny-sdxl, tiny-flux too
    python benchmarks/trace_overhead.py --memory-only          # the memory table alone
    python benchmarks/trace_overhead.py --model sd15 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdviz import builder
from sdviz.architectures import attention_map_shapes, meta_component
from sdviz.attention import AttentionCapture
from sdviz.builder import sd_architecture, tiny_pipeline
from sdviz.joint_attention import JointAttentionCapture
from sdviz.tracing import trace

MB = 10**6
SD15 = dict(steps=50, tokens=77, latent=64)  # 512 px / VAE factor 8
# architecture -> (denoiser component, family)
FAMILY_ARCHITECTURES = {
    "sd15": ("unet", "stable-diffusion"),
    "sdxl": ("unet", "stable-diffusion-xl"),
    "sd3-medium": ("transformer", "stable-diffusion-3"),
    "flux-dev": ("transformer", "flux"),
}
TINY = {
    "tiny": tiny_pipeline,
    **{f"tiny-{f}": getattr(builder, f"tiny_{f}_pipeline") for f in ("sdxl", "sd3", "flux")},
}


def build(model: str, device: torch.device, dtype: torch.dtype):
    if model in TINY:
        pipe = TINY[model]().to(device)
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


def family_map_bytes() -> list[tuple[str, str, int, int]]:
    """(architecture, steps x tokens x grid, trace estimate, every head of every layer) bytes.

    The estimate is the trace's own (`estimate_bytes` of the capture it would install,
    built on the meta device): per-step per-token maps averaged over heads and layers
    (SD3 / Flux: plus the text share, one value per grid cell per step).
    """
    rows = []
    for name, (component, _) in FAMILY_ARCHITECTURES.items():
        shapes = attention_map_shapes(name)
        denoiser = meta_component(name, component)
        capture = (AttentionCapture if component == "unet" else JointAttentionCapture)(denoiser)
        agg, _ = capture.estimate_bytes(shapes.steps, shapes.tokens, shapes.h, shapes.w)
        what = f"{shapes.steps} x {shapes.tokens} x {shapes.h}x{shapes.w}"
        rows.append((shapes.name, what, agg, shapes.every_head_bytes()))
    return rows


def print_memory_table() -> None:
    print("\nper-step per-token attention maps at native resolution and default steps (fp32)")
    print(
        f"{'architecture':<28} {'steps x tokens x grid':<24} {'trace keeps':>12} {'every head':>12}"
    )
    for name, what, agg, every in family_map_bytes():
        goal = 64 if name.endswith("1.5") else 256
        verdict = "met" if agg <= goal * MB else "NOT met"
        print(
            f"{name:<28} {what:<24} {agg / MB:>9.1f} MB {every / MB / 1000:>9.1f} GB"
            f"   (goal <= {goal} MB: {verdict})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=[*TINY, "sd15"], default="tiny")
    p.add_argument("--memory-only", action="store_true", help="print the memory table alone")
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
    if args.memory_only:
        print_memory_table()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    size = args.size or (512 if args.model == "sd15" else builder.TINY_RESOLUTION)

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
    goal = 1.05 if args.model in ("tiny", "sd15") else 1.10
    print(f"median ratio  {ratio:.3f}  (target <= {goal}: {'met' if ratio <= goal else 'NOT met'})")
    print(f"trace memory  {run_bytes(run) / MB:.2f} MB in {len(run)} keys")
    print(
        f"SD 1.5, 512 px, 50 steps: per-step per-token maps {agg / MB:.1f} MB "
        f"(target <= 64 MB: {'met' if agg <= 64 * MB else 'NOT met'}); every layer and head "
        f"{every / MB:.0f} MB"
    )
    print_memory_table()


if __name__ == "__main__":
    main()
