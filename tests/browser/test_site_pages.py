"""The built website in a real browser, from the disk (file://), with nothing else to
reach: a chapter page shows its math rendered at build time (KaTeX spans, no KaTeX parse
error) and its saved widgets rendered by the local widget manager (sliders and the figure
of the widget's output), and the page requests nothing from another host.

Needs the site built (``make site``); skipped otherwise.
"""

from __future__ import annotations

import pathlib

import pytest

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = ROOT / "build" / "html"


def widget_page() -> pathlib.Path:
    pages = sorted((SITE / "chapters").glob("*.html"))
    if not pages:
        pytest.skip("the site is not built: run `make site`")
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if "application/vnd.jupyter.widget-view+json" in text and "SliderModel" in text:
            return page
    pytest.skip("no chapter page of the site has a saved slider widget")


def test_a_site_page_shows_rendered_math_and_widgets_and_loads_only_local_files(browser):
    path = widget_page()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_selector(".widget-subarea .widget-slider", timeout=30_000)
        assert page.locator(".katex").count() > 5, "no math rendered by KaTeX on the page"
        assert page.locator(".katex-error").count() == 0
        display = page.locator("div.math .katex-display").first
        display.scroll_into_view_if_needed()
        assert display.is_visible(), "a displayed formula is not visible"
        # KaTeX's stylesheet and fonts are in effect (served from _static/katex)
        font = display.locator(".katex").first.evaluate("e => getComputedStyle(e).fontFamily")
        assert "KaTeX_Main" in font, f"KaTeX's CSS is not applied (font-family {font!r})"
        page.evaluate("document.fonts.ready")
        assert page.evaluate("document.fonts.check('16px KaTeX_Main')"), "KaTeX's fonts"
        widgets = page.locator(".widget-subarea")
        assert widgets.locator(".widget-slider").count() >= 1
        assert widgets.locator("img").count() >= 1, "the widget's saved figure is not shown"
        assert not errors, f"the page raised JavaScript errors: {errors[:3]}"
        foreign = [u for u in requests if not u.startswith(("file://", "data:", "blob:"))]
        assert not foreign, f"{path.name} requested from other hosts: {foreign[:5]}"
        assert any("/_static/widgets/embed.js" in u for u in requests), "no local manager"
    finally:
        page.close()
