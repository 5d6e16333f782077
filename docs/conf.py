"""Sphinx configuration of pgbook's website (``make site``).

The source directory is the repository root (``sphinx-build -c docs . build/html``), so the
part pages in ``docs/`` include the chapters by their path (``/chapters/01_objective``)
and no notebook is copied. The site works offline and loads nothing from another host:

* the notebooks are rendered as committed (``nb_execution_mode = "off"``);
* math is rendered to HTML at build time by KaTeX under node (``katex_prerender``); KaTeX's
  CSS and fonts come from the ``katex`` npm package and are served from ``_static/katex``;
* the widgets' saved states are rendered by a local copy of the Jupyter widgets HTML
  manager (``@jupyter-widgets/html-manager``'s ``dist/embed.js`` and its fonts, served from
  ``_static/widgets``), never a CDN;
* the API reference is generated from pgbook's docstrings (autodoc + autosummary).

The npm packages are installed by ``npm ci`` (``make site`` runs it) into ``node_modules``.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys

import pgbook

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
NODE_MODULES = ROOT / "node_modules"
KATEX_DIST = NODE_MODULES / "katex" / "dist"
WIDGETS_DIST = NODE_MODULES / "@jupyter-widgets" / "html-manager" / "dist"
# assets copied out of node_modules at each build; lives under build/, never committed
ASSETS = ROOT / "build" / "site_assets"

project = "pgbook"
author = "the pgbook authors"
copyright = "the pgbook authors, MIT licence"
version = release = pgbook.__version__

root_doc = "docs/index"
# the source directory is the repository root: read only the docs and the chapters
include_patterns = ["docs/**", "chapters/[0-9A][0-9]_*.ipynb"]
exclude_patterns = ["docs/_static/**", "docs/_templates/**", "docs/_extra/**",
                    "**/.ipynb_checkpoints/**"]
templates_path = [str(ROOT / "docs" / "_templates")]  # absolute: autosummary reads it from srcdir

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinxcontrib.katex",
    "plain_math_docstrings",  # docs/_ext: formulas in docstrings are not markup
    "katex_patience",  # docs/_ext: the KaTeX server starts reliably on a busy machine
]

# --- notebooks (myst-nb) -----------------------------------------------------------------
nb_execution_mode = "off"  # the chapters are committed executed: show exactly that
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# the widget HTML manager from node_modules, served locally (myst-nb's default is a CDN)
nb_ipywidgets_js = {"widgets/embed.js": {}}

# --- math: KaTeX, pre-rendered at build time ------------------------------------------------
katex_prerender = True
katex_js_path = str(KATEX_DIST / "katex.min.js")  # used by the node render server
katex_css_path = "katex/katex.min.css"  # relative: served from _static/katex

# --- API reference -------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True  # "Args:" sections
napoleon_numpy_docstring = False

# --- HTML ----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "pgbook: policy gradients for language models"
html_static_path = ["_static", str(ASSETS)]
html_extra_path = ["_extra"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_permalinks_icon = "#"



def _parts_without_chapters() -> list[str]:
    """The part pages (docs/part*.md) none of whose toctree globs matches a chapter yet:
    they are left out of the site (an empty glob is a warning, and an empty part says
    nothing)."""
    empty = []
    for page in sorted((ROOT / "docs").glob("part*.md")):
        globs = re.findall(r"^/(chapters/\S+)$", page.read_text(), flags=re.M)
        if not any(next(ROOT.glob(g + ".ipynb"), None) for g in globs):
            empty.append(str(page.relative_to(ROOT)))
    return empty


exclude_patterns += _parts_without_chapters()


def _copy_assets() -> None:
    """Copy KaTeX's CSS and fonts and the widget manager's bundle out of node_modules."""
    missing = [p for p in (KATEX_DIST / "katex.min.css", WIDGETS_DIST / "embed.js")
               if not p.exists()]
    if missing:
        raise RuntimeError(
            "pgbook site: missing " + ", ".join(str(p.relative_to(ROOT)) for p in missing)
            + ". The site's JavaScript assets come from npm: run `npm ci` in the repository "
            "root (make site does), which needs node and npm.")
    if ASSETS.exists():
        shutil.rmtree(ASSETS)
    (ASSETS / "katex").mkdir(parents=True)
    shutil.copy2(KATEX_DIST / "katex.min.css", ASSETS / "katex")
    shutil.copytree(KATEX_DIST / "fonts", ASSETS / "katex" / "fonts")
    shutil.copytree(WIDGETS_DIST, ASSETS / "widgets",
                    ignore=shutil.ignore_patterns("*.map", "*amd*"))


_copy_assets()
