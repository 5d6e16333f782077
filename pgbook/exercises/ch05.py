"""Exercises of chapter 05 (importance sampling): weights in log space, the effective sample
size, and the self-normalised estimate (checked for its bias against the exact coefficient)."""

from __future__ import annotations

import math

import torch

from ..exact.offpolicy import snis_bias_coefficient
from ..trajectory.importance import effective_sample_size, importance_weights, is_estimate
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect, expect_close, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("05.k", fn)


@exercise("05.1", "Importance weights in log space")
def check_importance_weights(fn):
    """``fn(logp, behaviour_logp)`` (same shape) must return w = π/μ = exp(log π − log μ),
    finite even when both log-probabilities are around −800."""
    lp = torch.tensor([[-0.1, -2.0, -1.2], [-0.7, -0.05, -3.0]], dtype=torch.float64)
    lq = torch.tensor([[-0.5, -1.0, -1.2], [-0.2, -0.9, -0.4]], dtype=torch.float64)
    want = importance_weights(lp, lq)
    got = fn(lp.clone(), lq.clone())
    expect_shape(got, (2, 3), "w")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, 1 / want):
        raise Wrong("the weight is upside down: w = π/μ (target over behaviour), not μ/π")
    if torch.allclose(g, lp - lq):
        raise Wrong("that is log w: exponentiate it")
    expect_close(got, want, "w", atol=1e-12, rtol=1e-10)
    long = fn(torch.tensor([-800.0, -805.0], dtype=torch.float64),
              torch.tensor([-801.0, -800.0], dtype=torch.float64))
    expect_shape(long, (2,), "w for long sequences")
    expect(bool(torch.isfinite(long).all()),
           "log-probabilities of −800 give NaN: exp(−800) underflows to 0, and 0/0 is NaN; "
           "compute exp(log π − log μ) instead of exp(log π) / exp(log μ)")
    expect_close(long, torch.tensor([math.e, math.exp(-5.0)], dtype=torch.float64),
                 "w for long sequences", atol=1e-12, rtol=1e-10)
    return "π/μ in log space, finite for sequence-level log-probabilities"


@exercise("05.2", "The effective sample size")
def check_ess(fn):
    """``fn(weights (..., N))`` must return (Σ w)² / Σ w² over the last dimension, shape (...)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(4, 10, dtype=torch.float64, generator=gen) * 3
    want = effective_sample_size(w)
    got = fn(w.clone())
    expect_shape(got, (4,), "ESS")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, (w.sum(-1) ** 2 / (w ** 2).sum(-1)) / 10):
        raise Wrong("you return ESS / N: the ESS itself is (Σ w)² / Σ w²")
    if torch.allclose(g, (w ** 2).sum(-1) / w.sum(-1) ** 2):
        raise Wrong("upside down: ESS = (Σ w)² / Σ w², between 1 and N")
    if torch.allclose(g, w.sum(-1) ** 2 / (w ** 2).sum()):
        raise Wrong("sum over the last dimension only (one ESS per batch)")
    expect_close(got, want, "ESS", atol=1e-10)
    equal = fn(torch.full((2, 8), 0.3, dtype=torch.float64))
    expect_close(equal, torch.full((2,), 8.0, dtype=torch.float64), "ESS of equal weights", atol=1e-10,
                 hint="equal weights are worth N samples")
    return "(Σ w)² / Σ w² per batch: N for equal weights, near 1 when one weight dominates"


@exercise("05.3", "The self-normalised estimate")
def check_snis(fn):
    """``fn(values (..., N), weights (..., N))`` must return Σ w f / Σ w over the last
    dimension; on many batches from μ its mean must show the exact O(1/N) bias of SNIS."""
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(3, 6, dtype=torch.float64, generator=gen)
    w = torch.rand(3, 6, dtype=torch.float64, generator=gen) * 2 + 0.1
    want = is_estimate(f, w, self_normalised=True)
    got = fn(f.clone(), w.clone())
    expect_shape(got, (3,), "Ĵ_SN")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, is_estimate(f, w)):
        raise Wrong("that is ordinary IS, (1/N) Σ w f: divide by Σ w instead of N")
    if torch.allclose(g, (w * f).sum(-1) / w.sum()):
        raise Wrong("normalise each batch by its own Σ w (over the last dimension)")
    expect_close(got, want, "Ĵ_SN", atol=1e-12)
    # the estimator's defining property, on the bandit: biased by ≈ c/N towards J(μ)
    bandit = context_bandit()
    policy = TabularSoftmax(3, 4)
    mu = policy.probs(-bandit.means.reshape(-1))
    pi = policy.probs(2.0 * bandit.means.reshape(-1))
    n, m = 64, 20_000
    batch = bandit.sample(mu, (m, n), torch.Generator().manual_seed(2))
    wb = importance_weights(pi.log()[batch.s, batch.a], mu.log()[batch.s, batch.a])
    est = fn(batch.r.clone(), wb.clone()).detach().to(torch.float64)
    bias = float(est.mean() - bandit.J(pi))
    se = float(est.std()) / math.sqrt(m)
    c = float(snis_bias_coefficient(bandit, pi, mu))
    expect(abs(bias - c / n) < 5 * se + 0.2 * abs(c / n),
           f"on 20 000 batches of 64 the bias is {bias:.4f}, the delta method predicts {c / n:.4f}")
    return f"Σ w f / Σ w, and its bias on the bandit ({bias:.4f}) matches the delta method's c/N ({c / n:.4f})"
