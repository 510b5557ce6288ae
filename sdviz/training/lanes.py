"""Run the recipe's stages in parallel processes ("lanes"), each as soon as what it needs is done.

The three models of Stable Diffusion are trained separately (Rombach et al. 2022): the
VAE needs only images, CLIP only image-caption pairs, and the UNet needs both of them
(the VAE's latents and CLIP's text tower). So on a CPU the VAE and its decoder
fine-tune can train in one process while CLIP and its image tower train in another:
on the 2-core machines sdviz-mini was trained on, two 1-thread processes did more
work together than one 2-thread process. The UNet, the longest stage, waits for all of
them and then has every core to itself, in data-parallel processes of its own
(`sdviz.training.parallel`). The critical path is data -> vae -> encode -> decoder ->
unet -> assemble.

`NEEDS` says which stages each stage waits for; `ready` picks what may start; `schedule`
says when each would run, given how long each takes; `run_lanes` starts each stage as
`python -m sdviz.training.recipe --stage NAME --resume ...` and stops the other lanes
(their finished stages are kept) when one fails.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

NEEDS: dict[str, tuple[str, ...]] = {
    "data": (),
    "vae": ("data",),
    "clip": ("data",),
    "encode": ("vae",),
    # alone, so that it has every core for its data-parallel processes
    "unet": ("clip", "encode", "decoder", "clip_image"),
    "decoder": ("vae",),
    "clip_image": ("clip",),
    "assemble": ("unet", "decoder", "clip_image"),
}


class StageFailed(ChildProcessError):
    """A stage's process exited with an error (its own messages say why)."""


def upstream(stage: str, needs: dict[str, tuple[str, ...]] = NEEDS) -> set[str]:
    """Every stage that `stage` waits for, directly or through another stage."""
    seen: set[str] = set()
    todo = list(needs[stage])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(needs[s])
    return seen


def runs_alone(stage: str, needs: dict[str, tuple[str, ...]] = NEEDS) -> bool:
    """True when no other stage can run beside `stage` (every other one waits for it, or
    it waits for every other one): it may then have all the threads."""
    others = set(needs) - {stage}
    return all(stage in upstream(o, needs) or o in upstream(stage, needs) for o in others)


def ready(
    pending: Sequence[str], done: set[str], needs: dict[str, tuple[str, ...]] = NEEDS
) -> list[str]:
    """The pending stages whose needs are all done, in `pending`'s order (its priority)."""
    return [s for s in pending if all(n in done for n in needs[s])]


def schedule(
    seconds: dict[str, float],
    stages: Sequence[str],
    lanes: int,
    needs: dict[str, tuple[str, ...]] = NEEDS,
) -> dict[str, tuple[float, float]]:
    """(start, end) of each stage if it took `seconds[stage]`, by `run_lanes`' rule: the
    wall clock of a whole run from the time of each stage."""
    missing = [s for s in stages if s not in seconds]
    if missing:
        raise ValueError(f"no time given for stages {missing}.")
    pending, done, now = list(stages), {s for s in needs if s not in stages}, 0.0
    running: dict[str, float] = {}  # stage -> end
    times: dict[str, tuple[float, float]] = {}
    while pending or running:
        for stage in ready(pending, done, needs):
            if len(running) >= lanes:
                break
            running[stage] = now + seconds[stage]
            times[stage] = (now, running[stage])
            pending.remove(stage)
        if not running:
            raise ValueError(f"stages {pending} wait for stages that will never run.")
        now = min(running.values())
        for stage in [s for s, end in running.items() if end == now]:
            del running[stage]
            done.add(stage)
    return times


def run_lanes(
    stages: Sequence[str],
    command: Callable[[str, int], list[str]],
    lanes: int,
    threads: int,
    log: Callable[[str], None] = print,
    needs: dict[str, tuple[str, ...]] = NEEDS,
    poll: float = 0.5,
    grant: Callable[[str, int], None] | None = None,
) -> None:
    """Run `stages` (in priority order) with at most `lanes` at once.

    `command(stage, threads)` gives the command line of one stage's process. A stage
    that `runs_alone` gets all `threads`, the others `threads // lanes` (at least 1).
    When one stage is left running and nothing can start beside it (the UNet, once the
    other lane is through), `grant(stage, threads)` is called once: the stage's process
    may then use all the threads. Raises StageFailed when a stage's process fails; the
    others are stopped first.
    """
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}.")
    unknown = [s for s in stages if s not in needs]
    if unknown:
        raise ValueError(f"unknown stages {unknown}: the stages are {list(needs)}.")
    pending, done = list(stages), {s for s in needs if s not in stages}
    running: dict[str, subprocess.Popen] = {}
    has: dict[str, int] = {}  # threads of each running stage
    per_lane = max(1, threads // lanes)
    try:
        while pending or running:
            _collect_finished(running, done, log)
            for stage in ready(pending, done, needs):
                if len(running) >= lanes:
                    break
                n = threads if runs_alone(stage, needs) else per_lane
                log(f"lanes: {stage} started with {n} thread{'s' * (n > 1)}")
                running[stage] = subprocess.Popen(command(stage, n))
                has[stage] = n
                pending.remove(stage)
            if grant and len(running) == 1 and not ready(pending, done, needs):
                (stage,) = running
                if has[stage] < threads:  # alone until it ends: give it every thread
                    grant(stage, threads)
                    has[stage] = threads
                    log(f"lanes: {stage} may now use {threads} threads")
            if pending and not running and not ready(pending, done, needs):
                raise RuntimeError(f"stages {pending} wait for stages that will never run.")
            time.sleep(poll)
    finally:
        for proc in running.values():  # an error or Ctrl-C: stop the other lanes
            proc.terminate()
        for proc in running.values():
            proc.wait()


def _collect_finished(
    running: dict[str, subprocess.Popen], done: set[str], log: Callable[[str], None]
) -> None:
    """Move the stages whose processes have ended from `running` to `done`.

    Raises StageFailed for one that failed (it is no longer in `running`).
    """
    for stage, proc in list(running.items()):
        code = proc.poll()
        if code is None:
            continue
        del running[stage]
        if code != 0:
            raise StageFailed(
                f"stage {stage!r} failed (exit code {code}); its messages are above "
                "and in the work folder's train.log. Stages that finished are kept: "
                "run again with --resume to go on from there."
            )
        done.add(stage)
        log(f"lanes: {stage} finished")
