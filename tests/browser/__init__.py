"""Helpers for the end-to-end browser test (tests/test_browser.py).

- `processes`: watch every process the test starts and kill what is left, also on failure.
- `lab`: a throwaway JupyterLab server on loopback, isolated from the user's settings.
- `chromium`: Debian's Chromium driven by Playwright (no browser download).
- `jlab`: reading and driving JupyterLab's page (file browser, notebook state, widgets).
"""
