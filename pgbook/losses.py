"""Trajectory-side pieces: how log π_θ enters the update.

Every policy loss here returns a *per-element* loss (one entry per sample in a bandit, one
per token in a language model) whose autograd gradient, after aggregation (a mean over
samples, or one of :mod:`pgbook.aggregation`'s token reductions), is the estimator the book
derives. Losses are to be *minimised*: the loss is minus the surrogate objective.

Shapes: ``logp``, ``old_logp``, ``advantages`` share one shape, (N,) or (B, T).
Advantages are treated as constants (detached): they weight samples, they are not trained.
All functions run on the device and dtype of their inputs.

Registered policy losses (kind ``"policy_loss"``, trajectory side) share the signature
``fn(logp, advantages, old_logp=None, **options) -> per-element loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import (
    check_finite,
    check_positive,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from .registry import register, register_label


def _check_pair(logp: Tensor, other: Tensor, name: str) -> None:
    check_tensor(logp, "logp", floating=True)
    check_tensor(other, name)
    check_same_shape(logp, other, "logp", name)
    check_same_device(logp=logp, **{name: other})


@register("policy_loss", "score_function", side="trajectory",
          summary="−sg(A)·log π: the log-derivative trick (REINFORCE)")
def score_function_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor | None = None) -> Tensor:
    """Per-element REINFORCE loss  ℓ_i = −sg(A_i) · log π_θ(a_i|s_i).

    Its gradient averaged over N samples is −ĝ with ĝ = (1/N) Σ_i A_i ∇log π_θ(a_i|s_i), the
    score-function estimator of ∇J. Factor of J(θ): trajectory (it differentiates log p_θ,
    not R). ``old_logp`` is accepted and ignored so all policy losses share one signature.
    """
    _check_pair(logp, advantages, "advantages")
    check_finite(advantages, "advantages")
    return -(advantages.detach().to(logp.dtype) * logp)


def log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """log r = log π_θ − log π_old (old detached); shape of the inputs."""
    _check_pair(logp, old_logp, "old_logp")
    check_finite(old_logp, "old_logp")
    return logp - old_logp.detach().to(logp.dtype)


def ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """Importance ratio r_θ = π_θ / π_old = exp(log π_θ − log π_old), computed in log space."""
    return torch.exp(log_ratio(logp, old_logp))


@register("policy_loss", "importance_weighted", side="trajectory",
          summary="−r_θ·A with r_θ = π_θ/π_old: the importance-sampled surrogate")
def importance_weighted_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor) -> Tensor:
    """ℓ = −r_θ · A, r_θ = π_θ/π_old. At θ = θ_old, ∇ℓ = −A ∇log π_θ: the policy gradient.

    Factor of J(θ): trajectory (samples come from π_old; the ratio re-weights them).
    """
    _check_pair(logp, advantages, "advantages")
    check_finite(advantages, "advantages")
    return -(ratio(logp, old_logp) * advantages.detach().to(logp.dtype))


@register("policy_loss", "ppo_clip", side="trajectory",
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
    Factor of J(θ): trajectory (a trust region on the ratio).
    """
    _check_pair(logp, advantages, "advantages")
    check_finite(advantages, "advantages")
    check_positive(eps_low, "eps_low")
    eps_high = eps_low if eps_high is None else check_positive(eps_high, "eps_high")
    if eps_low >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
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


def clip_fraction(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                  eps_high: float | None = None) -> Tensor:
    """Boolean (same shape): where the PPO clip is active, i.e. where the gradient is zero."""
    eps_high = eps_low if eps_high is None else eps_high
    r = ratio(logp, old_logp).detach()
    adv = advantages.detach()
    return ((adv > 0) & (r > 1 + eps_high)) | ((adv < 0) & (r < 1 - eps_low))


