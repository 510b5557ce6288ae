"""Process bookkeeping for the browser test: nothing it starts may outlive it.

`ProcessWatch` remembers every descendant of the test process seen while it is open
(JupyterLab, its kernels, Playwright's driver, Chromium and its helpers). On exit it
terminates, then kills, whatever of them is still alive, and when the block ended
without an exception it asserts that none is left. Kernels run in their own session
(jupyter_client starts them with ``start_new_session``), so a process-group kill of the
server alone would miss them: the watch follows the process tree instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"{proc.pid} (gone)"


class ProcessWatch:
    """Track descendants of this process and make sure they are gone at the end."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace  # seconds orderly shutdowns get before leftovers are judged
        self._me = psutil.Process(os.getpid())
        self._before = {p.pid for p in self._me.children(recursive=True)}
        self.seen: dict[int, psutil.Process] = {}

    def snapshot(self) -> list[psutil.Process]:
        """Record the current new descendants (call after starting things)."""
        for proc in self._me.children(recursive=True):
            if proc.pid not in self._before and proc.pid not in self.seen:
                self.seen[proc.pid] = proc
        return list(self.seen.values())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the live descendants, including what each has
        reaped of its own children; call before anything is stopped."""
        total = 0.0
        for proc in self.snapshot():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def leftovers(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _alive(p)]

    def kill_all(self, grace: float = 5.0) -> None:
        """SIGTERM every remembered process still alive, then SIGKILL after `grace` s."""
        self.snapshot()
        alive = self.leftovers()
        for proc in alive:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)

    def __enter__(self) -> ProcessWatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.snapshot()
        # Give orderly shutdowns (server, browser) a moment before judging.
        deadline = time.monotonic() + self.grace
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [_describe(p) for p in self.leftovers()]
        self.kill_all()
        if exc_type is None and left:
            raise AssertionError(
                "the browser test left processes running (killed now):\n  " + "\n  ".join(left)
            )
