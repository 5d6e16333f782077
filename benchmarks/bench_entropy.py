"""Benchmark: per-position entropy + an entropy bonus, forward and backward, against the naive path.

    python benchmarks/bench_entropy.py                          # B=8, T=1024, V=32000, CPU
    python benchmarks/bench_entropy.py --baseline f3182df       # also pgbook as it was then
    python benchmarks/bench_entropy.py --batch 2 --tokens 64 --vocab 1000 --reps 1   # quick
    python benchmarks/bench_entropy.py --device cuda

Each variant computes, from logits (B, T, V) that require grad,

    H     = <variant>(logits)                    # (B, T) entropy of π(·|h_t) at every position
    loss  = −Σ_t m_t H_t / Σ_t m_t               # an entropy bonus over the response tokens
    loss.backward()                              # gradient (B, T, V)

with variants ``naive`` (``−(softmax · log_softmax).sum(-1)`` in float32, the textbook
formula), ``pgbook`` (:func:`pgbook.trajectory.tokens.entropy_from_logits` at its
defaults), ``pgbook chunk=1`` and, with ``--baseline``, ``pgbook before``. The floor row
is one pass that only reads the logits. How time and peak memory are measured: see
``_logits.py``.

This is a benchmark, not a test: numbers depend on the machine (and on other load).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _logits

VARIANTS = ["naive", "pgbook", "pgbook chunk=1"]

if __name__ == "__main__":
    _logits.main("entropy", __doc__, VARIANTS)
