"""Which torch CPU thread setting generates fastest, on a quiet and on a busy CPU?

Times `sdviz.generate` with the embedded sdviz-mini (guidance 3) under four settings:
torch's default threads, one thread (OMP_NUM_THREADS=1), OMP_WAIT_POLICY=PASSIVE with
the default threads, and sdviz's default (`sdviz.threads.configure_threads(None)`);
each on a quiet CPU and on one where K processes spin a pure-Python loop, one per core.
Every setting has its own fresh process (OpenMP reads its environment when torch is
imported), which loads the model once and generates once to warm up. Then each round
asks the processes for one image each, in turn and in a rotating order, first on the
quiet CPU, then with the spinners: load that drifts on a shared machine hits every
cell alike, and only one process generates at a time (the others wait, asleep). Prints
the median s/image of each cell, each setting's ratio to the best of its condition,
and whether sdviz's default is within 1.3x of the best in both. A few minutes on 2 cores:
a cell stops getting images once they took --cell-seconds.

    python benchmarks/threads.py                         # 3 images, 25 steps, K = cores
    python benchmarks/threads.py --images 1 --steps 2 --busy-processes 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager

PROMPT = "a red circle to the left of a blue square"
GUIDANCE = 3.0  # sdviz-mini's (its model card)
WITHIN = 1.3  # sdviz's default is good enough when this close to the best

# setting -> environment it runs under; the sdviz default also calls configure_threads(None)
SETTINGS = {
    "torch default": {},
    "1 thread (OMP_NUM_THREADS=1)": {"OMP_NUM_THREADS": "1"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "sdviz default": {},
}
SDVIZ_DEFAULT = "sdviz default"
CONDITIONS = ("quiet", "busy")
# inherited, these would change what "torch default" means
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
MARK = "@threads "  # starts the worker's answers on its stdout (anything else there is ignored)

# one busy process: spins on its core until the deadline, even if nobody stops it
SPIN = """\
import os, sys, time
core, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
try:
    os.sched_setaffinity(0, {core})
except (AttributeError, OSError):
    pass
while time.monotonic() < end:
    pass
