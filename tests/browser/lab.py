"""A throwaway JupyterLab server for the browser test, isolated from the user's setup.

It is started the way a learner starts it, ``python -m sdviz.lab`` (which puts sdviz's
shipped JupyterLab settings on ``JUPYTER_CONFIG_PATH``, so a double-clicked ``.py``
lesson opens as a Jupytext notebook), on 127.0.0.1 at a free port, without a token (test
only), serving a temporary root. It gets its own config/data/runtime/IPython/matplotlib/
settings/workspace directories, so neither the user's Jupyter settings nor tabs left open
by earlier runs leak in. A private ``app_settings_dir`` only silences the news prompt.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Test-only JupyterLab settings: no news prompt or update check popping over the page.
# (How .py files open is NOT set here: that must come from sdviz's shipped settings.)
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}


def _die_with_parent() -> None:
    """In the server's process: get SIGTERM when the test process dies, however it dies
    (Linux PR_SET_PDEATHSIG); the server then shuts its kernels down."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """Start ``jupyter lab`` serving `root`; a context manager that always stops it.

    `home` receives the private Jupyter directories and the server log; `env` adds
    variables for the server and its kernels (e.g. ``SDVIZ_SMOKE=1``).
    """

    def __init__(self, root: Path, home: Path, env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.home = Path(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "jupyterlab.log"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "user-settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython",
            "MPLCONFIGDIR": "matplotlib",
        }
        env = dict(os.environ)
        for name, sub in dirs.items():
            path = self.home / sub
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        env["HF_HUB_OFFLINE"] = "1"
        # The kernel must be this interpreter's (the one with sdviz installed).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> None:
        app_settings = self.home / "app-settings"
        app_settings.mkdir(parents=True, exist_ok=True)
        (app_settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=2))
        cmd = [
            sys.executable,
            "-m",
            "sdviz.lab",  # the learners' command: `jupyter lab` with sdviz's settings
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.app_settings_dir={app_settings}",
            f"--LabApp.user_settings_dir={self.home / 'user-settings'}",
            f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
            "--LanguageServerManager.autodetect=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        cmd.append(str(self.root))  # the folder to serve, as in `python -m sdviz.lab lessons`
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole in stop()
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with code {self.proc.returncode} while starting.\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s.\n" + self.log_tail())

    def api(self, method: str, path: str, body: dict | None = None) -> dict | list | None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no JupyterLab log)"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to shut down (it stops its kernels), then kill its process group."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.api("POST", "/api/shutdown")
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.proc.poll() is not None:
                    break
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._log.close()

    def __enter__(self) -> LabServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
