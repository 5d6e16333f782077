"""Exercises of chapter 04 (REINFORCE and weighted MLE): one REINFORCE step, the running-mean
baseline's update, and the weights of rejection-sampling fine-tuning."""

from __future__ import annotations

import torch

from ..exact.bandits import softmax_score
from ..reward.baselines import running_mean_update, success_weights
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect, expect_close, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("04.k", fn)


@exercise("04.1", "One REINFORCE step")
def check_reinforce_step(fn):
    """``fn(theta (S, A), s (N,), a (N,), r (N,), b (S,), lr)`` must return
    θ + lr · (1/N) Σ_i (r_i − b(s_i)) ∇_θ log π_θ(a_i|s_i), an (S, A) table."""
    bandit = context_bandit()
    policy = TabularSoftmax(3, 4)
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    probs = policy.probs(theta.reshape(-1))
    batch = bandit.sample(probs, 40, torch.Generator().manual_seed(1))
    b = bandit.values(probs)
    scores = softmax_score(probs, batch.s, batch.a)                       # (N, S, A)
    step = ((batch.r - b[batch.s])[:, None, None] * scores).mean(0)
    got = fn(theta.clone(), batch.s.clone(), batch.a.clone(), batch.r.clone(), b.clone(), 0.7)
    expect_shape(got, (3, 4), "θ_new")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, theta):
        raise Wrong("θ did not move: add the step lr · ĝ")
    if torch.allclose(g, theta + 0.7 * (batch.r[:, None, None] * scores).mean(0)):
        raise Wrong("the baseline is missing: weight each score by r_i − b(s_i)")
    if torch.allclose(g, theta - 0.7 * step):
        raise Wrong("you step downhill: REINFORCE ascends, θ + lr · ĝ")
    if torch.allclose(g, theta + 0.7 * 40 * step):
        raise Wrong("you sum over the batch: ĝ is the mean over the N samples")
    expect_close((got - theta).to(got.dtype), 0.7 * step, "θ_new − θ", atol=1e-12,
                 hint="row s_i of sample i's score is e_{a_i} − π(·|s_i), other rows 0")
    return "θ + η (1/N) Σ (r − b(s)) (e_a − π) in row s"


@exercise("04.2", "The running-mean baseline's update")
def check_running_mean_step(fn):
    """``fn(b (S,), n (S,), s (N,), r (N,), decay)`` must return the new ``(b, n)``: absent
    contexts unchanged, a first visit takes the batch mean, otherwise
    b ← (1 − decay) b + decay · r̄(s); n counts the rewards seen per context."""
    b = torch.tensor([0.0, 5.0, 1.0, 2.0], dtype=torch.float64)
    n = torch.tensor([0.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    s = torch.tensor([0, 1, 1, 0, 2])
    r = torch.tensor([1.0, 2.0, 4.0, 3.0, 7.0], dtype=torch.float64)
    want_b, want_n = running_mean_update(b[None], n[None], s[None], r[None], decay=0.25)
    out = fn(b.clone(), n.clone(), s.clone(), r.clone(), 0.25)
    expect(isinstance(out, tuple) and len(out) == 2, "return a pair (b, n)")
    got_b, got_n = out
    expect_shape(got_b, (4,), "b")
    expect_shape(got_n, (4,), "n")
    gb = got_b.detach().to(torch.float64)
    if abs(float(gb[3]) - 2.0) > 1e-12:
        raise Wrong("context 3 is not in the batch: its baseline must keep its value (2.0)")
    if abs(float(gb[0]) - 0.25 * 2.0) < 1e-12:
        raise Wrong("context 0 is seen for the first time: take its batch mean (2.0), not an "
                    "average with the initial 0")
    seq = b.clone()
    seen = n.clone()
    for si, ri in zip(s.tolist(), r.tolist()):        # one update per sample: the usual slip
        seq[si] = ri if seen[si] == 0 else 0.75 * seq[si] + 0.25 * ri
        seen[si] += 1
    if abs(float(gb[1]) - (0.75 * 5 + 0.25 * 2.0)) < 1e-12 or torch.allclose(gb, seq):
        raise Wrong("average the batch's rewards per context first (r̄(s)), then mix once per "
                    "batch: context 1 has two rewards, 2 and 4")
    expect_close(got_b, want_b[0], "b", atol=1e-12,
                 hint="b(s) ← (1 − decay) b(s) + decay · r̄(s) for contexts seen before")
    expect_close(got_n, want_n[0], "n", atol=1e-12, hint="n(s) + the batch's count in s")
    return "absent contexts kept, first visits take the batch mean, the others move by decay"


@exercise("04.3", "The weights of rejection-sampling fine-tuning")
def check_rft_weights(fn):
    """``fn(rewards (N,))`` must return w (N,) with w_i = 1[r_i ≥ 1] · N / K, K the number of
    successes (all zeros when K = 0)."""
    r = torch.tensor([1.0, 0.2, 1.0, 0.0, 0.6, 1.0, 0.0, 0.3], dtype=torch.float64)
    want = success_weights(r[None])[0]
    got = fn(r.clone())
    expect_shape(got, (8,), "w")
    g = got.detach().to(torch.float64)
    keep = (r >= 1).to(torch.float64)
    if torch.allclose(g, keep):
        raise Wrong("without the factor N/K, (1/N) Σ w log π is the SFT loss averaged over all N "
                    "samples, not over the K kept ones")
    if torch.allclose(g, keep / 3):
        raise Wrong("(1/N) Σ w log π must average over the K kept samples: w = N/K on them, "
                    "not 1/K")
    if torch.allclose(g, r):
        raise Wrong("that is the reward itself: RFT keeps successes with weight one and drops the rest")
    expect_close(got, want, "w", atol=1e-12)
    none = fn(torch.zeros(5, dtype=torch.float64))
    expect_shape(none, (5,), "w with no success")
    expect(bool(torch.isfinite(none).all()) and float(none.abs().max()) == 0.0,
           "with no success every weight must be 0 (not NaN from 0/0)")
    return "N/K on the kept samples, 0 elsewhere, and all zeros when nothing succeeded"
