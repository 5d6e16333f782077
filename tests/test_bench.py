"""Smoke run of the benchmarks at tiny sizes: each script runs and prints its header and its
tables. No timing is asserted (numbers depend on the machine); `benchmarks/README.md` holds
the measured tables."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import run_all  # noqa: E402


@pytest.mark.parametrize("script", list(run_all.QUICK))
def test_benchmark_runs_and_prints_its_tables(script):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", script), *run_all.QUICK[script]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.startswith("machine: ") and "torch " in text and "load average" in text
    assert "threads: 1" in text
    assert text.count("|---") >= 1
    if script == "bench_grpo_step.py":   # the bound on what any code around the model can gain
        assert "| floor: the model's passes alone |" in text and "no code around this model" in text
