"""Exercises of chapter 06 (proximal methods): the preconditioned step, a context's block of
the tabular Fisher matrix, and TRPO's step length."""

from __future__ import annotations

import math

import torch

from ..exact.proximal import fisher_information, preconditioned_step
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape, fmt_pair, near

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("06.k", fn)


@exercise("06.1", "The preconditioned step θ + η M⁻¹ g")
def check_preconditioned_step(fn):
    """``fn(theta (P,), grad (P,), M (P, P), eta)`` must return θ + η M⁻¹ g."""
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    M = B @ B.T + 0.5 * torch.eye(4, dtype=torch.float64)
    theta = torch.randn(4, dtype=torch.float64, generator=gen)
    g = torch.randn(4, dtype=torch.float64, generator=gen)
    want = preconditioned_step(theta, g, M, 0.3)
    got = fn(theta.clone(), g.clone(), M.clone(), 0.3)
    expect_shape(got, (4,), "θ_new")
    d = got.detach().to(torch.float64) - theta
    if torch.allclose(d, 0.3 * M @ g):
        raise Wrong("you multiply by M: the step is M⁻¹ g (solve M x = g)")
    if torch.allclose(d, 0.3 * g):
        raise Wrong("M is missing: that is plain gradient ascent (M = I)")
    if torch.allclose(d, -0.3 * torch.linalg.solve(M, g)):
        raise Wrong("you step downhill: the proximal step ascends, θ + η M⁻¹ g")
    expect_close(got, want, "θ_new", atol=1e-12, hint="torch.linalg.solve(M, g)")
    return "θ + η M⁻¹ g, the argmax of the linearised objective with penalty ½δᵀMδ/η"


@exercise("06.2", "A context's block of the tabular Fisher matrix")
def check_fisher_block(fn):
    """``fn(rho_s, probs_s (A,))`` must return the (A, A) matrix ρ(s)(diag π − ππᵀ)."""
    bandit = context_bandit()
    policy = TabularSoftmax(3, 4)
    theta = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    F = fisher_information(bandit, policy, theta)
    probs = policy.probs(theta)
    for s in range(3):
        want = F[4 * s: 4 * s + 4, 4 * s: 4 * s + 4]
        got = fn(float(bandit.rho[s]), probs[s].clone())
        expect_shape(got, (4, 4), f"F block of context {s}")
        g = got.detach().to(torch.float64)
        p = probs[s]
        if torch.allclose(g, torch.diag(p) - torch.outer(p, p)):
            raise Wrong("ρ(s) is missing: the Fisher matrix averages over contexts s ~ ρ")
        if torch.allclose(g, float(bandit.rho[s]) * torch.diag(p)):
            raise Wrong("the −ππᵀ term is missing: Cov of the score e_a − π is diag π − ππᵀ")
        expect_close(got, want, f"F block of context {s}", atol=1e-12)
    return "ρ(s)(diag π − ππᵀ): the blocks of F = E[∇log π ∇log πᵀ], singular along 1"


@exercise("06.3", "TRPO's step length")
def check_trpo_step_length(fn):
    """``fn(direction (P,), F (P, P), delta)`` must return s = √(2δ / dᵀFd)."""
    gen = torch.Generator().manual_seed(4)
    B = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    F = B @ B.T + 0.2 * torch.eye(3, dtype=torch.float64)
    d = torch.randn(3, dtype=torch.float64, generator=gen)
    quad = float(d @ F @ d)
    want = math.sqrt(2 * 0.01 / quad)
    got = fn(d.clone(), F.clone(), 0.01)
    t = expect_scalar(got, "s")
    got = float(t)
    if near(t, math.sqrt(0.01 / quad), atol=1e-12):
        raise Wrong("the factor 2 is missing: the KL's quadratic model is ½ s² dᵀFd = δ")
    if near(t, 2 * 0.01 / quad, atol=1e-12):
        raise Wrong("take the square root: s² = 2δ / dᵀFd")
    expect(near(t, want, atol=1e-12), f"s: {fmt_pair(want, got)} (√(2δ / dᵀFd))")
    return "s = √(2δ / dᵀFd): the step lands on the trust region's boundary (quadratic model)"
