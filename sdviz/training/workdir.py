"""The work folder that the stages of `sdviz train` share.

A stage writes its result and its clock into `record.json`, guarded by a lock because
stages in parallel lanes (`sdviz.training.lanes`) rewrite the same file; appends its log
lines to `train.log`; and takes up the threads the lanes grant it through a small file in
`lanes/`, written whole and then renamed so that it is never read half-written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


class log_to:  # noqa: N801 (used as a function)
    """A log function that prints a timed line and appends it to `work`/train.log.

    A class rather than a closure so that it can be handed to the processes of a
    data-parallel stage (`sdviz.training.parallel`), which pickle what they are given.
    """

    def __init__(self, work: Path) -> None:
        self.work = Path(work)

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.work / "train.log", "a") as f:
            f.write(line + "\n")


def threads_file(work: Path, stage: str) -> Path:
    """Where the lanes tell a stage's process how many threads it may use now."""
    return work / "lanes" / f"{stage}.threads"


def following_threads(work: Path, stage: str, log: Callable[[str], None]) -> Callable[[str], None]:
    """`log`, which also takes up the thread count that the lanes granted this stage.

    Every trainer logs every few dozen steps, so a grant (`lanes.run_lanes`) takes
    effect within a minute, without touching the training loops.
    """
    import torch

    path = threads_file(work, stage)

    def follow(msg: str) -> None:
        log(msg)
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            n = int(text)
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
                log(f"{stage}: now on {n} threads")

    return follow


@contextmanager
def locked(path: Path, wait: float = 30.0):
    """Hold `path`.lock (created exclusively) while the block runs: the stages of parallel
    lanes read and rewrite the same record."""
    lock = path.with_name(path.name + ".lock")
    t0 = time.time()
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            if time.time() - t0 > wait:
                raise TimeoutError(
                    f"{lock} has been held for {wait:.0f} s. If no `sdviz train` is running "
                    "on this work folder, a stopped run left it behind: delete it."
                ) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        os.close(fd)
        os.unlink(lock)


def update_json(path: Path, **items) -> None:
    """Add `items` to the JSON object in `path` (created if missing), under its lock."""
    with locked(path):
        rec = json.loads(path.read_text()) if path.exists() else {}
        rec.update(items)
        path.write_text(json.dumps(rec, indent=1))


def record(work: Path, key: str, value: object) -> None:
    """Set one item of the work folder's `record.json`."""
    update_json(work / "record.json", **{key: value})


def grant_threads(work: Path, stage: str, threads: int) -> None:
    """Tell `stage`'s process it may use `threads` threads from its next log line on."""
    tmp = work / "lanes" / f"{stage}.tmp"  # written whole, then renamed: never half-read
    tmp.write_text(str(threads))
    os.replace(tmp, threads_file(work, stage))


def previous_seconds(work: Path, stage: str) -> float:
    """Seconds `stage` already spent in `work` before this run of it.

    Only the UNet stage resumes part-way. Its finished time is in `record.json`; a run
    that was stopped before it finished (killed, out of time) left its clock in the
    resumable state (`unet_state.pt`, saved with every snapshot).
    """
    path = work / "record.json"
    if stage != "unet":  # the resumable stage
        return 0.0
    if path.exists() and "unet_seconds" in (rec := json.loads(path.read_text())):
        return rec["unet_seconds"]
    state = work / "unet_state.pt"
    if not state.exists():
        return 0.0
    import torch

    return float(torch.load(state, weights_only=False, map_location="cpu").get("seconds", 0.0))
