"""The reward side of J(θ): what changes the scalar that weights ∇log p_θ(τ).

* :mod:`~pgbook.reward.baselines`: baselines on the bandit world (r − b), described once
  as specs that the Monte-Carlo and exact tools share;
* :mod:`~pgbook.reward.advantages`: group advantages (GRPO, Dr. GRPO, RLOO, ...), their
  broadcast to tokens, and token-level returns (reward-to-go).
"""

from . import advantages, baselines
from .advantages import (
    advantage_stats,
    broadcast_to_tokens,
    compute_advantages,
    group_by_index,
    group_mean_batch_std_seq_advantage,
    grpo_advantage,
    grpo_mean_advantage,
    plain_advantage,
    reinforce_pp_baseline_advantage,
    reward_to_go,
    rloo_advantage,
    zero_variance_groups,
)
from .baselines import (
    baseline_table,
    get_baseline,
    optimal_baseline_table,
    optimal_constant_baseline,
    sample_weights,
    state_table,
)

__all__ = [
    "advantage_stats",
    "advantages",
    "baseline_table",
    "baselines",
    "broadcast_to_tokens",
    "compute_advantages",
    "get_baseline",
    "group_by_index",
    "group_mean_batch_std_seq_advantage",
    "grpo_advantage",
    "grpo_mean_advantage",
    "optimal_baseline_table",
    "optimal_constant_baseline",
    "plain_advantage",
    "reinforce_pp_baseline_advantage",
    "reward_to_go",
    "rloo_advantage",
    "sample_weights",
    "state_table",
    "zero_variance_groups",
]
