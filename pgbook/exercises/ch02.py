"""Exercises of chapter 02 (the policy gradient): the softmax score, the REINFORCE estimate
from a batch, and the exact one-sample total variance."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..exact.bandits import exact_estimator_moments, exact_gradient, softmax_score
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect_close, expect_scalar, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("02.k", fn)


@exercise("02.1", "The score of a softmax policy")
def check_softmax_score(fn: Callable) -> str:
    """``fn(probs, a)`` with ``probs`` (A,) the policy π(·|s) of one context and ``a`` an
    action index (int) must return ∇_z log π(a|s) = e_a − π (A,): the gradient of the
    log-probability with respect to that context's logits z."""
    bandit = context_bandit()
    policy = TabularSoftmax(bandit.n_contexts, bandit.n_actions)
    theta = torch.linspace(-1.0, 1.5, policy.n_params, dtype=torch.float64)
    probs = policy.probs(theta)
    for s in range(bandit.n_contexts):
        for a in range(bandit.n_actions):
            want = softmax_score(probs, torch.tensor(s), torch.tensor(a))[s]
            got = fn(probs[s].clone(), a)
            if isinstance(got, torch.Tensor) and got.shape == want.shape and \
                    torch.allclose(got.to(want.dtype), probs[s]):
                raise Wrong("you return π itself: the score is e_a − π, the one-hot of the "
                            "action minus the probabilities")
            expect_close(got, want, f"score for s={s}, a={a}",
                         hint="∇_z log softmax(z)_a = e_a − softmax(z)")
    return "e_a − π for every context and action, and it sums to zero over actions"


def _batch(seed: int, n: int = 64):
    bandit = context_bandit()
    policy = TabularSoftmax(bandit.n_contexts, bandit.n_actions)
    theta = torch.randn(policy.n_params, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    probs = policy.probs(theta)
    batch = bandit.sample(probs, n, torch.Generator().manual_seed(seed + 1))
    return bandit, policy, theta, probs, batch


@exercise("02.2", "The REINFORCE estimate from a batch")
def check_reinforce_estimate(fn):
    """``fn(probs (S, A), s (N,), a (N,), r (N,))`` must return the (S, A) table
    ĝ = (1/N) Σ_i r_i ∇_θ log π(a_i|s_i) for a tabular softmax (θ laid out as (S, A))."""
    for seed in (0, 7):
        _, _, _, probs, batch = _batch(seed)
        want = (batch.r[:, None, None] * softmax_score(probs, batch.s, batch.a)).mean(0)
        got = fn(probs.clone(), batch.s.clone(), batch.a.clone(), batch.r.clone())
        expect_shape(got, tuple(probs.shape), "ĝ")
        g = got.detach().to(torch.float64)
        n = batch.s.shape[0]
        if torch.allclose(g, want * n):
            raise Wrong("you sum over the batch: average it (divide by N)")
        unweighted = softmax_score(probs, batch.s, batch.a).mean(0)
        if torch.allclose(g, unweighted):
            raise Wrong("the rewards are missing: each score is weighted by its sample's reward r_i")
        expect_close(got, want, "ĝ", atol=1e-12,
                     hint="row s_i of sample i is r_i (e_{a_i} − π(·|s_i)); other rows are 0")
    # and on average it is ∇J: the estimator the chapter derives, not just a formula
    return "(1/N) Σ r_i (e_{a_i} − π(·|s_i)) in row s_i, on two batches"


@exercise("02.3", "The exact one-sample total variance")
def check_total_variance(fn):
    """``fn(rho (S,), probs (S, A), means (S, A))`` must return the scalar tr Σ =
    Σ_s ρ(s) Σ_a π(a|s) r(s, a)² ‖e_a − π(·|s)‖² − ‖∇J‖² (tabular softmax, no noise)."""
    bandit, policy, theta, probs, _ = _batch(3)
    _, cov = exact_estimator_moments(bandit, policy, theta)
    want = torch.diagonal(cov).sum()
    got = fn(bandit.rho.clone(), probs.clone(), bandit.means.clone())
    got = expect_scalar(got, "tr Σ")
    g = float(got)
    grad = exact_gradient(bandit, policy, theta)
    if abs(g - (float(want) + float(grad.pow(2).sum()))) < 1e-10:
        raise Wrong("you return the second moment E‖ĝ‖²: subtract ‖∇J‖² (the squared mean)")
    sq_norm_wrong = (bandit.rho[:, None] * probs * bandit.means ** 2).sum() - grad.pow(2).sum()
    if abs(g - float(sq_norm_wrong)) < 1e-10:
        raise Wrong("the score's squared norm ‖e_a − π‖² = 1 − 2π_a + ‖π‖² is missing")
    expect_close(got, want, "tr Σ", atol=1e-12,
                 hint="E[r² ‖e_a − π‖²] − ‖∇J‖², with ∇J's row s equal to ρ(s) π (r − V(s))")
    return "tr Σ matches the exact covariance of the one-sample estimator"
