"""Exercises of chapter 08 (GRPO on bandits: the group is the baseline)."""

from __future__ import annotations

import torch

from ..exact.groups import binomial_zero_variance
from ..reward.advantages import grpo_advantage, rloo_advantage
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape, fmt_pair, near

# contiguous groups: a mixed group, a zero-variance group, a group of non-binary rewards
_REWARDS = {
    4: torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.9, 0.4, 0.5,
                     0.0, 0.0, 1.0, 0.0], dtype=torch.float64),
    3: torch.tensor([0.3, 0.3, 0.3, 1.0, 0.0, 0.5, 2.0, -1.0, 0.0], dtype=torch.float64),
}


def _call(fn, r, G, what):
    got = fn(r.clone(), G)
    return expect_shape(got, tuple(r.shape), what)


@exercise("08.1", "GRPO's group advantage")
def check_group_advantage(fn):
    """``fn(rewards, G)``: ``rewards`` (N,) float64 in contiguous groups of G (group k is
    ``rewards[k*G:(k+1)*G]``) must return Â_i = (R_i − μ_G)/σ_G, shape (N,), with σ_G the
    Bessel-corrected group standard deviation (÷ (G − 1), as TRL and verl compute it) and
    Â = 0 for a group whose rewards are all equal. Adding an ε ≤ 1e-4 to σ_G is fine."""
    for G, r in _REWARDS.items():
        got = _call(fn, r, G, f"advantages (G = {G})")
        expect(bool(torch.isfinite(got).all()),
               f"G = {G}: NaN or inf: a group whose rewards are all equal has σ_G = 0; its "
               "advantages must be 0, not 0/0")
        sums = got.detach().to(torch.float64).view(-1, G).sum(1)
        expect(bool((sums.abs() < 1e-6).all()),
               f"G = {G}: the advantages of group(s) {torch.nonzero(sums.abs() >= 1e-6).flatten().tolist()} "
               "do not sum to zero: subtract each group's own mean (not the batch mean)")
        want = grpo_advantage(r, G, std_eps=0.0)
        pop = grpo_advantage(r, G, std_eps=0.0, unbiased=False)
        if torch.allclose(got.detach().to(torch.float64), pop, atol=1e-3, rtol=1e-3):
            raise Wrong(f"G = {G}: you divide by the population standard deviation (÷ G); "
                        "GRPO as TRL and verl compute it uses Bessel's correction (÷ (G − 1)): "
                        "torch.std's default")
        expect_close(got, want, f"advantages (G = {G})", atol=1e-3, rtol=1e-3,
                     hint="Â_i = (R_i − mean of its group) / (std of its group), 0 in a group "
                          "with all rewards equal")
    return "the z-score within each group, Bessel's std, 0 in zero-variance groups"


@exercise("08.2", "The leave-one-out baseline (RLOO)")
def check_rloo(fn):
    """``fn(rewards, G)``: ``rewards`` (N,) in contiguous groups of G ≥ 2 must return
    Â_i = R_i − (1/(G − 1)) Σ_{j≠i} R_j, shape (N,): the baseline of each sample is the mean
    of the *other* G − 1 rewards of its group, so it does not depend on the sample's own
    action and the estimator is unbiased."""
    for G, r in _REWARDS.items():
        got = _call(fn, r, G, f"advantages (G = {G})")
        want = rloo_advantage(r, G)
        g = got.detach().to(torch.float64)
        if torch.allclose(g, want * (G - 1) / G, atol=1e-10, rtol=1e-8):
            raise Wrong(f"G = {G}: you subtract the group mean, which includes R_i itself "
                        "(the estimate is then (G−1)/G of the unbiased one): leave R_i out of "
                        "its own baseline")
        others = r.view(-1, G).sum(1, keepdim=True) - r.view(-1, G)
        if torch.allclose(g, (r.view(-1, G) - others / G).reshape(-1), atol=1e-10, rtol=1e-8):
            raise Wrong(f"G = {G}: you divide the sum of the other rewards by G; there are "
                        "G − 1 of them")
        expect_close(got, want, f"advantages (G = {G})", atol=1e-10,
                     hint="R_i minus the mean of the other G − 1 rewards of its group")
    return "R_i minus the mean of the other G − 1 rewards, for G = 3 and 4"


@exercise("08.3", "What dynamic sampling does to the expected gradient")
def check_dynamic_sampling_scale(fn):
    """``fn(p, rho, G)``: contexts s with 0/1 rewards, success probabilities ``p`` (S,) and
    context probabilities ``rho`` (S,), groups of G. Dynamic sampling discards every group
    whose G rewards are all equal and draws again until the batch is full. Return the number
    c (a float or a 0-dim tensor) such that E[ĝ with dynamic sampling] = c · E[ĝ] for any
    group estimator with a baseline (silent groups contribute exactly 0)."""
    cases = [(torch.tensor([0.02, 0.1, 0.5, 0.9, 0.98], dtype=torch.float64),
              torch.full((5,), 0.2, dtype=torch.float64), 8),
             (torch.tensor([0.05, 0.6, 0.99], dtype=torch.float64),
              torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), 4)]
    for p, rho, G in cases:
        got = fn(p.clone(), rho.clone(), G)
        if isinstance(got, torch.Tensor) and got.dim() != 0:
            raise Wrong(f"c: expected one number (a 0-dim tensor), got a tensor of shape "
                        f"{tuple(got.shape)} (one factor for the whole batch, not one per "
                        "context)")
        t = expect_scalar(got, "c")
        got = float(t)
        silent = float(rho @ binomial_zero_variance(p, G))
        want = 1.0 / (1.0 - silent)
        if near(t, 1.0 - silent, atol=1e-9):
            raise Wrong("you return 1 − P(silent): the kept groups are fewer, but each kept "
                        "batch is full, so the expected gradient grows by 1/(1 − P(silent))")
        unweighted = 1.0 / (1.0 - float(binomial_zero_variance(p, G).mean()))
        if near(t, unweighted, atol=1e-9) and abs(unweighted - want) > 1e-9:
            raise Wrong("you average the silent probability over contexts without ρ(s): "
                        "P(silent) = Σ_s ρ(s) (p_s^G + (1 − p_s)^G)")
        expect(near(t, want, atol=1e-9),
               f"for G = {G} {fmt_pair(want, got)} (hint: E[ĝ | kept] per "
               "context is E[ĝ_s]/(1 − q_s), and contexts are kept in proportion to "
               "ρ(s)(1 − q_s))")
    return ("c = 1/(1 − Σ_s ρ(s)(p_s^G + (1 − p_s)^G)): a longer step in the same expected "
            "direction")
