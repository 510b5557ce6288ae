"""End to end in a real browser: a lesson opens in JupyterLab and its widgets work.

Starts JupyterLab on loopback (free port, no token, private settings, a temporary root
with a copy of the lessons), drives Debian's Chromium with Playwright, opens the lesson by
double-clicking it in the file browser, runs all cells in smoke mode, moves the denoising
explorer's timestep slider and types into the prompt explorer, checking each state and
saving a screenshot of it under ``test-artifacts/browser/`` (or ``$SDVIZ_TEST_ARTIFACTS``).
Nothing it starts outlives it. Missing Chromium fails the test with install instructions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from browser.chromium import ChromiumMissing, find_chromium, launch
from browser.lab import LabServer
from browser.processes import ProcessWatch

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SDVIZ_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
RUN_ALL_TIMEOUT = float(os.environ.get("SDVIZ_BROWSER_RUN_TIMEOUT", "240"))

DENOISE_IMAGE = "img.sdviz-denoise-image, .sdviz-denoise-image img"
DENOISE_HANDLE = ".sdviz-denoise-slider .noUi-handle"
DENOISE_PICTURES = ".sdviz-denoise img.widget-image"  # all carry sdviz-state-<step>
DENOISE_CAPTION = ".sdviz-denoise-state"
PROMPT_INPUT = ".sdviz-prompt-text input"
PROMPT_TOKENS = ".sdviz-prompt-tokens"
PROMPT_GENERATE = ".sdviz-prompt-generate"
PROMPT_IMAGE = "img.sdviz-prompt-image"
TYPED_PROMPT = "a blue square"

WIDGETS_NOTEBOOK = textwrap.dedent(
    """\
    # ---
    # jupyter:
    #   kernelspec:
    #     display_name: Python 3
    #     language: python
    #     name: python3
    # ---

    # %% [markdown]
    # # sdviz widgets in the browser (notebook of the browser test)

    # %%
    import sdviz
    from sdviz.widgets import DenoisingExplorer, PromptExplorer

    pipe = sdviz.load()
    run = sdviz.generate(pipe, "a red circle to the left of a blue square", steps=6, seed=0)
    DenoisingExplorer(run, pipe)

    # %%
    PromptExplorer(pipe, steps=6)
    """
)


def test_missing_chromium_fails_with_install_instructions(tmp_path):
    with pytest.raises(ChromiumMissing, match="apt-get install chromium"):
        find_chromium(str(tmp_path / "no-such-chromium"))


def test_process_watch_kills_and_reports_leftovers():
    with pytest.raises(AssertionError, match="left processes running"):
        with ProcessWatch() as watch:
            sleeper = subprocess.Popen(["sleep", "60"])
            watch.snapshot()
    assert sleeper.wait(timeout=5) is not None  # killed by the watch, now reaped


def test_server_and_kernel_are_stopped_when_the_test_fails(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with ProcessWatch() as watch:
        with pytest.raises(RuntimeError, match="simulated failure"):
            with LabServer(root, tmp_path / "jupyter") as lab:
                kernel = lab.api("POST", "/api/kernels", {"name": "python3"})
                assert kernel["id"] in [k["id"] for k in lab.api("GET", "/api/kernels")]
                procs = watch.snapshot()
                assert any("ipykernel" in " ".join(p.cmdline()) for p in procs), procs
                raise RuntimeError("simulated failure")
        assert lab.proc.poll() is not None, "the server is still running"
    assert not watch.leftovers()


def _prepare_root(root: Path) -> str:
    """Fill the server root; return the path (relative to it) of the notebook to open."""
    notebook = root / "scratch" / "widgets_smoke.py"
    notebook.parent.mkdir(parents=True)
    notebook.write_text(WIDGETS_NOTEBOOK)
    return "scratch/widgets_smoke.py"


@pytest.mark.timeout(420)
def test_lesson_widgets_work_in_jupyterlab(tmp_path):
    try:
        chromium = find_chromium()
    except ChromiumMissing as err:
        pytest.fail(str(err), pytrace=False)
    from browser.jlab import Session
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    root = tmp_path / "root"
    root.mkdir()
    notebook = _prepare_root(root)

    with ProcessWatch() as watch:
        with (
            LabServer(root, tmp_path / "jupyter", env={"SDVIZ_SMOKE": "1"}) as lab,
            sync_playwright() as pw,
        ):
            browser = launch(pw, chromium)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                ui = Session(page, ARTIFACTS, lab.log_tail)
                _drive(ui, lab.url, notebook)
                watch.snapshot()  # the kernel and Chromium's helpers are up by now
            finally:
                browser.close()
    print("steps:", *(f"{t:5.1f} s  {what}" for what, t in ui.timings), sep="\n  ")
    print("screenshots:", *ui.shots, sep="\n  ")


def _drive(ui, url: str, notebook: str) -> None:
    page = ui.page
    with ui.step("open JupyterLab"):
        ui.open_lab(url)

    with ui.step(f"double-click {notebook} and see a notebook"):
        ui.open_by_double_click(notebook)
        state = ui.wait_for(f"{notebook} to open", lambda: ui.notebook_state(notebook), 30)
        assert state["isNotebook"], f"{notebook} opened as {state['widgetClass']}, not a notebook"
        assert page.locator(".jp-NotebookPanel .jp-Cell").count() > 0
        assert page.locator(".jp-FileEditor:visible").count() == 0, "a text editor opened"
        ui.wait_kernel_idle(notebook)
        ui.watch_kernel_errors(notebook)
        ui.screenshot("opened-as-notebook")

    with ui.step("run all cells"):
        ui.run_all(notebook, RUN_ALL_TIMEOUT)
        assert not (errors := ui.errors(notebook)), "cells show errors:\n" + "\n".join(errors)

    image = page.locator(DENOISE_IMAGE).first
    handle = page.locator(DENOISE_HANDLE).first
    with ui.step("see the denoising explorer render"):
        image.scroll_into_view_if_needed()
        image.wait_for(state="visible")
        ui.wait_for("the denoising image to load", lambda: _loaded(image), 30)
        step = int(float(handle.get_attribute("aria-valuenow")))
        assert _state(image) == str(step), f"image shows {_state(image)}, slider at {step}"
        ui.screenshot("denoise-explorer")

    with ui.step("move the timestep slider and see the image change"):
        handle.scroll_into_view_if_needed()
        at_end = step >= int(float(handle.get_attribute("aria-valuemax")))
        target = step - 1 if at_end else step + 1
        before_src = image.get_attribute("src")
        caption = page.locator(DENOISE_CAPTION).first
        before_caption = caption.inner_text() if caption.count() else None
        handle.focus()
        page.keyboard.press("ArrowLeft" if at_end else "ArrowRight")
        ui.wait_for(
            f"the slider to reach {target}",
            lambda: int(float(handle.get_attribute("aria-valuenow"))) == target,
            10,
        )
        pictures = page.locator(DENOISE_PICTURES)

        def redrawn():
            states = {_state(pictures.nth(i)) for i in range(pictures.count())}
            src = image.get_attribute("src")
            return states == {str(target)} and src != before_src and _loaded(image)

        ui.wait_for(f"every picture of the explorer to show step {target}", redrawn, 30)
        if before_caption is not None:
            assert caption.inner_text() != before_caption, "the step caption did not change"
        ui.screenshot("denoise-slider-moved")

    tokens = page.locator(PROMPT_TOKENS).first
    with ui.step("see the prompt explorer render"):
        tokens.scroll_into_view_if_needed()
        tokens.wait_for(state="visible")
        before_tokens = tokens.inner_text()
        ui.screenshot("prompt-explorer")

    with ui.step(f"type {TYPED_PROMPT!r} and see the token list update"):
        box = page.locator(PROMPT_INPUT).first
        box.fill(TYPED_PROMPT)
        box.press("Enter")

        def updated():
            text = tokens.inner_text()
            words = TYPED_PROMPT.split()
            return text != before_tokens and all(w in text.lower() for w in words)

        ui.wait_for("the token list to show the typed words", updated, 30)
        ui.wait_kernel_idle(notebook)
        ui.screenshot("prompt-typed")

    with ui.step("press Generate and see the generated image"):
        picture = page.locator(PROMPT_IMAGE).first
        done = int(_state(picture) or 0)  # sdviz-state-<n> after the n-th generation
        page.locator(PROMPT_GENERATE).first.click()
        ui.wait_for(
            f"generation {done + 1} to be shown",
            lambda: _state(picture) == str(done + 1) and _loaded(picture),
            60,
        )
        ui.wait_kernel_idle(notebook)
        picture.scroll_into_view_if_needed()
        ui.screenshot("prompt-generated")

    with ui.step("no cell shows an error after the interactions"):
        assert not (errors := ui.errors(notebook)), "errors:\n" + "\n".join(errors)


def _loaded(image) -> bool:
    return image.evaluate("img => img.complete && img.naturalWidth > 0")


def _state(element) -> str | None:
    """The state an sdviz picture says it shows: its `sdviz-state-<state>` class."""
    for cls in (element.get_attribute("class") or "").split():
        if cls.startswith("sdviz-state-"):
            return cls.removeprefix("sdviz-state-")
    return None
