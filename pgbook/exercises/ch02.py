"""Exercises of chapter 02 (the policy gradient)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..exact.bandits import softmax_score
from ..worlds.bandits import TabularSoftmax, context_bandit
from . import Wrong, exercise, expect_close

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
