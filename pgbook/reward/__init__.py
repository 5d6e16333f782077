"""The reward side of J(θ): what changes the scalar that weights ∇log p_θ(τ).

* :mod:`~pgbook.reward.baselines`: baselines on the bandit world (r − b), described once
  as specs that the Monte-Carlo and exact tools share;
* :mod:`~pgbook.reward.advantages`: group advantages (GRPO, Dr. GRPO, RLOO, ...), their
  broadcast to tokens, and token-level returns (reward-to-go);
* :mod:`~pgbook.reward.critic`: a critic V(h_t) as the baseline: TD residuals, GAE(λ) and
  the (clipped) value loss of PPO trainers;
* :mod:`~pgbook.reward.shaping`: reward shaping after the rollout (overlong responses) and
  token-level credit from the entropy (chapter 13);
* :mod:`~pgbook.reward.teacher`: a teacher's per-token log-ratio as a dense reward, mixed
  with group advantages, gated (on-policy distillation, chapter 16).
"""

from . import advantages, baselines, critic, shaping, teacher
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
from .critic import gae, td_residuals, value_loss, whiten

__all__ = [
    "advantage_stats",
    "advantages",
    "baseline_table",
    "baselines",
    "broadcast_to_tokens",
    "compute_advantages",
    "critic",
    "gae",
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
    "shaping",
    "state_table",
    "td_residuals",
    "teacher",
    "value_loss",
    "whiten",
    "zero_variance_groups",
]

# chapter 15: credit across turns (turn returns, MT-GRPO, GiGPO's anchor-state grouping)
from . import turns
from .turns import compute_turn_advantages, turn_returns, turns_to_tokens

__all__ += ["compute_turn_advantages", "turn_returns", "turns", "turns_to_tokens"]
