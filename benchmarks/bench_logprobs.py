"""Benchmark: token log-probs + GRPO's policy loss, forward and backward, against the naive path.

    python benchmarks/bench_logprobs.py                          # B=8, T=1024, V=32000, CPU
    python benchmarks/bench_logprobs.py --baseline f3182df       # also pgbook as it was then
    python benchmarks/bench_logprobs.py --batch 2 --tokens 64 --vocab 1000 --reps 1   # quick
    python benchmarks/bench_logprobs.py --device cuda

Each variant computes, from logits (B, T, V) that require grad,

    logp  = <variant>(logits, tokens)                              # (B, T)
    loss  = pgbook.methods.policy_loss(logp, old_logp, Â, mask)     # PPO clip, seq-mean-token-mean
    loss.backward()                                                 # gradient (B, T, V)

with variants ``naive`` (``log_softmax(logits.float()).gather(tokens)``, what most code
does), ``pgbook`` (:func:`pgbook.trajectory.tokens.token_logprobs` at its defaults),
``pgbook chunk=1`` (``chunk_size=1``) and, with ``--baseline``, ``pgbook before`` (the
defaults of the library at that revision). The loss is the same code in every variant, so
the differences come from the log-prob computation. The floor row is one pass that only
reads the logits. How time and peak memory are measured: see ``_logits.py``.

This is a benchmark, not a test: numbers depend on the machine (and on other load).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _logits

VARIANTS = ["naive", "pgbook", "pgbook chunk=1"]

if __name__ == "__main__":
    _logits.main("logprobs", __doc__, VARIANTS)
