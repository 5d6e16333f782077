"""Exercises of chapter 03 (baselines and the advantage): the advantage table and the
variance-optimal state baseline."""

from __future__ import annotations

import torch

from ..reward.baselines import optimal_baseline_table
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect_close, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("03.k", fn)


def _world(seed: int):
    bandit = context_bandit()
    policy = TabularSoftmax(bandit.n_contexts, bandit.n_actions)
    theta = 1.5 * torch.randn(policy.n_params, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(seed))
    return bandit, policy, theta, policy.probs(theta)


@exercise("03.1", "The advantage A(s, a) = r(s, a) − V(s)")
def check_advantages(fn):
    """``fn(probs (S, A), means (S, A))`` must return A (S, A) with
    A(s, a) = r(s, a) − Σ_a' π(a'|s) r(s, a')."""
    bandit, _, _, probs = _world(0)
    want = bandit.advantages(probs)
    got = fn(probs.clone(), bandit.means.clone())
    expect_shape(got, (3, 4), "A")
    g = got.detach().to(torch.float64)
    if torch.allclose(g, bandit.means - bandit.means.mean(-1, keepdim=True)):
        raise Wrong("you subtract the plain mean of the row: V(s) weights each reward by π(a|s)")
    if torch.allclose(g, bandit.means - bandit.J(probs)):
        raise Wrong("you subtract J(θ), one constant for every context: V(s) is a value per context")
    expect_close(got, want, "A", atol=1e-12, hint="V(s) = Σ_a π(a|s) r(s, a), one value per row")
    zero = (probs * g).sum(-1).abs().max()
    return f"A matches, and Σ_a π(a|s) A(s, a) = 0 in every context (max {float(zero):.0e})"


@exercise("03.2", "The variance-optimal state baseline b*(s)")
def check_optimal_state_baseline(fn):
    """``fn(probs (S, A), means (S, A))`` must return b* (S,) with
    b*(s) = Σ_a π(a|s) ‖e_a − π‖² r(s, a) / Σ_a π(a|s) ‖e_a − π‖² (tabular softmax)."""
    for seed in (1, 2):
        bandit, policy, theta, probs = _world(seed)
        want = optimal_baseline_table(bandit, policy, theta)
        got = fn(probs.clone(), bandit.means.clone())
        expect_shape(got, (3,), "b*")
        g = got.detach().to(torch.float64)
        if torch.allclose(g, bandit.values(probs)):
            raise Wrong("you return V(s): b* weights each reward by π(a|s)‖e_a − π‖², not by "
                        "π(a|s) alone")
        sq = 1 - 2 * probs + probs.pow(2).sum(-1, keepdim=True)
        if torch.allclose(g, (sq * bandit.means).sum(-1) / sq.sum(-1)):
            raise Wrong("the policy's probabilities are missing from the weights: the "
                        "expectation over a ~ π adds a factor π(a|s)")
        expect_close(got, want, "b*", atol=1e-12,
                     hint="‖e_a − π‖² = 1 − 2π_a + ‖π‖²; weight r by π_a ‖e_a − π‖²")
    return "b*(s) matches the exact minimiser of tr Cov among state baselines"