"""


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cores() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextmanager
def busy(processes: int, seconds: float):
    """`processes` processes spinning a pure-Python loop, one per core in turn, for at
    most `seconds`; always stopped when the block ends, however it ends."""
    spinners: list[subprocess.Popen] = []
    where = cores()
    try:
        for i in range(processes):
            cmd = [sys.executable, "-c", SPIN, str(where[i % len(where)]), str(seconds)]
            spinners.append(subprocess.Popen(cmd))
        if spinners:
            time.sleep(0.5)  # let them start spinning before anything is timed
        yield spinners
    finally:
        for p in spinners:
            p.terminate()
        for p in spinners:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _say(message: dict) -> None:
    print(MARK + json.dumps(message), flush=True)


def worker(setting: str, steps: int) -> None:
    """In a fresh process: load sdviz-mini, warm up once, then generate one image per seed
    read from stdin, answering each with its seconds."""
    import torch

    import sdviz

    pipe = sdviz.load()
    if setting == SDVIZ_DEFAULT:
        from sdviz.builder import count_parameters
        from sdviz.threads import configure_threads

        configure_threads(None, unet_parameters=count_parameters(pipe.unet))
    sdviz.generate(pipe, PROMPT, guidance_scale=GUIDANCE, steps=steps, seed=0)
    _say({"threads": torch.get_num_threads()})
    for line in sys.stdin:
        start = time.perf_counter()
        sdviz.generate(pipe, PROMPT, guidance_scale=GUIDANCE, steps=steps, seed=int(line))
        _say({"seconds": time.perf_counter() - start})


class Worker:
    """`worker(setting)` in a fresh process under the setting's environment."""

    def __init__(self, setting: str, steps: int, timeout: float):
        self.setting, self.timeout = setting, timeout
        env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
        env.update(SETTINGS[setting])
        cmd = [sys.executable, __file__, "--worker", setting, "--steps", str(steps)]
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the process ended

    def read(self) -> dict:
        """The process's next message (it has `timeout` seconds to send it)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise TimeoutError(f"{self.setting!r}: no answer in {self.timeout:.0f} s") from None
            if line is None:
                self.stderr.seek(0)
                raise RuntimeError(f"{self.setting!r} failed:\n{self.stderr.read()[-3000:]}")
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])

    def image(self, seed: int) -> float:
        """Seconds the process took to generate one image."""
        self.proc.stdin.write(f"{seed}\n")
        self.proc.stdin.flush()
        return self.read()["seconds"]

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def table(results: dict[tuple[str, str], dict]) -> list[str]:
    """The report: median s/image and ratio to the condition's best, per setting and
    condition; then whether sdviz's default is within WITHIN of the best in both."""
    median = {key: statistics.median(r["seconds"]) for key, r in results.items()}
    best = {c: min(median[s, c] for s in SETTINGS) for c in CONDITIONS}
    ratio = {(s, c): median[s, c] / best[c] for s, c in median}
    lines = [
        f"{'setting':<29} {'threads':>7}" + "".join(f"{c:>8} {'x best':>6}" for c in CONDITIONS)
    ]
    for s in SETTINGS:
        threads = "/".join(sorted({str(results[s, c]["threads"]) for c in CONDITIONS}))
        cells = "".join(f"{median[s, c]:8.2f} {ratio[s, c]:6.2f}" for c in CONDITIONS)
        lines.append(f"{s:<29} {threads:>7}{cells}")
    worst = max(ratio[SDVIZ_DEFAULT, c] for c in CONDITIONS)
    ratios = ", ".join(f"{c} {ratio[SDVIZ_DEFAULT, c]:.2f}x" for c in CONDITIONS)
    verdict = "yes" if worst <= WITHIN else "NO"
    lines += [
        "",
        f"sdviz default within {WITHIN}x of the best in both conditions: {verdict} ({ratios})",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3, help="timed images per setting and condition")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument(
        "--busy-processes",
        type=int,
        default=len(cores()),
        help="spinning processes in the busy condition (default: one per core)",
    )
    p.add_argument(
        "--cell-seconds",
        type=float,
        default=60.0,
        help="time no more images for a setting and condition once its images took this "
        "long (it keeps one at least): torch's default threads took 100 s an image on a "
        "busy 2-core host",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a process may take to start, or for one image",
    )
    p.add_argument("--worker", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images < 1 or args.steps < 1 or args.busy_processes < 1:
        p.error("--images, --steps and --busy-processes must be at least 1")
    if args.worker:
        worker(args.worker, args.steps)
        return 0

    print(
        f"sdviz-mini, {args.steps} steps, guidance {GUIDANCE}, {args.images} timed images per "
        f"cell after one warm-up (median s/image), {len(cores())} cores, busy = "
        f"{args.busy_processes} spinning processes"
    )
    print(f"load average before: {loadavg()}")
    workers: dict[str, Worker] = {}
    seconds = {key: [] for key in itertools.product(SETTINGS, CONDITIONS)}
    with ExitStack() as stack:
        for setting in SETTINGS:  # all load and warm up at once: none is timed yet
            workers[setting] = w = Worker(setting, args.steps, args.timeout)
            stack.callback(w.stop)
        threads = {setting: w.read()["threads"] for setting, w in workers.items()}
        order = list(SETTINGS)
        for r in range(args.images):
            turn = order[r % len(order) :] + order[: r % len(order)]
            for condition in CONDITIONS:
                spinners = args.busy_processes if condition == "busy" else 0
                with busy(spinners, seconds=args.timeout * len(SETTINGS)):
                    for setting in turn:
                        if sum(seconds[setting, condition]) < args.cell_seconds:
                            seconds[setting, condition].append(workers[setting].image(r + 1))
            done = " ".join(
                f"{seconds[s, c][-1]:.2f}" if len(seconds[s, c]) > r else "-"
                for c in CONDITIONS
                for s in SETTINGS
            )
            print(f"  image {r + 1}: s/image quiet then busy, in table order: {done}", flush=True)
    print(f"load average after: {loadavg()}\n")
    results = {(s, c): {"threads": threads[s], "seconds": t} for (s, c), t in seconds.items()}
    print("\n".join(table(results)))
    short = [f"{s} {c} ({len(t)})" for (s, c), t in seconds.items() if len(t) < args.images]
    if short:
        print(
            f"cut short after --cell-seconds {args.cell_seconds:.0f} (images): {', '.join(short)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
