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
                    count: null, errors: [], stderr: []};
      if (c.type === 'code') {
        item.count = c.executionCount;
        for (let j = 0; j < c.outputs.length; j++) {
          // only small outputs are copied: images would make each poll slow
          const out = c.outputs.get(j);
          if (out.type !== 'error' && out.type !== 'stream') continue;
          const o = out.toJSON();
          if (o.output_type === 'error') item.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
          if (o.output_type === 'stream' && o.name === 'stderr') {
            const text = Array.isArray(o.text) ? o.text.join('') : o.text;
            item.stderr.push(`cell ${i}: ${text.trim().slice(0, 200)}`);
          }
        }
      }
      cells.push(item);
    }
  }
  const sc = panel.sessionContext;
  const kernel = sc && sc.session ? sc.session.kernel : null;
  return {
    isNotebook, cells, id: panel.id,
    widgetClass: panel.node.className,
    kernel: kernel ? kernel.status : null,
    kernelName: kernel ? kernel.name : null,
    kernelReady: !!(sc && sc.isReady),
  };
}
"""


# Records every error message the notebook's kernel sends, including those raised in
# widget callbacks (JupyterLab shows those in the log console, in no cell), and its death.
_WATCH_KERNEL_ERRORS_JS = """
(path) => {
  window.__sdvizKernelErrors = window.__sdvizKernelErrors || [];
  window.__sdvizCallbackOutput = window.__sdvizCallbackOutput || [];
  for (const w of window.jupyterapp.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.sessionContext) {
      w.sessionContext.statusChanged.connect((_, status) => {
        if (['dead', 'autorestarting'].includes(status)) {
          window.__sdvizKernelErrors.push({path, text: `the kernel died (status ${status})`});
        }
      });
      w.sessionContext.iopubMessage.connect((_, msg) => {
        const c = msg.content;
        if (msg.header.msg_type === 'error') {
          window.__sdvizKernelErrors.push({path, text: `${c.ename}: ${c.evalue}`});
        }
        // output of widget callbacks: only the log console shows it, no cell does
        const type = msg.header.msg_type;
        if ((type === 'stream' || type === 'display_data')
            && msg.parent_header && msg.parent_header.msg_type === 'comm_msg') {
          const text = type === 'stream' ? c.text : (c.data['text/plain'] || type);
          window.__sdvizCallbackOutput.push(`${path}: ${String(text).trim().slice(0, 200)}`);
        }
      });
      return true;
    }
  }
  return false;
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
            kernel = ""
            with contextlib.suppress(Exception):
                if found := self.kernel_errors():
                    kernel = "errors from the kernel:\n  " + "\n  ".join(found) + "\n"
            raise Failure(
                f"browser step failed: {what}\n{err}\n{kernel}screenshot: {shot}\n"
                + self.log_tail()
            ) from err

    # --- waiting -----------------------------------------------------------------------
    def wait_for(
        self, what: str, check: Callable[[], object], timeout: float, fail_fast: bool = True
    ) -> object:
        """Poll `check` until it returns a truthy value; fail with `what` after `timeout` s,
        or (`fail_fast`) at once when the kernel reports an error (a widget callback raised)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if fail_fast and (found := self.kernel_errors()):
                raise AssertionError(f"while waiting for {what}: " + "; ".join(found))
            last = check()
            if last:
                return last
            self.page.wait_for_timeout(200)  # yields to the page's event loop
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    # --- file browser ------------------------------------------------------------------
    def open_lab(self, url: str) -> None:
        self.page.goto(f"{url}/lab", wait_until="domcontentloaded")
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.started", timeout=120_000
        )
        self.page.locator(".jp-DirListing-content").wait_for()

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
        *folders, name = path.split("/")
        for folder in folders:
            self.double_click(folder)
            # inside it the folder's own entry is gone: only then is the listing the
            # folder's (a file of the same name in the parent must not take the click)
            self.listing_item(folder).wait_for(state="detached", timeout=30_000)
        self.double_click(name)

    # --- notebook ------------------------------------------------------------------------
    def notebook_state(self, path: str) -> dict | None:
        return self.page.evaluate(_NOTEBOOK_STATE_JS, path)

    def watch_kernel_errors(self, path: str) -> None:
        """From now on, collect the kernel's error messages (see `errors`)."""
        assert self.page.evaluate(_WATCH_KERNEL_ERRORS_JS, path), f"{path} is not open"

    def kernel_errors(self, path: str | None = None) -> list[str]:
        """Errors the watched kernels sent (all notebooks, or only `path`'s)."""
        found = self.page.evaluate("() => window.__sdvizKernelErrors || []")
        return [
            f"kernel error in {e['path']}: {e['text']}"
            for e in found
            if path is None or e["path"] == path
        ]

    def callback_output(self) -> list[str]:
        """What widget callbacks printed or displayed outside any Output widget: JupyterLab
        puts it in the log console only (errors are in `kernel_errors`)."""
        return self.page.evaluate("() => window.__sdvizCallbackOutput || []")

    def panel(self, path: str):
        """A locator scoped to the notebook panel of `path` (other tabs stay out)."""
        state = self.notebook_state(path)
        assert state, f"{path} is not open"
        return self.page.locator(f"[id='{state['id']}']")

    def scroll_to_first_cell(self, path: str) -> None:
        """Make the first cell of `path` the active one and scroll it into view (after a
        run the notebook shows its end, and cells out of view are not drawn)."""
        self.page.evaluate(
            """async (path) => {
              for (const w of window.jupyterapp.shell.widgets('main')) {
                if (!(w.context && w.context.path === path)) continue;
                const nb = w.content;
                nb.activeCellIndex = 0;
                if (nb.scrollToItem) await nb.scrollToItem(0, 'start');
                else nb.scrollToCell(nb.widgets[0]);
              }
            }""",
            path,
        )

    def platform_fonts(self, selector: str) -> list[dict]:
        """The fonts Chromium really drew the text of the first `selector` element with
        (DevTools' CSS.getPlatformFontsForNode: familyName, glyphCount per font): which
        font a CJK character came from, which no DOM property says."""
        cdp = self.page.context.new_cdp_session(self.page)
        try:
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]["nodeId"]
            node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})
            assert node.get("nodeId"), f"no element matches {selector!r}"
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
            return fonts["fonts"]
        finally:
            cdp.detach()

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

    def activate(self, path: str) -> None:
        """Bring the tab of `path` to the front by clicking it, as a user would."""
        # a tab shows the file's name only (zh/04_denoising.py: "04_denoising.py")
        name = Path(path).name
        label = self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tabLabel", has_text=name)
        label.first.click()
        self.panel(path).wait_for(state="visible")

    def start_run_all(self, path: str) -> None:
        """Run > Run All Cells on `path` (its tab must be the current one); returns at once."""
        current = self.page.evaluate(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.context ? w.context.path : null; }"
        )
        assert current == path, f"the current tab is {current}, not {path}"
        # no `return`: evaluate would wait for the promise, i.e. for the whole run
        self.page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )

    def wait_run_all(self, path: str, timeout: float) -> dict:
        """Wait until every code cell of `path` ran (or one failed) and its kernel is idle."""

        def finished():
            state = self.notebook_state(path)
            if not state:
                return None
            if died := [e for e in self.kernel_errors(path) if "kernel died" in e]:
                raise AssertionError(f"{died[0]} while running {path}")
            if (text := self.dialog_text()) is not None:
                raise AssertionError(f"a dialog opened while running {path}: {text!r}")
            if any(c["errors"] for c in state["cells"]):
                return state  # stop waiting: the failure is reported by the caller
            code = [c for c in state["cells"] if c["type"] == "code" and not c["empty"]]
            done = all(c["count"] is not None for c in code)
            return state if done and state["kernel"] == "idle" else None

        # not fail_fast: a failing cell is reported with its number by `errors`
        return self.wait_for(f"all cells of {path} to run", finished, timeout, fail_fast=False)

    def errors(self, path: str) -> list[str]:
        """Error outputs in cells, errors raised in widget callbacks, widget render errors."""
        state = self.notebook_state(path) or {"cells": []}
        found = [e for c in state["cells"] for e in c["errors"]]
        for err in self.kernel_errors(path):  # skip those already shown by a cell
            if not any(f.endswith(err.split(": ", 1)[1]) for f in found):
                found.append(err)
        for text in self.panel(path).locator(".jupyter-widgets-error-widget").all_inner_texts():
            found.append(f"widget error: {text.strip()[:300]}")
        return found
