"""Exercises of chapter 13 (the reward side after GRPO)."""

from __future__ import annotations

import torch

from ..reward.advantages import opo_advantage, pkpo_advantage
from ..reward.shaping import soft_overlong_penalty
from . import Wrong, atol_for, exercise, expect, expect_close, expect_shape, fmt_distinct


def _binomial(p: float, G: int) -> torch.Tensor:
    K = torch.arange(G + 1, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    logc = torch.lgamma(G + one) - torch.lgamma(K + 1) - torch.lgamma(G - K + 1)
    return torch.exp(logc + K * torch.log(p * one) + (G - K) * torch.log((1 - p) * one))


@exercise("13.1", "Unbiased pass@k weights (PKPO)")
def check_pkpo(fn):
    """``fn(rewards, k)`` with ``rewards`` (G,) float64 0/1 (one group) and an int
    1 ≤ k ≤ G must return the advantages Â (G,) for which (1/G) Σ_i Â_i ∇log p(y_i) is an
    unbiased estimate of ∇pass@k: k for a correct response and k·ρ(G − 1, c, k − 1) for a
    wrong one, with c the number of correct responses and ρ(n, c, k) = 1 − C(n−c, k)/C(n, k)
    (no baseline)."""
    G = 6
    for k in (1, 2, 3, 6):
        # the exact per-problem weight of the reader's estimator: E[ĝ] = w(p) ∇p (chapter 08)
        for p in (0.2, 0.5, 0.8):
            pk = _binomial(p, G)
            w = torch.zeros((), dtype=torch.float64)
            for K in range(G + 1):
                r = torch.tensor([1.0] * K + [0.0] * (G - K), dtype=torch.float64)
                got = expect_shape(fn(r.clone(), k), (G,), f"fn(rewards with {K} correct, k={k})")
                atol = atol_for(got, 1e-9)
                got = got.detach().to(torch.float64)
                expect(bool(torch.isfinite(got).all()), f"k={k}, {K} correct: your advantages "
                                                         "hold NaN or inf")
                a_pos = got[0] if K > 0 else 0.0
                a_neg = got[-1] if K < G else 0.0
                w = w + pk[K] * (K * a_pos / p - (G - K) * a_neg / (1 - p)) / G
            want = k * (1 - p) ** (k - 1)
            if abs(float(w) - want) > atol:
                w_s, want_s = fmt_distinct(float(w), want, 4)
                raise Wrong(f"k={k}: at success probability p={p} your estimator's expected update "
                            f"is {w_s}·∇p, but ∇pass@k = k(1−p)^(k−1)∇p = {want_s}·∇p "
                            "(a wrong response should get k·ρ(G−1, c, k−1): the chance that k − 1 "
                            "others drawn from the remaining G − 1 contain a correct one)")
        for K in range(G + 1):
            r = torch.tensor([1.0] * K + [0.0] * (G - K), dtype=torch.float64)
            expect_close(fn(r.clone(), k), pkpo_advantage(r, G, k=k, baseline="none"),
                         f"k={k}, {K} correct", atol=1e-10)
    return "k for a correct response, k·ρ(G−1, c, k−1) for a wrong one: unbiased for ∇pass@k"


@exercise("13.2", "DAPO's soft overlong penalty")
def check_soft_overlong(fn):
    """``fn(lengths, max_tokens, cache)`` with ``lengths`` (n,) long must return the penalty
    (n,) float: 0 up to L_max − L_cache, ((L_max − L_cache) − L)/L_cache inside the last
    L_cache tokens of the budget, −1 beyond L_max."""
    for L_max, cache in ((20, 4), (10, 10), (8, 3)):
        lengths = torch.arange(0, L_max + 4)
        got = expect_shape(fn(lengths.clone(), L_max, cache), tuple(lengths.shape),
                           f"fn(lengths, {L_max}, {cache})")
        want = soft_overlong_penalty(lengths, L_max, cache).to(torch.float64)
        g = got.detach().to(torch.float64)
        if bool((g > 1e-12).any()):
            raise Wrong("the penalty is never positive: it only takes reward away from responses "
                        "that run into the last L_cache tokens of the budget")
        beyond = lengths > L_max
        if not torch.allclose(g[beyond], want[beyond]):
            raise Wrong(f"responses longer than L_max = {L_max} must get −1, got "
                        f"{g[beyond].tolist()}")
        expect_close(got, want, f"L_max={L_max}, L_cache={cache}", atol=1e-9,
                     hint="the ramp starts at 0 for L = L_max − L_cache and reaches −1 at L = L_max")
    return "0, then a linear ramp to −1 over the last L_cache tokens, −1 beyond the budget"


@exercise("13.3", "OPO's length-weighted baseline")
def check_opo(fn):
    """``fn(rewards, lengths)`` with ``rewards`` (G,) float64 and ``lengths`` (G,) long
    (one group) must return OPO's advantages R_i − Σ_j L_j R_j / Σ_j L_j, (G,)."""
    gen = torch.Generator().manual_seed(13)
    for G in (2, 4, 7):
        for _ in range(5):
            r = torch.rand(G, generator=gen, dtype=torch.float64).round()
            r[0] = 1.0 - r[1]                                       # not all equal
            lengths = torch.randint(1, 9, (G,), generator=gen)
            mask = (torch.arange(8)[None] < lengths[:, None]).to(torch.float64)
            want = opo_advantage(r, G, mask=mask)
            got = expect_shape(fn(r.clone(), lengths.clone()), (G,), f"fn(rewards, lengths), G={G}")
            plain = r - r.mean()
            if torch.allclose(got.detach().to(torch.float64), plain) and not torch.allclose(want, plain):
                raise Wrong("you subtracted the plain group mean (GRPO's baseline): OPO weights each "
                            "reward by its response's length")
            expect_close(got, want, f"G={G}", atol=1e-10,
                         hint="b = Σ_j L_j R_j / Σ_j L_j, the same baseline for the whole group")
    return "R_i − Σ_j L_j R_j / Σ_j L_j: chapter 03's optimal baseline with ‖∇log p‖² ∝ length"
