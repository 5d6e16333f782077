"""Exercises of chapter 01 (the objective): a numerically stable softmax and the exact
variance of one sampled reward."""

from __future__ import annotations

import torch

from ..worlds.bandits import TabularSoftmax, noisy_bandit
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("01.k", fn)


@exercise("01.1", "A numerically stable softmax")
def check_softmax(fn):
    """``fn(logits (..., A))`` must return softmax over the last dimension, same shape,
    finite even for logits in the thousands."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    got = fn(z.clone())
    expect_shape(got, (3, 4), "probabilities")
    g = got.detach().to(torch.float64)
    if bool(torch.isfinite(g).all()) and torch.allclose(g.sum(0), torch.ones(4, dtype=g.dtype)) \
            and not torch.allclose(g.sum(-1), torch.ones(3, dtype=g.dtype)):
        raise Wrong("you normalised over the first dimension: softmax runs over the last one "
                    "(the actions), dim=-1")
    expect_close(got, torch.softmax(z, -1), "softmax of moderate logits", atol=1e-12,
                 hint="exp(z) / Σ exp(z) over the last dimension")
    big = torch.tensor([[1000.0, 999.0, 0.0], [-1000.0, -1001.0, -1002.0]], dtype=torch.float64)
    got = fn(big.clone())
    expect_shape(got, (2, 3), "probabilities of large logits")
    expect(bool(torch.isfinite(got).all()),
           "logits of ±1000 give NaN or inf: exp overflows; subtract the largest logit of each "
           "row before exponentiating (it does not change the softmax)")
    expect_close(got, torch.softmax(big, -1), "softmax of large logits", atol=1e-12)
    one = fn(torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    expect_close(one, torch.full((3,), 1 / 3, dtype=torch.float64), "softmax of a 1-D vector",
                 atol=1e-12, hint="it must work for any number of leading dimensions")
    return "softmax over the last dimension, stable for logits of ±1000"


@exercise("01.2", "The variance of one sampled reward")
def check_reward_variance(fn):
    """``fn(rho (S,), probs (S, A), means (S, A), noise_std)`` must return the scalar
    σ_r² = Σ_s ρ(s) Σ_a π(a|s) (r(s, a)² + noise_std²) − J²."""
    bandit = noisy_bandit(0.5)
    policy = TabularSoftmax(bandit.n_contexts, bandit.n_actions)
    theta = torch.randn(policy.n_params, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
    probs = policy.probs(theta)
    want = bandit.reward_variance(probs)
    got = fn(bandit.rho.clone(), probs.clone(), bandit.means.clone(), 0.5)
    got = expect_scalar(got, "σ_r²")
    g, w = float(got), float(want)
    J = float(bandit.J(probs))
    if abs(g - (w + J * J)) < 1e-9:
        raise Wrong("you return the second moment E[r²]: subtract J² to get the variance")
    if abs(g - (w - 0.25)) < 1e-9:
        raise Wrong("the reward noise is missing: every sampled reward adds noise_std² to E[r²]")
    if abs(g - (w + 0.5 - 0.25)) < 1e-9:
        raise Wrong("add the noise's variance noise_std², not its standard deviation")
    expect_close(got, want, "σ_r²", atol=1e-12,
                 hint="Σ_s ρ Σ_a π (r² + σ²) − J², with J = Σ_s ρ Σ_a π r")
    return "σ_r² matches the exact variance of one reward (noise included)"
