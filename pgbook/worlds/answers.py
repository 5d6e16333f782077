"""A one-prompt language model whose first token is the answer (chapter 13).

The smallest world in which a response has both an *answer* and a *length*: one prompt,
two content tokens ``a`` (the right answer) and ``b`` (a wrong one) and EOS. The first token
of a response is its answer; what follows (more ``a``/``b`` tokens) is its "reasoning", and
the response ends at EOS or is cut at the budget T (:class:`~pgbook.worlds.seqlm.SeqSpace`
with ``max_len = T``). The verifier reads the first token only, so the reward does not
depend on the length:

    R(y) = 1[y_1 = a]                       (:func:`answer_reward`)
    R(y) = 1[y_1 = a and y ended with EOS]   (``finished_only=True``: a cut response has no
                                              final answer, DAPO's overlong setting)

With a :class:`~pgbook.worlds.seqlm.TabularPolicy` every prefix has its own logits, so the
answer, the length of right answers and the length of wrong answers can each move on their
own: whatever an estimator does to the lengths is the estimator's doing, not the reward's.
Everything is enumerable (2^T − 1 + 2^T responses), so :mod:`pgbook.exact.reward_side`
computes exact expected updates on it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import (
    check_float_dtype,
    check_number,
    check_positive_int,
    check_probs,
    check_same_device,
    check_tensor,
)
from .seqlm import SeqReward, SeqSpace, Sequences, TabularPolicy, outcome_reward

__all__ = ["answer_head", "answer_policy", "answer_reward", "answer_space", "answer_stats"]


def answer_space(max_len: int = 8, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> SeqSpace:
    """One prompt ``x``, tokens ``a`` (right), ``b`` (wrong) and EOS ``⏎``, budget T =
    ``max_len`` ≥ 2 tokens (EOS included)."""
    T = check_positive_int(max_len, "max_len")
    if T < 2:
        raise ValueError(f"max_len: expected at least 2 (an answer and EOS), got {T}")
    check_float_dtype(dtype)
    try:
        rho = torch.ones(1, dtype=dtype, device=device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected a torch device such as 'cpu', got {device!r} "
                         f"({e})") from None
    return SeqSpace(tokens=("a", "b"), max_len=T, rho=rho, contexts=("x",))


def _check_space(space: SeqSpace) -> None:
    if not isinstance(space, SeqSpace) or space.token_names[:2] != ("a", "b") or space.X != 1:
        raise ValueError(f"space: expected the answer world of answer_space(), got {space!r}")


def answer_reward(space: SeqSpace, finished_only: bool = False) -> SeqReward:
    """R = 1 if the response's first token is ``a``, else 0 (and, with ``finished_only``,
    0 as well for a response cut at T without EOS). An outcome reward on the last token."""
    _check_space(space)
    if not isinstance(finished_only, bool):
        raise ValueError(f"finished_only: expected True or False, got {finished_only!r}")
    a, eos = 0, space.eos_id

    def fn(x, tokens, mask):
        right = tokens[..., 0] == a
        if finished_only:
            right = right & ((tokens == eos) & (mask > 0)).any(-1)
        return right

    name = "first token is a" + (" and the response ended" if finished_only else "")
    return outcome_reward(fn, name)


def answer_policy(space: SeqSpace, p_correct: float = 0.5, stop: float = 0.25,
                  first_stop: float = 0.01) -> tuple[TabularPolicy, Tensor]:
    """A :class:`TabularPolicy` on the answer world and its θ (dtype/device of the space):
    the first token is ``a`` with probability p(1 − f), ``b`` with (1 − p)(1 − f) and EOS
    (an empty response, scored wrong) with f = ``first_stop``; at every later position EOS
    has probability ``stop`` and ``a``, ``b`` share the rest. Right and wrong answers then
    have the same length distribution (geometric, cut at T)."""
    _check_space(space)
    for name, v in (("p_correct", p_correct), ("stop", stop), ("first_stop", first_stop)):
        if not 0 < check_number(v, name) < 1:
            raise ValueError(f"{name}: expected a probability strictly between 0 and 1, got {v}")
    policy = TabularPolicy(space)
    theta = policy.init(like=space.rho)
    table = theta.view(space.X, policy.n_prefixes, space.V)
    p, f = float(p_correct), float(first_stop)
    table[:, 0, 0] = math.log(p * (1 - f))
    table[:, 0, 1] = math.log((1 - p) * (1 - f))
    table[:, 0, space.eos_id] = math.log(f)
    table[:, 1:, space.eos_id] = math.log(2 * stop / (1 - stop))
    return policy, theta


def answer_head(policy: TabularPolicy) -> Tensor:
    """(P,) bool: the parameters of the first position (the answer distribution) of a
    tabular policy on the answer world; every other parameter shapes the length."""
    if not isinstance(policy, TabularPolicy):
        raise ValueError(f"policy: expected a TabularPolicy, got {type(policy).__name__}")
    _check_space(policy.space)
    head = torch.zeros(policy.space.X, policy.n_prefixes, policy.space.V, dtype=torch.bool,
                       device=policy.space.device)
    head[:, 0, :] = True
    return head.reshape(-1)


def answer_stats(space: SeqSpace, probs: Tensor, reward: SeqReward,
                 seqs: Sequences | None = None) -> dict:
    """Exact statistics of the answer world from p(y) over its enumeration (``seqs``, default
    ``space.enumerate()``; ``probs`` (N,)): 0-dim tensors ``p_correct`` (P(R = 1)),
    ``length_correct`` and ``length_wrong`` (E[L | R = 1], E[L | R = 0], with L the number
    of tokens including EOS), ``length`` (E[L]) and ``truncated`` (P(no EOS within T));
    and ``length_pmf`` (2, T + 1): row 0 P(L = l | wrong), row 1 P(L = l | right)."""
    _check_space(space)
    if not isinstance(reward, SeqReward):
        raise ValueError(f"reward: expected a SeqReward (answer_reward(space)), got "
                         f"{type(reward).__name__}")
    if seqs is None:
        seqs = space.enumerate()
    elif not isinstance(seqs, Sequences):
        raise ValueError(f"seqs: expected a Sequences batch (or None for the enumeration), got "
                         f"{type(seqs).__name__}")
    else:
        space.check(seqs.x, seqs.tokens, seqs.mask)
    check_tensor(probs, "probs", ndim=1, floating=True)
    if probs.shape[0] != len(seqs):
        raise ValueError(f"probs: expected one probability per enumerated response "
                         f"({len(seqs)}), got shape {tuple(probs.shape)}")
    check_same_device(probs=probs, tokens=seqs.tokens)
    check_probs(probs, "probs")     # one prompt: p(y) over its responses sums to 1
    R = reward.of(seqs).to(probs.dtype)
    L = seqs.mask.sum(-1).to(probs.dtype)
    T = space.T
    cut = ~((seqs.tokens == space.eos_id) & (seqs.mask > 0)).any(-1)
    tiny = torch.finfo(probs.dtype).tiny
    p = (probs * R).sum()
    pmf = torch.zeros(2, T + 1, dtype=probs.dtype, device=probs.device)
    pmf.index_put_((R.long(), L.long()), probs, accumulate=True)
    pmf = pmf / pmf.sum(-1, keepdim=True).clamp_min(tiny)
    return {
        "p_correct": p,
        "length_correct": (probs * R * L).sum() / p.clamp_min(tiny),
        "length_wrong": (probs * (1 - R) * L).sum() / (1 - p).clamp_min(tiny),
        "length": (probs * L).sum(),
        "truncated": (probs * cut.to(probs.dtype)).sum(),
        "length_pmf": pmf,
    }
