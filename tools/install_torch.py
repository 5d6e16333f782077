"""Install torch into this Python environment (the Makefile's ``torch`` step), CPU-only by
default, from whichever of the PyTorch CPU index or your default package index answers.

    python tools/install_torch.py [--version 2.13.0] [--index URL] [--build cpu|cuda]

1. If torch can be imported already, nothing is installed (a torch you installed yourself,
   CUDA or not, is kept).
2. The PyTorch CPU wheel index (``--index``, https://download.pytorch.org/whl/cpu unless
   ``--index ""``) is tried first: a CPU-only build, about 200 MB.
3. If it cannot be reached, pip's own configuration is used (PyPI, a mirror, a local
   wheelhouse). pip first *resolves* the install (``pip install --dry-run --report``) and
   the resolution is read: with ``--build cpu`` (the default) an install that would pull
   CUDA libraries (``nvidia-*``, ``triton``, a ``+cu`` torch, several GB) is refused with
   the fix, never installed silently. On Linux x86_64, PyPI's torch wheels do pull CUDA
   libraries; on macOS and Windows they are CPU builds.
4. If neither works, it prints what failed and how to fix it, and exits with status 1.

``--build cuda`` accepts a CUDA build from the default index (a machine with an NVIDIA GPU;
see the README). Only the standard library is used: this runs before anything else is
installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_PREFIXES = ("nvidia-", "nvidia_", "triton", "cuda-", "cuda_")


def say(msg: str) -> None:
    print(f"[install torch] {msg}", flush=True)


def torch_version() -> str | None:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def pip(*args: str, quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args]
    if quiet:
        return subprocess.run(cmd, capture_output=True, text=True)
    return subprocess.run(cmd)


def resolve(spec: str, index_args: list[str]) -> tuple[list[dict] | None, str]:
    """What ``pip install spec`` would install (a list of {name, version, url}), or None
    and pip's last error lines."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        # a short timeout and one retry: an unreachable index should fail in seconds
        out = pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
                  "--timeout", "20", "--retries", "1", spec, *index_args)
        if out.returncode != 0 or not os.path.exists(report):
            lines = [ln for ln in (out.stderr or "").splitlines()
                     if ln.strip() and "is ignored" not in ln]
            return None, "\n".join(lines[-3:])
        with open(report) as f:
            items = json.load(f)["install"]
    return [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
             "url": i.get("download_info", {}).get("url", "")} for i in items], ""


def cuda_parts(items: list[dict]) -> list[str]:
    found = [f"{i['name']} {i['version']}" for i in items
             if i["name"].lower().startswith(CUDA_PREFIXES)]
    found += [f"torch {i['version']}" for i in items
              if i["name"].lower() == "torch" and "+cu" in i["version"]]
    return found


def reachable(url: str, timeout: float = 15.0) -> str:
    """'' if ``url`` answers, else why not (honours HTTPS_PROXY like pip does)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout):
            return ""
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def ensure_modern_pip() -> None:
    """``pip install --dry-run --report`` needs pip >= 22.2."""
    out = pip("--version")
    try:
        major, minor = (int(x) for x in out.stdout.split()[1].split(".")[:2])
    except (IndexError, ValueError):
        return
    if (major, minor) < (22, 2):
        say(f"upgrading pip {major}.{minor} (--dry-run --report needs pip >= 22.2)")
        pip("install", "--quiet", "--upgrade", "pip", quiet=False)


def install(spec: str, index_args: list[str]) -> bool:
    return pip("install", spec, *index_args, quiet=False).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="2.13.0",
                    help="the torch version ('' for any); the chapters are executed with 2.13.0")
    ap.add_argument("--index", default=CPU_INDEX,
                    help="the CPU wheel index tried first ('' to use only pip's configuration)")
    ap.add_argument("--build", choices=["cpu", "cuda"], default="cpu",
                    help="cpu: refuse an install that pulls CUDA libraries; cuda: accept it")
    args = ap.parse_args()

    have = torch_version()
    if have is not None:
        say(f"torch {have} is already installed in {sys.prefix}; keeping it")
        return 0
    ensure_modern_pip()
    spec = f"torch=={args.version}" if args.version else "torch"
    tried = []

    why = reachable(args.index) if args.index and args.build == "cpu" else "not asked for"
    if args.index and args.build == "cpu" and why:
        tried.append(f"the PyTorch CPU index {args.index}: cannot be reached ({why})")
        say(f"the PyTorch CPU index {args.index} cannot be reached ({why}); "
            "trying your default package index")
    elif args.index and args.build == "cpu":
        say(f"resolving {spec} from the PyTorch CPU index {args.index} ...")
        items, err = resolve(spec, ["--index-url", args.index])
        if items is not None and not cuda_parts(items):
            torch = next(i for i in items if i["name"].lower() == "torch")
            say(f"installing torch {torch['version']} (CPU) from {torch['url'] or args.index}")
            if install(spec, ["--index-url", args.index]):
                return 0
            tried.append(f"the PyTorch CPU index {args.index}: the install failed")
        else:
            tried.append(f"the PyTorch CPU index {args.index}: "
                         + (err or "it offered a CUDA build"))
            say(f"the PyTorch CPU index did not work ({tried[-1].split(': ', 1)[1]}); "
                "trying your default package index")

    say(f"resolving {spec} from your default package index (pip's configuration) ...")
    items, err = resolve(spec, [])
    if items is None:
        tried.append(f"your default package index: {err}")
    else:
        cuda = cuda_parts(items)
        torch = next(i for i in items if i["name"].lower() == "torch")
        if cuda and args.build == "cpu":
            tried.append("your default package index: it offers torch "
                         f"{torch['version']} with CUDA libraries ({', '.join(cuda[:3])}"
                         f"{', ...' if len(cuda) > 3 else ''}), several GB; not installed")
        else:
            kind = "with CUDA" if cuda else "CPU"
            say(f"installing torch {torch['version']} ({kind}) from {torch['url'] or 'PyPI'}")
            if install(spec, []):
                return 0
            tried.append("your default package index: the install failed")

    print(f"""
[install torch] Could not install a CPU-only torch ({spec}) into {sys.prefix}.
Tried:
  - {(chr(10) + '  - ').join(tried)}
Fixes (then run the same make command again):
  * Reach the PyTorch CPU index (network, proxy: pip honours HTTPS_PROXY), or name a mirror
    of it:       make test TORCH_INDEX=https://your-mirror/whl/cpu
  * Install a torch yourself into the environment; make keeps any importable torch:
                 {sys.executable} -m pip install /path/to/torch-{args.version or 'X'}-...whl
  * Accept the CUDA build of your default index (several GB; for an NVIDIA GPU):
                 make test TORCH_BUILD=cuda
  * No torch {args.version or ''} wheel for your Python or platform? Any torch >= 2.2 works (the
    chapters' printed numbers are checked with 2.13.0):  make test TORCH_VERSION=
""", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
