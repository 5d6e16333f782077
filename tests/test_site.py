"""The built website (``make site`` -> build/html) works offline and loads nothing from another
host; its math is rendered at build time, its widgets by a local widget manager, and it
shows every chapter with its exercises.

These tests read the built files; they are skipped until the site is built (``make site``
runs them after building). The real browser check of the same pages is in
``tests/browser/``.
"""

from __future__ import annotations

import html
import html.parser
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "html"
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9A][0-9]_*.ipynb"))

needs_site = pytest.mark.skipif(not (SITE / "docs" / "index.html").exists(),
                                reason="the site is not built: run `make site`")

# <tag attribute> pairs through which a page loads something (links to other pages, e.g.
# <a href> or <link rel="next">, load nothing and are not listed)
LOADING_ATTRS = {
    "script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"),
    "video": ("src", "poster"), "audio": ("src",), "iframe": ("src",), "embed": ("src",),
    "object": ("data",), "track": ("src",), "input": ("src",), "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"), "frame": ("src",),
}
LOADING_RELS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload",
                "modulepreload", "prefetch", "preconnect", "dns-prefetch", "manifest",
                "mask-icon"}
# in CSS (files, <style>, style="..."): url(...) and @import "..."
CSS_LOAD = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+(?:url\()?\s*['"]?([^'")\s;]+)""")
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
# in JavaScript: the ways a script fetches from a URL it names, and the usual CDNs
JS_LOAD = re.compile(
    r"""(?:url\(\s*['"]?|@import\s+(?:url\()?\s*['"]?|\b(?:src|href)\s*=\s*\\?['"]|"""
    r"""\b(?:import|importScripts|fetch|Worker|SharedWorker|EventSource|WebSocket)\s*\(\s*['"`]"""
    r""")((?:https?:)?//[^'"`)\s]+)""")
CDN_HOSTS = re.compile(r"(?:https?:)?//(cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|"
                       r"fonts\.googleapis\.com|fonts\.gstatic\.com|ajax\.googleapis\.com|"
                       r"code\.jquery\.com|cdn\.plot\.ly|polyfill\.io|cdn\.mathjax\.org)[^'\"`)\s]*")
# One CDN address that a local file names without loading it: the widget HTML manager's
# standalone bundle reads a `data-jupyter-widgets-cdn` attribute whose default is jsDelivr,
# but only a module loader would use it, and embed.js creates its manager without one
# (widgets of other modules fail to render instead of being fetched). The browser test
# records every request of a page with widgets and finds none to another host.
KNOWN_UNUSED = {("_static/widgets/embed.js", "https://cdn.jsdelivr.net/npm/"):
                "data-jupyter-widgets-cdn"}


def external(url: str) -> bool:
    return bool(re.match(r"(?:https?:)?//", url.strip(), flags=re.I))


class _Loads(html.parser.HTMLParser):
    """Every URL a page loads (attributes, <style>, style="...") and its inline scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads: list[str] = []
        self.inline_scripts: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in LOADING_ATTRS.get(tag, ()):
            if a.get(name):
                urls = a[name].split(",") if name == "srcset" else [a[name]]
                self.loads += [u.strip().split(" ")[0] for u in urls if u.strip()]
        if tag == "link" and a.get("href") and LOADING_RELS & set((a.get("rel") or "").split()):
            self.loads.append(a["href"])
        if a.get("style"):
            self.loads += [m.group(1) or m.group(2) for m in CSS_LOAD.finditer(a["style"])]
        if tag in ("style", "script"):
            self._in = (tag, a.get("type", ""), a.get("src"))

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in is None:
            return
        tag, kind, src = self._in
        if tag == "style":
            self.loads += [m.group(1) or m.group(2)
                           for m in CSS_LOAD.finditer(CSS_COMMENT.sub("", data))]
        elif not src and "json" not in kind:  # widget states and views are data, not code
            self.inline_scripts.append(data)


def _pages() -> list[pathlib.Path]:
    """The site's pages (the themes also copy Jinja macro files named *.html into _static)."""
    return sorted(p for p in SITE.rglob("*.html") if "_static" not in p.relative_to(SITE).parts)


def _parse(page: pathlib.Path) -> _Loads:
    p = _Loads()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(SITE).as_posix()


@needs_site
def test_pages_load_nothing_from_another_host_and_every_local_asset_exists():
    pages = _pages()
    assert len(pages) > len(CHAPTERS), f"only {len(pages)} pages in {SITE}"
    foreign, missing = [], []
    for page in pages:
        parsed = _parse(page)
        for url in parsed.loads:
            if external(url):
                foreign.append(f"{_rel(page)}: {url}")
            elif not url.startswith(("data:", "#", "about:", "blob:")):
                target = (page.parent / url.split("#")[0].split("?")[0]).resolve()
                if not target.exists():
                    missing.append(f"{_rel(page)}: {url}")
        for script in parsed.inline_scripts:
            foreign += [f"{_rel(page)} (inline script): {m.group(1)}"
                        for m in JS_LOAD.finditer(script)]
            foreign += [f"{_rel(page)} (inline script): {m.group(0)}"
                        for m in CDN_HOSTS.finditer(script)]
    assert not foreign, "pages load from other hosts:\n" + "\n".join(foreign[:20])
    assert not missing, "pages load local files that are not in the site:\n" + "\n".join(
        missing[:20])


@needs_site
def test_stylesheets_load_nothing_from_another_host_and_their_fonts_are_local():
    sheets = sorted(SITE.rglob("*.css"))
    assert any(s.name == "katex.min.css" for s in sheets), "KaTeX's CSS is not in the site"
    foreign, missing = [], []
    for sheet in sheets:
        for m in CSS_LOAD.finditer(CSS_COMMENT.sub("", sheet.read_text(encoding="utf-8"))):
            url = m.group(1) or m.group(2)
            if external(url):
                foreign.append(f"{_rel(sheet)}: {url}")
            elif not url.startswith(("data:", "#")):
                if not (sheet.parent / url.split("#")[0].split("?")[0]).resolve().exists():
                    missing.append(f"{_rel(sheet)}: {url}")
    assert not foreign, "stylesheets load from other hosts:\n" + "\n".join(foreign[:20])
    assert not missing, "stylesheets name files not in the site:\n" + "\n".join(missing[:20])


@needs_site
def test_scripts_fetch_nothing_from_another_host():
    foreign = []
    for script in sorted(SITE.rglob("*.js")) + sorted(SITE.rglob("*.mjs")):
        text = script.read_text(encoding="utf-8", errors="replace")
        code = CSS_COMMENT.sub("", text)  # block comments (and CSS comments in strings)
        hits = [m.group(1) for m in JS_LOAD.finditer(code)]
        hits += [m.group(0) for m in CDN_HOSTS.finditer(code)]
        for url in hits:
            for (path, known), context in KNOWN_UNUSED.items():
                if _rel(script) == path and url == known:
                    at = text.find(known)
                    assert context in text[at:at + 400], (
                        f"{path} names {known} outside the {context} default: check that "
                        "the widget manager still has no module loader")
                    break
            else:
                foreign.append(f"{_rel(script)}: {url}")
    assert not foreign, "scripts fetch from other hosts:\n" + "\n".join(foreign[:20])


@needs_site
def test_math_is_rendered_at_build_time():
    rendered = errors = 0
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<script[^>]*mathjax", text, flags=re.I), (
            f"{_rel(page)} loads MathJax")
        rendered += text.count('class="katex"')
        errors += text.count("katex-error")
    assert rendered > 100, f"only {rendered} formulas rendered by KaTeX"
    assert errors == 0, f"{errors} formulas KaTeX could not parse (class katex-error)"