# -- KL estimators ------------------------------------------------------------------------
# With samples y ~ π_θ and log r = log π_ref(y) − log π_θ(y) (Schulman, 2020):
#   k1 = −log r,  k2 = ½ (log r)²,  k3 = r − 1 − log r.
# Each is an estimator of KL(π_θ ‖ π_ref) (k1, k3 unbiased, k2 biased); as *losses*
# their gradients differ (chapter 11): E∇k1 = 0, E∇k2 = ∇KL(π‖ref), E∇k3 = ∇KL(ref‖π).


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-element KL(π_θ‖π_ref) estimator k1, k2 or k3 on samples from π_θ.

    ``logp`` = log π_θ(y), ``ref_logp`` = log π_ref(y), same shape. Differentiable in
    ``logp`` (use it as a loss) — detach it to use the value in the reward.
    """
    _check_pair(logp, ref_logp, "ref_logp")
    check_finite(ref_logp, "ref_logp")
    lr = ref_logp.to(logp.dtype) - logp
    if kind == "k1":
        return -lr
    if kind == "k2":
        return 0.5 * lr * lr
    if kind == "k3":
        return torch.expm1(lr) - lr
    raise ValueError(f"kind: expected 'k1', 'k2' or 'k3', got {kind!r}")


register_label("kl", "none", side="trajectory", summary="no KL term")
register_label("kl", "kl_penalty", side="trajectory",
               summary="β·KL(π_old‖π_θ) subtracted from the surrogate (PPO-KL)")


# -- KL to a reference: in the loss (trajectory side) or in the reward (reward side) -------
# Per token t of response i, with logp = log π_θ(y_t|h_t) and ref_logp = log π_ref(y_t|h_t):
#   in the loss:   per-token loss  += β · k(logp, ref_logp)       (differentiable in logp)
#   in the reward: R_i ← R_i − β Σ_t m_{i,t} · sg[k1]             (a number, before advantages)
# Registered placements (kind "kl") share the signature fn(logp, ref_logp) -> per-token term;
# "k1_in_reward" is applied with :func:`kl_in_reward` instead.


def kl_in_reward(rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float,
                 kind: str = "k1") -> Tensor:
    """R_i − β Σ_t m_{i,t} · sg[k(log π_θ(y_t), log π_ref(y_t))], shape (N,).

    ``rewards`` (N,), ``logp``/``ref_logp``/``mask`` (N, T). With ``kind="k1"`` the summed
    term is Σ_t (log π_θ − log π_ref)(y_t) = log π_θ(y|x)/π_ref(y|x), whose expectation is
    KL(π_θ‖π_ref) of the whole response: R − β·k1 is the KL-regularised reward, and the
    score-function gradient of E[R − β log π_θ/π_ref] is the exact gradient of
    J − β·KL(π_θ‖π_ref) (chapter 11). The KL is detached: it changes the weight of
    ∇log p_θ(τ), not p_θ. Factor of J(θ): reward. Returned in the rewards' dtype.
    """
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_tensor(mask, "mask", ndim=2)
    _check_pair(logp, ref_logp, "ref_logp")
    check_same_shape(logp, mask, "logp", "mask")
    check_same_device(rewards=rewards, logp=logp, mask=mask)
    if logp.dim() != 2 or logp.shape[0] != rewards.shape[0]:
        raise ValueError(f"logp: expected shape ({rewards.shape[0]}, T) (one row per reward), "
                         f"got {tuple(logp.shape)}")
    check_finite(rewards, "rewards")
    beta = check_positive(beta, "beta", allow_zero=True)
    m = mask.to(torch.bool)
    lp = torch.where(m, logp.detach(), torch.zeros((), dtype=logp.dtype, device=logp.device))
    rl = torch.where(m, ref_logp.detach().to(logp.dtype),
                     torch.zeros((), dtype=logp.dtype, device=logp.device))
    k = torch.where(m, kl_estimate(lp, rl, kind), torch.zeros((), dtype=logp.dtype, device=logp.device))
    return rewards - (beta * k.sum(-1)).to(rewards.dtype)


@register("kl", "k1_in_reward", side="reward",
          summary="R − β·Σ_t sg[log π_θ − log π_ref]: KL-regularised reward")
def k1_in_reward(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """The per-token term sg[log π_θ − log π_ref] that :func:`kl_in_reward` sums and
    subtracts from R (detached: a number, not a loss)."""
    return kl_estimate(logp.detach(), ref_logp, "k1")


@register("kl", "k1_loss", side="trajectory", summary="+β·(log π_θ − log π_ref) in the loss")
def k1_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k1 = log π_θ − log π_ref as a loss term. Its expected gradient on samples
    from π_θ is zero (E[∇log π_θ] = 0): as a loss it does nothing on average (chapter 11)."""
    return kl_estimate(logp, ref_logp, "k1")


@register("kl", "k2_loss", side="trajectory", summary="+β·½(log π_θ − log π_ref)² in the loss")
def k2_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k2 = ½ (log π_ref − log π_θ)² as a loss term; its expected gradient is
    ∇KL(π_θ‖π_ref) (the reverse KL, for a single categorical step)."""
    return kl_estimate(logp, ref_logp, "k2")


@register("kl", "k3_loss", side="trajectory",
          summary="+β·(π_ref/π_θ − 1 − log π_ref/π_θ) in the loss (GRPO)")
def k3_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 = r − 1 − log r, r = π_ref/π_θ, as a loss term (DeepSeekMath's GRPO).
    An unbiased, non-negative estimate of KL(π_θ‖π_ref), but its expected gradient is
    ∇KL(π_ref‖π_θ), the forward KL (chapter 11)."""
    return kl_estimate(logp, ref_logp, "k3")
