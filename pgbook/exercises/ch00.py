"""Exercises of chapter 00 (preface and map): J by enumeration, and the reward-side weight of
an aggregation."""

from __future__ import annotations

import torch

from ..aggregation import seq_mean_token_mean
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("00.k", fn)


@exercise("00.1", "J by enumeration")
def check_exact_objective(fn):
    """``fn(rho (S,), probs (S, A), rewards (S, A))`` must return the scalar
    J = Σ_s ρ(s) Σ_a π(a|s) r(s, a) (a 0-dim tensor)."""
    bandit = context_bandit()
    policy = TabularSoftmax(bandit.n_contexts, bandit.n_actions)
    for seed, scale in ((0, 1.0), (1, 3.0)):
        theta = scale * torch.randn(policy.n_params, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(seed))
        probs = policy.probs(theta)
        want = bandit.J(probs)
        got = fn(bandit.rho.clone(), probs.clone(), bandit.means.clone())
        got = expect_scalar(got, "J")
        g = float(got)
        unweighted = float((probs * bandit.means).sum(-1).mean())
        if abs(g - unweighted) < 1e-9 and abs(unweighted - float(want)) > 1e-6:
            raise Wrong("you average the contexts uniformly: weight each context's value by ρ(s)")
        if abs(g - float((probs * bandit.means).sum())) < 1e-9:
            raise Wrong("you sum over contexts without ρ(s): J = Σ_s ρ(s) Σ_a π(a|s) r(s, a)")
        if abs(g - float((bandit.rho[:, None] * bandit.means).sum())) < 1e-9:
            raise Wrong("the policy's probabilities are missing: weight r(s, a) by π(a|s)")
        expect_close(got, want, "J", atol=1e-12, hint="Σ_s ρ(s) Σ_a π(a|s) r(s, a)")
    return "J matches the exact double sum for two policies"


@exercise("00.2", "The reward-side weight of the per-sequence mean")
def check_sequence_weights(fn):
    """``fn(advantages (B,), mask (B, T))`` must return c (B,) with c_i = Â_i / (B |y_i|),
    |y_i| = Σ_t mask[i, t] and B the number of non-empty rows (an all-zero row is padding
    and gets c = 0): the scalar GRPO's per-sequence mean puts in front of ∇log p_θ(y_i)."""
    adv = torch.tensor([1.0, -0.5, 2.0, 0.7], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    # the truth, from the aggregation itself: ∂ loss / ∂ log p(y_i) with loss = seq-mean of −Â log π
    logp = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    seq_mean_token_mean(-adv[:, None] * logp, mask).backward()
    want = -logp.grad[:, 0]                        # every token of row i has the same coefficient
    got = fn(adv.clone(), mask.clone())
    expect_shape(got, (4,), "c")
    g = got.detach().to(torch.float64)
    lengths = mask.sum(-1)
    if torch.allclose(g[:3], adv[:3] / 4):
        raise Wrong("the length 1/|y_i| is missing (and B should count only the 3 non-empty rows)")
    if torch.allclose(g[:3], adv[:3] / 3):
        raise Wrong("the length 1/|y_i| is missing: each response's tokens are averaged first")
    if torch.allclose(g[:3], (adv / lengths.clamp_min(1))[:3]):
        raise Wrong("the mean over the B responses is missing: divide by B as well")
    if torch.allclose(g[:3], (adv / (4 * lengths.clamp_min(1)))[:3]):
        raise Wrong("B counts only the non-empty rows (3 here): an all-zero row is padding")
    expect(bool(torch.isfinite(g).all()), "c holds NaN or inf: the padding row has length 0, "
                                          "give it c = 0 instead of dividing by 0")
    expect_close(got, want, "c", atol=1e-12, hint="c_i = Â_i / (B |y_i|)")
    return "Â_i / (B |y_i|), padding excluded: the aggregation only rescales the reward side"
