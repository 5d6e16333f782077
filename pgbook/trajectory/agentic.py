"""The trajectory side of multi-turn training: which tokens, and which episodes, enter.

In p_θ(τ) = ρ(x) Π_k π_θ(a_k|h_k) P(o_k|h_k, a_k) only the policy's tokens carry θ, so

* the log-probability of a trajectory, and its gradient, is a sum over the **policy-token
  mask** m (:func:`trajectory_logprob`): the environment's factors are constants;
* an importance ratio between two policies needs no environment model at all: the
  environment's factors cancel,

      p_θ(τ) / p_μ(τ) = exp( Σ_t m_t [log π_θ(y_t|h_t) − log μ_t(y_t|h_t)] )

  (:func:`trajectory_log_ratio`), with μ_t the policy that sampled token t: with slow,
  asynchronous environments different turns of one episode may come from different,
  stale policies, and recording each token's sampling log-prob keeps the ratio exact;
* **reward-variance filtering** (:func:`reward_variance_filter`) keeps only the groups whose
  rewards vary (RAGEN's StarPO-S, Wang et al. 2025, arXiv:2504.20073; the SNR-aware
  filtering of RAGEN-2, arXiv:2604.06268): which samples enter the update.

Factor of J(θ): trajectory. Shapes: N episodes, T tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_mask,
    check_pair,
    check_positive,
    check_positive_int,
    check_tensor,
    work_dtype,
)

__all__ = ["reward_variance_filter", "trajectory_log_ratio", "trajectory_logprob"]


def trajectory_logprob(token_logp: Tensor, policy_mask: Tensor, env_logp: Tensor | None = None
                       ) -> Tensor:
    """log p_θ(τ) = env_logp + Σ_t m_t log π_θ(y_t|h_t), shape (N,).

    ``token_logp`` (N, T): the model's log-probability of every token (observation tokens
    included, as a teacher-forced pass gives them); ``policy_mask`` (N, T) 0/1: the tokens
    the policy sampled; ``env_logp`` (N,) the θ-free log-factors (default 0: the part of
    log p_θ(τ) that depends on θ). Masked positions contribute exactly 0, even if they hold
    −inf or NaN. Its gradient is Σ_t m_t ∇log π_θ(y_t|h_t): the environment's tokens never
    reach it. Factor of J(θ): trajectory.
    """
    check_tensor(token_logp, "token_logp", ndim=2, floating=True)
    check_mask(policy_mask, "policy_mask", tuple(token_logp.shape))
    m = policy_mask.to(torch.bool)
    out = torch.where(m, token_logp, torch.zeros_like(token_logp)).sum(-1)
    if env_logp is None:
        return out
    check_tensor(env_logp, "env_logp", ndim=1, floating=True)
    if env_logp.shape != out.shape:
        raise ValueError(f"env_logp: expected shape {tuple(out.shape)} (one per episode), got "
                         f"{tuple(env_logp.shape)}")
    check_finite(env_logp, "env_logp")
    return out + env_logp.to(out.dtype)


def trajectory_log_ratio(logp: Tensor, old_logp: Tensor, policy_mask: Tensor) -> Tensor:
    """log [p_θ(τ) / p_μ(τ)] = Σ_t m_t (log π_θ(y_t|h_t) − log μ_t(y_t|h_t)), shape (N,).

    The environment's factors cancel, so only the policy's tokens enter (a ratio that also
    counts observation tokens, π_θ(o)/μ(o), is not a ratio of trajectory probabilities).
    ``old_logp`` (N, T) holds each token's log-prob under the policy that sampled it (turns
    of one episode may come from different stale policies). Masked positions may hold
    anything. Factor of J(θ): trajectory.
    """
    check_pair(logp, old_logp, "logp", "old_logp")
    check_tensor(logp, "logp", ndim=2, floating=True)
    check_mask(policy_mask, "policy_mask", tuple(logp.shape))
    m = policy_mask.to(torch.bool)
    d = logp - old_logp.to(logp.dtype)
    return torch.where(m, d, torch.zeros_like(d)).sum(-1)


def reward_variance_filter(rewards: Tensor, group_size: int, keep_fraction: float = 0.25,
                           min_std: float = 0.0) -> Tensor:
    """Keep the ``keep_fraction`` of groups whose rewards vary most: bool (N,), True on every
    episode of a kept group.

    Groups (contiguous, G = ``group_size``) are ranked by the standard deviation of their
    rewards; the top ⌈keep_fraction · n_groups⌉ are kept (ties broken by group order), and
    groups with std ≤ ``min_std`` are dropped whatever their rank (with ``min_std = 0``,
    groups whose G rewards are all equal never enter: they carry no signal). StarPO-S keeps
    the top 25 % by this measure. Factor of J(θ): trajectory (which samples enter).
    """
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    G = check_positive_int(group_size, "group_size")
    N = rewards.shape[0]
    if N == 0 or N % G:
        raise ValueError(f"group_size: expected a divisor of the number of rewards N = {N}, "
                         f"got G = {G}")
    check_finite(rewards, "rewards")
    f = check_positive(keep_fraction, "keep_fraction")
    if f > 1:
        raise ValueError(f"keep_fraction: expected a fraction in (0, 1], got {keep_fraction}")
    check_positive(min_std, "min_std", allow_zero=True)
    r = rewards.to(work_dtype(rewards.dtype)).view(-1, G)
    sd = r.std(1) if G > 1 else torch.zeros_like(r[:, 0])
    n_groups = r.shape[0]
    k = max(1, math.ceil(f * n_groups - 1e-9))
    order = torch.sort(-sd, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_groups, device=r.device)
    keep = (rank < k) & (sd > min_std)
    return keep.repeat_interleave(G)
