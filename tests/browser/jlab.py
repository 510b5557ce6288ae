"""Reading and driving JupyterLab's page for the browser test.

Everything waits on an observable state (a DOM element, the notebook model, the kernel
status) rather than sleeping. The notebook model is read through ``window.jupyterapp``
(the server runs with ``expose_app_in_browser``): cells scrolled out of view may not be
in the DOM, but they are always in the model.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

# One JS function, given the notebook path, returns its state (or null while not open).
_NOTEBOOK_STATE_JS = """
(path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  let panel = null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path) panel = w;
  }
  if (!panel) return null;
  const model = panel.content && panel.content.model;
  const isNotebook = !!(model && model.cells);
  const cells = [];
  if (isNotebook) {
    for (let i = 0; i < model.cells.length; i++) {
      const c = model.cells.get(i);
      const item = {type: c.type, empty: c.sharedModel.getSource().trim() === '',
                    count: null, errors: []};
      if (c.type === 'code') {
        item.count = c.executionCount;
        for (let j = 0; j < c.outputs.length; j++) {
          const o = c.outputs.get(j).toJSON();
          if (o.output_type === 'error') item.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
        }
      }
      cells.push(item);
    }
  }
  const sc = panel.sessionContext;
  const kernel = sc && sc.session ? sc.session.kernel : null;
  return {
    isNotebook, cells,
    widgetClass: panel.node.className,
    kernel: kernel ? kernel.status : null,
    kernelName: kernel ? kernel.name : null,
    kernelReady: !!(sc && sc.isReady),
  };
}
"""


class Failure(AssertionError):
    """A step of the browser test failed; the message has a screenshot and the server log."""


class Session:
    """One browser page on one JupyterLab server, with screenshots and failure reports."""

    def __init__(self, page: Page, artifacts: Path, log_tail: Callable[[], str]) -> None:
        self.page = page
        self.artifacts = artifacts
        self.log_tail = log_tail
        self.shots: list[Path] = []
        self.timings: list[tuple[str, float]] = []

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)
        return path

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Run a step; on failure re-raise as `Failure` naming it, with evidence attached."""
        start = time.monotonic()
        try:
            yield
            self.timings.append((what, time.monotonic() - start))
        except Failure:
            raise
        except (AssertionError, PlaywrightError, TimeoutError) as err:
            shot = "(screenshot failed)"
            with contextlib.suppress(Exception):
                shot = str(self.screenshot("FAILED-" + re.sub(r"\W+", "-", what)[:40]))
            raise Failure(
                f"browser step failed: {what}\n{err}\nscreenshot: {shot}\n{self.log_tail()}"
            ) from err

    # --- waiting -----------------------------------------------------------------------
    def wait_for(self, what: str, check: Callable[[], object], timeout: float) -> object:
        """Poll `check` until it returns a truthy value; fail with `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            self.page.wait_for_timeout(100)  # yields to the page's event loop
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    # --- file browser ------------------------------------------------------------------
    def open_lab(self, url: str) -> None:
        self.page.goto(f"{url}/lab", wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.started", timeout=60_000
        )
        self.page.locator(".jp-DirListing-content").wait_for(timeout=30_000)

    def listing_item(self, name: str):
        text = self.page.locator(
            ".jp-DirListing-itemText", has_text=re.compile(rf"^{re.escape(name)}$")
        )
        return self.page.locator("li.jp-DirListing-item", has=text)

    def double_click(self, name: str, timeout: float = 30.0) -> None:
        item = self.listing_item(name)
        item.wait_for(timeout=timeout * 1000)
        item.dblclick()

    def open_by_double_click(self, path: str) -> None:
        """Double-click through the folders of `path` (relative to the root), then the file."""
        for part in path.split("/"):
            self.double_click(part)

    # --- notebook ------------------------------------------------------------------------
    def notebook_state(self, path: str) -> dict | None:
        return self.page.evaluate(_NOTEBOOK_STATE_JS, path)

    def dialog_text(self) -> str | None:
        dialog = self.page.locator(".jp-Dialog")
        return dialog.first.inner_text() if dialog.count() else None

    def wait_kernel_idle(self, path: str, timeout: float = 60.0) -> dict:
        def ready():
            if (text := self.dialog_text()) is not None:
                raise AssertionError(f"a dialog blocks the notebook: {text!r}")
            state = self.notebook_state(path)
            return state if state and state["kernelReady"] and state["kernel"] == "idle" else None

        return self.wait_for(f"the kernel of {path} to be idle", ready, timeout)

    def run_all(self, path: str, timeout: float) -> dict:
        """Run all cells; wait until every code cell ran (or one failed) and the kernel is idle."""
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

        def finished():
            state = self.notebook_state(path)
            if not state:
                return None
            if any(c["errors"] for c in state["cells"]):
                return state  # stop waiting: the failure is reported by the caller
            code = [c for c in state["cells"] if c["type"] == "code" and not c["empty"]]
            done = all(c["count"] is not None for c in code)
            return state if done and state["kernel"] == "idle" else None

        return self.wait_for(f"all cells of {path} to run", finished, timeout)

    def errors(self, path: str) -> list[str]:
        """Error outputs in the notebook model and widget render errors on the page."""
        state = self.notebook_state(path) or {"cells": []}
        found = [e for c in state["cells"] for e in c["errors"]]
        for text in self.page.locator(".jupyter-widgets-error-widget").all_inner_texts():
            found.append(f"widget error: {text.strip()[:300]}")
        return found
