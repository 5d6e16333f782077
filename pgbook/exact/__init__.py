"""Exact analysis on the enumerable worlds, and statistics of Monte-Carlo estimates.

* :mod:`~pgbook.exact.stats`: many estimates at a fixed θ and their statistics
  (:class:`EstimatorStats`), cosine and relative error against the exact gradient;
* :mod:`~pgbook.exact.bandits`: J, ∇J, the exact moments of the score-function estimator,
  baseline bias, the KL between two bandit policies (Part I);
* :mod:`~pgbook.exact.offpolicy`: importance sampling's exact variance and bias (chapter 05);
* :mod:`~pgbook.exact.proximal`: Fisher information, natural gradient, proximal steps
  (chapter 06);
* :mod:`~pgbook.exact.groups`: exact moments of group estimators (chapter 08);
* :mod:`~pgbook.exact.seqlm`: J, ∇J, KLs and estimator moments on the enumerable LM
  (chapters 09 on);
* :mod:`~pgbook.exact.critic`: exact V, Q and A over prefixes, learned critics, and the exact
  bias and variance of GAE(λ) policy gradients (chapter 10).
* :mod:`~pgbook.exact.reward_side`: the expected update of any group advantage under any
  aggregation, greedy responses, prefix values, pass@k and Monte-Carlo group estimates on
  the enumerable LM (chapter 13).
* :mod:`~pgbook.exact.trajectory`: entropy along a run, batched loss gradients from the
  score table, the exact update under a mismatched sampler (chapter 14).
"""

from . import bandits, critic, groups, offpolicy, proximal, reward_side, seqlm, stats, trajectory
from .stats import EstimatorStats, cosine, estimates_from_loss, relative_error, variance_difference

__all__ = [
    "EstimatorStats",
    "bandits",
    "cosine",
    "critic",
    "estimates_from_loss",
    "groups",
    "offpolicy",
    "proximal",
    "relative_error",
    "reward_side",
    "seqlm",
    "stats",
    "trajectory",
    "variance_difference",
]

# chapter 15: exact analysis on the enumerable multi-turn tool world
from . import agentic

__all__ += ["agentic"]
