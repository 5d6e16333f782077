"""A reader's session in a real browser: JupyterLab on localhost, a chapter opened, run top
to bottom, a slider moved.

* Opening a chapter and saving it changes no byte of it (``tools/nb.py`` writes what
  JupyterLab writes), and the notebook is not marked modified once its kernel is up.
* "Run All Cells" runs every code cell without an error.
* Moving a slider of a widget (``pgbook.widgets.explore``; a chapter's own ``interact``
  until a chapter uses explore) redraws the figure beside it: the PNG in the widget's
  output area changes.

Run with ``make test-browser`` (``pytest -m browser tests/browser``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time

import pytest

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9A][0-9]_*.ipynb"))
PROMPT_DONE = re.compile(r"^\[\d+\]:$")


def _code(path: pathlib.Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def widget_chapter() -> pathlib.Path:
    """The chapter the test runs: ``$PGBOOK_BROWSER_CHAPTER``, else the first that calls
    ``pgbook.widgets.explore``, else the first with an ``interact`` slider."""
    if os.environ.get("PGBOOK_BROWSER_CHAPTER"):
        return ROOT / "chapters" / os.environ["PGBOOK_BROWSER_CHAPTER"]
    for pattern in (r"\bwidgets\.explore\(", r"\binteract\b"):
        for path in CHAPTERS:
            if re.search(pattern, _code(path)):
                return path
    pytest.skip("no chapter has a widget with a slider")


def open_notebook(page, lab, name: str):
    base, token, _ = lab
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: no other tab restored
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook",
                           timeout=90_000)
    wait_idle(page, timeout=90)


def wait_idle(page, timeout: float, quiet: float = 1.5):
    """Until the kernel has been idle for ``quiet`` seconds (cells run one after another,
    with a moment of idleness between them)."""
    deadline, since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        idle = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) "
                            ".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
        running = page.locator(".jp-CodeCell .jp-InputArea-prompt:text-is('[*]:')").count()
        if idle and not running:
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet:
                return
        else:
            since = None
        time.sleep(0.25)
    raise AssertionError(f"the kernel was still busy after {timeout} s")


def save_and_read(page, path: pathlib.Path) -> bytes:
    before = path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(
        position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{path.name} was not saved"
        time.sleep(0.2)
    time.sleep(0.3)
    return path.read_bytes()


def test_a_chapter_runs_in_jupyterlab_and_its_slider_redraws_the_figure(browser, lab):
    chapter = widget_chapter()
    _, _, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        open_notebook(page, lab, chapter.name)

        # opened, its kernel up: not modified, and saving it writes the same bytes
        tab = page.locator(".lm-TabBar-tab.jp-mod-current").first
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), (
            f"JupyterLab marks {chapter.name} modified on opening")
        saved = save_and_read(page, root / chapter.name)
        assert saved == chapter.read_bytes(), (
            f"JupyterLab rewrote {chapter.name} on saving it unchanged: run "
            f"`python tools/nb.py normalize chapters/{chapter.name}` (or re-execute it)")

        # run every cell
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:not(.lm-mod-hidden) .lm-Menu-itemLabel",
                     has_text=re.compile(r"^Run All Cells$")).click()
        time.sleep(1.0)
        wait_idle(page, timeout=240, quiet=3.0)
        prompts = [t.strip() for t in
                   page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]
        n_code = sum(1 for _ in re.finditer(r'"cell_type": "code"', chapter.read_text()))
        assert len(prompts) == n_code
        not_run = [i for i, p in enumerate(prompts) if not PROMPT_DONE.match(p)]
        assert not not_run, (f"{chapter.name}: code cells {not_run} did not run (an error "
                             "stops Run All Cells)")
        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']", has_text="Traceback")
        assert errors.count() == 0, errors.first.inner_text()[:2000]

        # a widget: sliders and an output area with a figure
        box = page.locator(".jp-OutputArea-output .widget-vbox").filter(
            has=page.locator(".noUi-handle")).filter(
            has=page.locator(".widget-output img")).first
        box.scroll_into_view_if_needed()
        img = box.locator(".widget-output img").first
        before = img.get_attribute("src")
        assert before.startswith("data:image/png;base64,")
        handle = box.locator(".noUi-handle").first
        handle.focus()
        for key in ("ArrowRight", "ArrowRight", "End"):
            handle.press(key)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = box.locator(".widget-output img").first.get_attribute("src")
                if now and now != before:
                    break
                time.sleep(0.2)
            else:
                continue
            break
        after = box.locator(".widget-output img").first.get_attribute("src")
        assert after and after.startswith("data:image/png;base64,") and after != before, (
            "moving the slider did not redraw the figure")
        foreign = [u for u in requests if not u.startswith(("http://127.0.0.1", "data:",
                                                            "blob:"))]
        assert not foreign, f"JupyterLab loaded from other hosts: {foreign[:5]}"
    finally:
        page.close()
