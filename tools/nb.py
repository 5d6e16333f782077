"""Authoring helper for the chapters.

    python tools/nb.py build SCRIPT.py NOTEBOOK.ipynb   # percent-format script -> notebook
    python tools/nb.py extract NOTEBOOK.ipynb SCRIPT.py # notebook -> percent-format script
    python tools/nb.py run NOTEBOOK.ipynb [...]        # execute in place, save outputs, time it
    python tools/nb.py times                           # execute every chapter, print wall times
    python tools/nb.py normalize NOTEBOOK.ipynb [...]  # rewrite as JupyterLab saves it (no run)

A percent script separates cells with ``# %%`` (code) and ``# %% [markdown]`` (Markdown,
every line prefixed by ``# ``). Chapters are committed executed: run ``run`` after editing.

Every notebook is written exactly as JupyterLab would save it (nbformat 4.5, cell ids, the
kernelspec and language_info of the ipykernel kernel, integral numbers without ``.0``), so
opening a chapter in JupyterLab and saving it changes nothing; ``tests/browser`` checks it.
"""

from __future__ import annotations

import pathlib
import re
import sys
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _jupyterlab_numbers(node):
    """``node`` with every float of integral value as an int: JupyterLab saves a notebook by
    sending it through JavaScript, whose JSON has one number type, so the kernel's ``20.0``
    (a slider's ``max`` in the saved widget state) is saved as ``20``."""
    if isinstance(node, float) and node.is_integer() and abs(node) < 1e21:
        return int(node)
    if isinstance(node, dict):
        return type(node)((k, _jupyterlab_numbers(v)) for k, v in node.items())
    if isinstance(node, list):
        return [_jupyterlab_numbers(v) for v in node]
    return node


def write(nb, path: str) -> None:
    """Write ``nb`` as JupyterLab saves it (see the module docstring)."""
    nb = _jupyterlab_numbers(nb)
    nb.nbformat, nb.nbformat_minor = 4, 5
    nbformat.write(nb, path)


def normalize(path: str) -> None:
    """Rewrite a notebook as JupyterLab saves it, without executing it."""
    write(nbformat.read(path, as_version=4), path)
    print(f"normalized {path}")


def build(script: str, out: str) -> None:
    text = pathlib.Path(script).read_text()
    parts = re.split(r"^# %%(.*)$", text, flags=re.M)
    nb = nbformat.v4.new_notebook()
    # the kernelspec JupyterLab writes itself, so opening a chapter does not mark it modified
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for header, body in zip(parts[1::2], parts[2::2]):
        body = body.strip("\n")
        if "[markdown]" in header:
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n".join(lines).strip("\n")))
        elif body.strip():
            nb.cells.append(nbformat.v4.new_code_cell(body))
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:03d}"
    write(nb, out)
    print(f"wrote {out} ({len(nb.cells)} cells)")


def extract(notebook: str, out: str) -> None:
    """The inverse of :func:`build`: a notebook's cells as a percent-format script."""
    nb = nbformat.read(notebook, as_version=4)
    parts = []
    for c in nb.cells:
        if c.cell_type == "markdown":
            lines = [("# " + ln) if ln else "#" for ln in c.source.splitlines()]
            parts.append("# %% [markdown]\n" + "\n".join(lines))
        else:
            parts.append("# %%\n" + c.source)
    pathlib.Path(out).write_text("\n\n".join(parts) + "\n")
    print(f"wrote {out} ({len(nb.cells)} cells)")


def run(path: str, timeout: int = 300) -> float:
    from nbclient import NotebookClient  # only here: the other commands need nbformat alone

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(pathlib.Path(path).parent)}})
    t0 = time.perf_counter()
    client.execute()
    dt = time.perf_counter() - t0
    for c in nb.cells:  # drop volatile execution metadata so diffs stay small
        c.get("metadata", {}).pop("execution", None)
    write(nb, path)
    print(f"{path}: {dt:.1f} s")
    return dt


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "build":
        build(*args)
    elif cmd == "extract":
        extract(*args)
    elif cmd == "run":
        for a in args:
            run(a)
    elif cmd == "normalize":
        for a in args:
            normalize(a)
    elif cmd == "times":
        total = 0.0
        for p in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
            total += run(str(p))
        print(f"total {total:.1f} s")
    else:
        raise SystemExit(__doc__)
