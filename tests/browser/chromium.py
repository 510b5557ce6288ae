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


def launch(playwright, executable: str, env: dict[str, str] | None = None):
    """Launch headless Chromium from `executable` with the container-safe flags; `env`
    (default: this process's environment) is the browser's whole environment."""
    return playwright.chromium.launch(
        executable_path=executable, headless=True, args=CHROMIUM_FLAGS, timeout=60_000, env=env
    )


FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <dir>{fonts}</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""


def cjk_fonts_env(folder: Path) -> dict[str, str]:
    """This process's environment for a Chromium that draws Chinese: FONTCONFIG_FILE set to
    a fonts.conf written into `folder` that includes the system's fonts.conf and adds the
    folder of the CJK font sdviz's figures use (`sdviz.language.cjk_font_path`: the pip
    package's Noto Sans SC), its cache in `folder`. A machine without a CJK font (CI's,
    this one: `fc-list :lang=zh` is empty) draws the lessons' Chinese as boxes otherwise."""
    from xml.sax.saxutils import escape

    from sdviz.language import cjk_font_path

    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "fonts.conf"
    fonts, cache = escape(str(cjk_font_path().parent)), escape(str(folder / "cache"))
    conf.write_text(FONTS_CONF.format(fonts=fonts, cache=cache), encoding="utf-8")
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}
