"""Policy losses: how log π_θ enters the update (the trajectory side of J(θ)).

Every policy loss here returns a *per-element* loss (one entry per sample in a bandit, one
per token in a language model) whose autograd gradient, after aggregation (a mean over
samples, or one of :mod:`pgbook.aggregation`'s token reductions), is the estimator the book
derives. Losses are to be *minimised*: the loss is minus the surrogate objective.

    score_function        ℓ = −sg(A) log π_θ                      REINFORCE (chapter 02)
    importance_weighted   ℓ = −r_θ A,  r_θ = π_θ / π_old            off-policy (chapter 05)
    ppo_clip              ℓ = −min(r_θ A, clip(r_θ, 1−ε_low, 1+ε_high) A)   PPO (chapter 07)
    ppo_dual_clip         ppo_clip, with A < 0 terms capped at −c·A       (Ye et al. 2020)

Shapes: ``logp``, ``old_logp``, ``advantages`` share one shape, (N,) or (B, T).
Advantages are treated as constants (detached): they weight samples, they are not trained.
All functions run on the device and dtype of their inputs; log-probs and advantages must be
finite (mask padding first: :func:`pgbook.methods.policy_loss` does).

Overflow. A ratio is exp(log π_θ − log π_old) with the log-ratio clamped to [−20, 20] first
(:data:`pgbook._validate.LOG_RATIO_CLAMP`), as verl's ``compute_policy_loss_vanilla`` does: a
ratio is at most e²⁰ ≈ 4.9e8, never inf, and beyond the clamp its gradient is zero.

Registered policy losses (kind ``"policy_loss"``, form ``"token"``, trajectory side) share
the signature ``fn(logp, advantages, old_logp=None, **options) -> per-element loss``;
:func:`pgbook.methods.policy_loss` masks, aggregates and adds a KL term to any of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    LOG_RATIO_CLAMP,
    check_finite,
    check_finite_where,
    check_mask,
    check_pair,
    check_positive,
    check_same_device,
    check_tensor,
)
from ..aggregation import seq_mean_token_sum
from ..registry import register

__all__ = [
    "clip_fraction",
    "importance_weighted_loss",
    "log_ratio",
    "ppo_clip_loss",
    "ppo_dual_clip_loss",
    "ratio",
    "score_function_loss",
    "token_pg_loss",
]


@register("policy_loss", "score_function", side="trajectory", form="token",
          summary="−sg(A)·log π: the log-derivative trick (REINFORCE)")
def score_function_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor | None = None) -> Tensor:
    """Per-element REINFORCE loss  ℓ_i = −sg(A_i) · log π_θ(a_i|s_i).

    Its gradient averaged over N samples is −ĝ with ĝ = (1/N) Σ_i A_i ∇log π_θ(a_i|s_i), the
    score-function estimator of ∇J. Factor of J(θ): trajectory (it differentiates log p_θ,
    not R). ``old_logp`` is accepted and ignored so all policy losses share one signature.
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(logp, "logp")
    check_finite(advantages, "advantages")
    return -(advantages.detach().to(logp.dtype) * logp)


def log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """log r = log π_θ − log π_old (old detached); shape of the inputs (not clamped)."""
    check_pair(logp, old_logp, "logp", "old_logp")
    check_finite(logp, "logp")
    check_finite(old_logp, "old_logp")
    return logp - old_logp.detach().to(logp.dtype)


def ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """Importance ratio r_θ = π_θ / π_old = exp(clamp(log π_θ − log π_old, −20, 20)), computed
    in log space; the clamp (verl's) keeps it finite (module docstring)."""
    lr = log_ratio(logp, old_logp)
    return torch.exp(lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def _check_clip(eps_low: float, eps_high: float | None) -> tuple[float, float]:
    """ε_low in (0, 1) and ε_high > 0 (default ε_low)."""
    check_positive(eps_low, "eps_low")
    if eps_low >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
    eps_high = eps_low if eps_high is None else check_positive(eps_high, "eps_high")
    return float(eps_low), eps_high


@register("policy_loss", "importance_weighted", side="trajectory", form="token",
          summary="−r_θ·A with r_θ = π_θ/π_old: the importance-sampled surrogate")
def importance_weighted_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor) -> Tensor:
    """ℓ = −r_θ · A, r_θ = π_θ/π_old. At θ = θ_old, ∇ℓ = −A ∇log π_θ: the policy gradient.

    Factor of J(θ): trajectory (samples come from π_old; the ratio re-weights them).
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(advantages, "advantages")
    return -(ratio(logp, old_logp) * advantages.detach().to(logp.dtype))


@register("policy_loss", "ppo_clip", side="trajectory", form="token",
          summary="−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A) (optionally dual-clipped)")
def ppo_clip_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float = 0.2,
                  eps_high: float | None = None, dual_clip: float | None = None) -> Tensor:
    """PPO's clipped surrogate, per element:

        ℓ = −min( r·A, clip(r, 1 − ε_low, 1 + ε_high)·A ),      r = π_θ / π_old.

    With ``dual_clip = c > 1`` (Ye et al. 2020), for A < 0 the loss is further capped at
    −c·A, so a huge ratio on a bad action cannot produce an unbounded update:
    ℓ = min(ℓ, −c·A) where A < 0.

    The gradient is zero wherever the clipped branch is active (r outside the range on the
    side where it would increase the surrogate). ``eps_high`` defaults to ``eps_low``
    (symmetric clip); ``eps_high > eps_low`` is DAPO's clip-higher.

    Convention: the dual clip is *off* unless asked for (PPO as Schulman et al. 2017 state
    it, and TRL's GRPO loss). verl's ``compute_policy_loss_vanilla`` always applies it with
    c = ``clip_ratio_c`` = 3: that loss is :func:`ppo_dual_clip_loss` (the registered
    ``"ppo_dual_clip"``), equal to verl's per-token loss.
    Factor of J(θ): trajectory (a trust region on the ratio).
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(advantages, "advantages")
    eps_low, eps_high = _check_clip(eps_low, eps_high)
    adv = advantages.detach().to(logp.dtype)
    r = ratio(logp, old_logp)
    unclipped = r * adv
    clipped = torch.clamp(r, 1.0 - eps_low, 1.0 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    if dual_clip is not None:
        c = check_positive(dual_clip, "dual_clip")
        if c <= 1:
            raise ValueError(f"dual_clip: expected a number > 1, got {c}")
        loss = torch.where(adv < 0, torch.minimum(loss, -c * adv), loss)
    return loss


@register("policy_loss", "ppo_dual_clip", side="trajectory", form="token",
          summary="PPO clip with the dual clip: A < 0 terms capped at −c·A")
def ppo_dual_clip_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float = 0.2,
                       eps_high: float | None = None, dual_clip: float = 3.0) -> Tensor:
    """:func:`pgbook.trajectory.losses.ppo_clip_loss` with the dual clip on (Ye et al. 2020): for
    A < 0 the loss is at most −c·A, so one sample with a huge ratio on a bad action cannot
    dominate the update. With the default c = 3 this is verl's ``compute_policy_loss_vanilla``
    per token (verl applies the dual clip always; its log-ratio clamp is pgbook's too).
    Factor of J(θ): trajectory."""
    return ppo_clip_loss(logp, advantages, old_logp, eps_low=eps_low, eps_high=eps_high,
                         dual_clip=dual_clip)


def clip_fraction(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                  eps_high: float | None = None) -> Tensor:
    """Boolean (same shape): where the PPO clip is active, i.e. where the gradient is zero:
    (A > 0 and r > 1 + ε_high) or (A < 0 and r < 1 − ε_low). Same checks as
    :func:`ppo_clip_loss` (shapes, devices, finite values, the clip range)."""
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(advantages, "advantages")
    eps_low, eps_high = _check_clip(eps_low, eps_high)
    r = ratio(logp, old_logp).detach()
    adv = advantages.detach()
    return ((adv > 0) & (r > 1 + eps_high)) | ((adv < 0) & (r < 1 - eps_low))


def token_pg_loss(token_logp: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """The token-level REINFORCE surrogate (a scalar to minimise):

        loss = −(1/B) Σ_b Σ_t m_bt · sg(w_bt) · log π_θ(y_bt | h_bt),

    whose −∇ is ĝ = (1/B) Σ_b Σ_t m_bt w_bt ∇log π_θ(y_bt|h_bt): a sum over a response's
    tokens, a mean over responses (:func:`pgbook.aggregation.seq_mean_token_sum` of
    :func:`pgbook.trajectory.losses.score_function_loss`). Shapes (B, T); positions where the
    mask is 0 may hold anything (NaN, ±inf) in ``token_logp`` and ``weights``: they are
    replaced by 0 before the product. Factor: trajectory
    (∇ log p_θ(y|x) = Σ_t ∇ log π_θ(y_t|h_t)).
    """
    check_tensor(token_logp, "token_logp", ndim=2, floating=True)
    check_pair(token_logp, weights, "token_logp", "weights")
    check_mask(mask, "mask", tuple(token_logp.shape))
    check_same_device(token_logp=token_logp, mask=mask)
    check_finite_where(token_logp, mask, "token_logp")
    check_finite_where(weights, mask, "weights")
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=token_logp.dtype, device=token_logp.device)
    lp = torch.where(m, token_logp, zero)
    w = torch.where(m, weights.detach().to(token_logp.dtype), zero)
    return seq_mean_token_sum(score_function_loss(lp, w), mask)
