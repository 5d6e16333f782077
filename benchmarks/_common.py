"""Shared plumbing of the benchmark scripts: the machine header, the "before" code, workers.

Every script prints a header line (machine, torch, threads, load average) above its table,
and can time the library as it was before a change next to the current one: ``--baseline
REV`` exports ``pgbook/`` at git revision REV into a temporary directory (``git archive``,
nothing in the working tree or its branches is touched) and runs the "before" rows in
subprocesses whose ``PYTHONPATH`` puts that copy first. Each measurement runs in a fresh
subprocess, so one row's allocations and warm caches cannot flatter another's.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the default "before": main as merged into this branch (every feature of the book, none of
#: issue 16's changes; the work started from 04d1f09, a main without the later features)
BEFORE_REV = "f3182df"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(device: str = "cpu", threads: int | None = None) -> str:
    """One line: machine, device, torch version, threads, load average (1, 5, 15 min)."""
    import torch

    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    n = threads if threads is not None else torch.get_num_threads()
    return (f"machine: {cpu_name()}, {os.cpu_count()} cores | device: {dev} | "
            f"torch {torch.__version__} | threads: {n} | load average: {load}")


def load_now() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


_EXPORTS: dict[str, str] = {}


def baseline_path(rev: str | None) -> str | None:
    """A directory holding ``pgbook/`` as it was at git revision ``rev`` (None: no baseline)."""
    if rev in (None, "", "none"):
        return None
    if rev in _EXPORTS:
        return _EXPORTS[rev]
    out = tempfile.mkdtemp(prefix=f"pgbook-{rev}-")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "pgbook"], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {rev}: git archive failed: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", out], input=archive.stdout, check=True)
    _EXPORTS[rev] = out
    return out


#: set by a script's ``--inline``: run workers of the current code in this process (a smoke
#: run: saves starting an interpreter and importing torch per worker)
INLINE = [False]


def run_worker(script: str, args: list[str], pythonpath: str | None = None,
               env: dict | None = None) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter and return its last JSON line.

    ``pythonpath`` (a baseline export) comes first on the path, then the repository, so the
    worker imports that ``pgbook``; without it, the repository's. With ``INLINE`` set, a
    worker of the current code runs in this process instead (the calling script's
    ``_parser()`` and ``_work(args)``)."""
    if INLINE[0] and pythonpath is None:
        main = sys.modules["__main__"]
        return main._work(main._parser().parse_args(["--worker", *args]))
    paths = [p for p in (pythonpath, ROOT) if p]
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([*paths, full_env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), "--worker", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker {script} {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_pgbook_origin(expect_dir: str | None) -> str:
    """Where the imported pgbook lives (asserts it is the baseline export when one is given)."""
    import pgbook

    where = os.path.dirname(os.path.dirname(os.path.abspath(pgbook.__file__)))
    if expect_dir is not None and os.path.realpath(where) != os.path.realpath(expect_dir):
        raise SystemExit(f"expected pgbook from {expect_dir}, imported it from {where}")
    return where


def cpu_timer(fn, reps: int, sync=None) -> tuple[float, float]:
    """Median CPU time (time.process_time) and median wall time of ``fn()`` over ``reps``
    runs, in seconds; ``sync`` (e.g. torch.cuda.synchronize) is called around each run."""
    cpu, wall = [], []
    for _ in range(reps):
        if sync:
            sync()
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        if sync:
            sync()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def markdown(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A markdown table; ``align`` one character per column, 'l' or 'r' (default: first l)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def add_common_args(ap, what: str = "pgbook",
                    inline_help: str = "run the current code's workers in this process "
                                       "(a smoke run)") -> None:
    """The options every benchmark takes: --device, --threads, --baseline, --inline."""
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help=f"also time {what} as of git revision REV (e.g. {BEFORE_REV})")
    ap.add_argument("--inline", action="store_true", help=inline_help)


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