@needs_site
def test_every_chapter_is_on_the_site_with_its_widgets_and_exercises():
    for nb_path in CHAPTERS:
        page = SITE / "chapters" / (nb_path.stem + ".html")
        assert page.exists(), f"{nb_path.name} is not on the site"
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        html_text = page.read_text(encoding="utf-8")
        state = nb["metadata"].get("widgets", {}).get(
            "application/vnd.jupyter.widget-state+json", {}).get("state")
        if state:
            assert 'type="application/vnd.jupyter.widget-state+json"' in html_text
            assert "_static/widgets/embed.js" in html_text, (
                f"{page.name}: the saved widgets are not rendered by the local manager")
        # what the chapter asks of the reader is on the page as in the notebook
        code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        text = html.unescape(re.sub(r"<[^>]+>", "", html_text))
        for call in re.findall(r"exercises\.check\(\s*['\"][\w.]+['\"]", code):
            assert call in text, f"{page.name}: {call} is not on the page"


def test_the_scanners_find_loads_from_other_hosts_and_ignore_links():
    page = _Loads()
    page.feed("""<html><head>
      <script src="https://cdn.example.org/a.js"></script>
      <link rel="stylesheet" href="//fonts.example.org/b.css">
      <link rel="next" href="https://example.org/next.html">
      <style>/* url(https://in.a.comment/x.png) */ body { background: url('https://c.org/d.png') }</style>
      <script>fetch("https://api.example.org/data")</script>
      <script type="application/vnd.jupyter.widget-state+json">{"u": "https://x.org"}</script>
    </head><body>
      <a href="https://arxiv.org/abs/1234.5678">a paper</a>
      <img srcset="local.png 1x, https://img.example.org/e.png 2x">
      <div style="background-image: url(data:image/png;base64,AAAA)"></div>
    </body></html>""")
    foreign = [u for u in page.loads if external(u)]
    assert foreign == ["https://cdn.example.org/a.js", "//fonts.example.org/b.css",
                       "https://c.org/d.png", "https://img.example.org/e.png"]
    assert [m.group(1) for s in page.inline_scripts for m in JS_LOAD.finditer(s)] == [
        "https://api.example.org/data"]
    js = 'a.src = "https://cdn.example.org/x.js"; var doc = "see https://docs.example.org";'
    assert [m.group(1) for m in JS_LOAD.finditer(js)] == ["https://cdn.example.org/x.js"]
    assert [m.group(0) for m in CDN_HOSTS.finditer('load("https://unpkg.com/pkg@1/x.js")')] == [
        "https://unpkg.com/pkg@1/x.js"]
