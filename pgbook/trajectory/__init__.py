"""The trajectory side of J(θ): what changes ∇log p_θ(τ) and which samples enter.

* :mod:`~pgbook.trajectory.tokens`: token log-probs from logits, response masks, entropy;
* :mod:`~pgbook.trajectory.losses`: policy losses (score function, importance-weighted,
  PPO clip and dual clip), ratios and the clip fraction;
* :mod:`~pgbook.trajectory.importance`: importance weights, IS estimates, effective
  sample size;
* :mod:`~pgbook.trajectory.corrections`: sampler/trainer mismatch corrections (TIS, MIS,
  sequence-level IS), and :mod:`~pgbook.trajectory.selection`: which samples enter (dynamic
  sampling, PODS down-sampling), chapter 14;
* :mod:`~pgbook.trajectory.distill`: distillation losses, a divergence to a teacher
  differentiated through π_θ (GKD's generalized JSD, MiniLLM; chapter 16).
"""

from . import corrections, distill, importance, losses, selection, tokens
from .importance import effective_sample_size, importance_weights, is_estimate
from .losses import (
    clip_fraction,
    importance_weighted_loss,
    log_ratio,
    ppo_clip_loss,
    ppo_dual_clip_loss,
    ratio,
    score_function_loss,
    token_pg_loss,
)
from .tokens import (
    causal_logprobs,
    entropy_from_logits,
    naive_token_logprobs,
    response_mask,
    sequence_logprob,
    token_logprobs,
)

__all__ = [
    "causal_logprobs",
    "clip_fraction",
    "corrections",
    "distill",
    "effective_sample_size",
    "entropy_from_logits",
    "importance",
    "importance_weighted_loss",
    "importance_weights",
    "is_estimate",
    "log_ratio",
    "losses",
    "naive_token_logprobs",
    "ppo_clip_loss",
    "ppo_dual_clip_loss",
    "ratio",
    "response_mask",
    "score_function_loss",
    "selection",
    "sequence_logprob",
    "token_logprobs",
    "token_pg_loss",
    "tokens",
]

# chapter 15: the policy-token mask of multi-turn trajectories, ratios, variance filtering
from . import agentic
from .agentic import reward_variance_filter, trajectory_log_ratio, trajectory_logprob

__all__ += ["agentic", "reward_variance_filter", "trajectory_log_ratio", "trajectory_logprob"]
