"""Which sampled responses enter the update: filtering, resampling and down-sampling.

These pieces decide *which* samples of p_θ(τ) the loss sees: a trajectory-side choice
(the expectation is taken over a different set of samples), even though the rule reads the
rewards. Chapter 14.

* DAPO's dynamic sampling (Yu et al. 2025, arXiv:2503.14476): a group whose G rewards are
  all equal has advantage 0 for every estimator with a baseline, so it adds nothing but
  cost; drop such groups and sample more prompts until the batch holds enough informative
  ones (:func:`dynamic_sampling_order` chooses the groups to keep; the trainers do the
  resampling and count the rollouts it costs).
* PODS' max-variance down-sampling (Xu et al. 2025, arXiv:2504.13818): sample n responses
  per prompt, train on the m of them whose rewards have the largest variance
  (:func:`max_variance_subset`).

Shapes: rewards (N,) in contiguous groups of G (N = n_groups · G), as everywhere in pgbook.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import check_positive_int, check_tensor
from ..reward.advantages import _grouped, zero_variance_groups

__all__ = ["dynamic_sampling_order", "informative_groups", "max_variance_subset"]


def informative_groups(rewards: Tensor, group_size: int) -> Tensor:
    """bool (N/G,): True for a group whose rewards are not all equal (it carries a gradient)."""
    return ~zero_variance_groups(rewards, group_size)


def dynamic_sampling_order(informative: Tensor, n_groups: int) -> Tensor:
    """The ``n_groups`` groups a dynamically sampled batch keeps, as indices into the groups
    generated so far (``informative``: bool (K,) over all K generated groups, in the order
    they were generated): the informative ones first, in order; if there are fewer than
    ``n_groups``, the batch is filled up with the first zero-variance ones (which carry no
    policy gradient, only cost). Long (n_groups,) on the input's device."""
    check_tensor(informative, "informative", ndim=1)
    if informative.dtype != torch.bool:
        raise ValueError(f"informative: expected a bool tensor, got dtype {informative.dtype}")
    n = check_positive_int(n_groups, "n_groups")
    if n > informative.shape[0]:
        raise ValueError(f"n_groups: expected at most the {informative.shape[0]} groups "
                         f"generated, got {n}")
    return torch.argsort((~informative).to(torch.int8), stable=True)[:n]


def max_variance_subset(rewards: Tensor, group_size: int, m: int) -> Tensor:
    """PODS' max-variance down-sampling: in every group of G rewards, the m (2 ≤ m ≤ G) whose
    sample variance is largest. Such a subset is always some of the lowest and the rest of
    the highest rewards (Xu et al. 2025), so the m + 1 splits are compared, per group, at
    once. Returns indices into ``rewards`` (N/G · m,), group by group (each group's m
    contiguous, ascending by reward), so ``rewards[idx]`` is a batch of groups of size m.
    Ties are broken by position. Factor of J(θ): trajectory (which samples enter)."""
    r = _grouped(rewards, group_size)                          # (n, G) work dtype
    G = r.shape[1]
    m = check_positive_int(m, "m")
    if not 2 <= m <= G:
        raise ValueError(f"m: expected 2 ≤ m ≤ group_size = {G}, got {m}")
    order = torch.argsort(r, dim=1, stable=True)              # (n, G) ascending
    s = torch.gather(r, 1, order)
    i = torch.arange(m + 1, device=r.device)                   # i lowest, m − i highest
    j = torch.arange(m, device=r.device)
    pos = torch.where(j[None, :] < i[:, None], j[None, :], G - m + j[None, :])   # (m+1, m)
    cand = s[:, pos]                                           # (n, m+1, m)
    best = cand.var(dim=-1).argmax(dim=-1)                     # (n,)
    chosen = torch.gather(order, 1, pos[best])                 # (n, m) positions in each group
    offsets = torch.arange(r.shape[0], device=r.device)[:, None] * G
    return (chosen + offsets).reshape(-1)
