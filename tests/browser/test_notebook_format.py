"""The committed chapters are written as JupyterLab saves them, so that opening a chapter
in JupyterLab and saving it changes nothing (the browser test opens one and compares the
bytes; this check covers every chapter, without a browser). Fix a failure with
``python tools/nb.py normalize chapters/NN_name.ipynb`` (no re-execution needed)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9A][0-9]_*.ipynb"))


def _nb_tool():
    spec = importlib.util.spec_from_file_location("pgbook_nb_tool", ROOT / "tools" / "nb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_is_written_as_jupyterlab_saves_it(chapter, tmp_path):
    copy = tmp_path / chapter.name
    copy.write_bytes(chapter.read_bytes())
    _nb_tool().normalize(str(copy))
    assert copy.read_bytes() == chapter.read_bytes(), (
        f"JupyterLab would rewrite {chapter.name} on saving it: run "
        f"`python tools/nb.py normalize chapters/{chapter.name}`")
