"""Debian's Chromium, driven by Python Playwright — no browser download.

Playwright's own browser download cannot work here (and is not needed): it launches the
system Chromium through ``executable_path``. When Chromium or Playwright is missing the
test must fail with instructions, never pass or skip silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Flags measured to work as root in a container without a GPU (see shared FACTS).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

INSTALL_HINT = (
    "The browser test drives Debian's Chromium with Playwright and needs it installed:\n"
    "    sudo apt-get install chromium      (Debian/Ubuntu; .ci/run does this in CI)\n"
    "or point SDVIZ_CHROMIUM at another Chromium/Chrome executable. Playwright itself comes\n"
    'with `pip install -e ".[test]"`; no `playwright install` download is needed.'
)


class ChromiumMissing(RuntimeError):
    """Chromium (or Playwright) is not installed; the message says how to install it."""


def find_chromium(path: str | None = None) -> str:
    """Return the Chromium executable to use, or raise `ChromiumMissing` with install help."""
    wanted = path or os.environ.get("SDVIZ_CHROMIUM") or DEFAULT_CHROMIUM
    resolved = wanted if os.sep in wanted else shutil.which(wanted)
    if not resolved or not Path(resolved).is_file() or not os.access(resolved, os.X_OK):
        raise ChromiumMissing(f"Chromium not found at {wanted!r}.\n{INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        raise ChromiumMissing(
            f"Python Playwright is not installed ({err}).\n{INSTALL_HINT}"
        ) from err
    return resolved


def launch(playwright, executable: str):
    """Launch headless Chromium from `executable` with the container-safe flags."""
    return playwright.chromium.launch(
        executable_path=executable, headless=True, args=CHROMIUM_FLAGS, timeout=60_000
    )
