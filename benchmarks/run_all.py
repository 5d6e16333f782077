"""Run every benchmark of issue 16 in one go and write their tables to one markdown file.

    python benchmarks/run_all.py                          # CPU, "before" = pgbook at f3182df
    python benchmarks/run_all.py --out /tmp/tables.md     # also write the tables there
    python benchmarks/run_all.py --device cuda --out benchmarks/results-cuda.md
    python benchmarks/run_all.py --quick --baseline none  # tiny sizes: checks the scripts run

The five scripts, each also runnable alone (``--help``): ``bench_logprobs.py`` (token
log-probs + policy loss, time and peak memory), ``bench_entropy.py`` (per-position entropy),
``bench_rollout.py`` (rollout tokens/s with and without the KV cache), ``bench_advantages.py``
(group advantages and ``broadcast_to_tokens`` against verl's estimators), and
``bench_grpo_step.py`` (a GRPO step at chapter 12's settings). ``--baseline REV`` adds the
library as of git revision REV next to the current one ("before"; ``none`` for no such
column). On a shared machine run it when the machine is quiet: every table prints the load
average beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

QUICK = {
    "bench_logprobs.py": ["--batch", "2", "--tokens", "16", "--vocab", "64", "--reps", "1",
                          "--dtypes", "float32,bfloat16", "--inline"],
    "bench_entropy.py": ["--batch", "2", "--tokens", "16", "--vocab", "64", "--reps", "1",
                         "--dtypes", "float32,bfloat16", "--inline"],
    "bench_rollout.py": ["--lengths", "2,4", "--batch", "2", "--configs", "book", "--reps", "1",
                         "--budget", "0", "--inline"],
    "bench_advantages.py": ["--sizes", "64", "--tokens", "8", "--reps", "1", "--budget", "0",
                            "--inline"],
    "bench_grpo_step.py": ["--steps", "2", "--pretrain-steps", "2", "--repeats", "1",
                           "--inline"],
}
TITLES = {
    "bench_logprobs.py": "Token log-probs + policy loss, forward and backward",
    "bench_entropy.py": "Per-position entropy + entropy bonus, forward and backward",
    "bench_rollout.py": "Rollout throughput, KV cache against re-running the prefix",
    "bench_advantages.py": "Group advantages and broadcast_to_tokens against verl",
    "bench_grpo_step.py": "A GRPO step at chapter 12's settings",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=C.BEFORE_REV, metavar="REV",
                    help=f"the 'before' revision (default {C.BEFORE_REV}; 'none' to skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", default=",".join(QUICK), help="comma-separated script names")
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    a = ap.parse_args()
    sections = []
    t0 = time.perf_counter()
    for script in a.only.split(","):
        args = [sys.executable, os.path.join(C.ROOT, "benchmarks", script), "--device", a.device]
        if a.baseline not in ("", "none"):
            args += ["--baseline", a.baseline]
        if a.quick:
            args += QUICK[script]
        print(f"## {TITLES[script]} ({script})", flush=True)
        t = time.perf_counter()
        out = subprocess.run(args, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{script} failed:\n{out.stderr[-4000:]}")
        print(out.stdout, flush=True)
        sections.append(f"## {TITLES[script]}\n\n`python benchmarks/{script} "
                        f"{' '.join(args[2:])}` ({time.perf_counter() - t:.0f} s)\n\n"
                        f"{out.stdout.strip()}\n")
    text = "\n".join(sections)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# Benchmark tables ({time.strftime('%Y-%m-%d %H:%M')}, "
                    f"{time.perf_counter() - t0:.0f} s)\n\n{text}")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
