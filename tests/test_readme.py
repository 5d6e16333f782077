"""Every Python block of README.md runs as it is.

The blocks are extracted in order and each is executed in a fresh namespace (so each must
be self-contained: a reader copies one block, not the README), all in one fresh Python
process (so they run from outside the package, right after ``import pgbook``, and their
registrations and seeds cannot leak into the other tests). A block whose first line is
``# readme: not run`` is skipped; keep such blocks rare.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = "# readme: not run"

# runs in the child process: argv[1] is the README; prints one line per block
RUNNER = r"""
import re, sys, time, traceback
text = open(sys.argv[1], encoding="utf-8").read()
for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
    code = m.group(1)
    line = text.count("\n", 0, m.start()) + 2
    if code.startswith("# readme: not run"):
        print(f"SKIP line {line}", flush=True)
        continue
    t0 = time.perf_counter()
    try:
        exec(compile(code, f"README.md block at line {line}", "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"FAIL line {line}", flush=True)
        sys.exit(1)
    print(f"OK line {line} {time.perf_counter() - t0:.1f}s", flush=True)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the first code line, code) for every fenced ```python block, in order."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def test_readme_has_the_promised_blocks():
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 5, "README: expected its Python blocks (bandit, registry, map, LLM core, own model)"
    skipped = [line for line, code in blocks if code.startswith(SKIP)]
    assert len(skipped) <= 1, f"README: too many blocks marked {SKIP!r} (lines {skipped})"
    for heading in ("## Using pgbook in your own code", "## The LLM-side core",
                    "## Bring your own model"):
        assert heading in text
    byom = text[text.index("## Bring your own model"):]
    own = python_blocks(byom)[0][1]
    n_lines = len([ln for ln in own.splitlines() if ln.strip()])
    assert 30 <= n_lines <= 60, f"the bring-your-own-model loop has {n_lines} non-blank lines"
    for piece in ("causal_logprobs", "check_on_policy", "method_loss", ".eval()"):
        assert piece in own


def test_every_python_block_of_the_readme_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(README)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=README.parent)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"a README block failed:\n{report[-6000:]}"
    n = len(python_blocks(README.read_text(encoding="utf-8")))
    assert report.count("OK line") + report.count("SKIP line") == n, report


@pytest.mark.parametrize("code", ["x = 1\n", f"{SKIP}\nraise SystemExit(3)\n"])
def test_the_runner_runs_blocks_and_honours_the_skip_marker(tmp_path, code):
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n```python\n{code}```\n\n```bash\nexit 1\n```\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(readme)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and ("OK line 4" in proc.stdout or "SKIP line 4" in proc.stdout)


def test_the_runner_reports_a_failing_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("```python\nx = 1\n```\n\n```python\nprint(undefined)\n```\n",
                      encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(readme)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "FAIL line 6" in proc.stdout
    assert "NameError" in proc.stderr
