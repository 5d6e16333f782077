"""KL to a reference policy: a regulariser whose *placement* decides its side of J(θ).

With samples y ~ π_θ and log r = log π_ref(y) − log π_θ(y) (Schulman 2020):

    k1 = −log r,      k2 = ½ (log r)²,      k3 = r − 1 − log r.

Each estimates KL(π_θ ‖ π_ref) (k1 and k3 unbiased, k2 biased), but as *losses* their
gradients differ (chapter 12). For one categorical draw (a bandit, a one-token response):
E[∇k1] = 0, E[∇k2] = ∇KL(π_θ‖π_ref) and E[∇k3] = ∇KL(π_ref‖π_θ). Added per token to the
loss of a response, k(log π_θ(y_t|h_t), log π_ref(y_t|h_t)) differentiates each next-token
distribution at the prefixes h_t the samples visited, as if those prefixes did not depend on
θ: the sum is the gradient of *neither* sequence KL (Tang & Munos 2025, arXiv:2506.09477).
The token-level gradient of the sequence KL(π_θ‖π_ref) is the KL in the reward with
reward-to-go, E[Σ_t ∇log π_θ(y_t|h_t) Σ_{t'≥t} (log π_θ − log π_ref)(y_t'|h_t')]. After the
first epoch on a batch the samples come from π_old, and a loss term evaluated on them without
an importance weight estimates the gradient at prefixes and tokens drawn from π_old.

Two placements, per token t of response i (logp = log π_θ(y_t|h_t), ref_logp = log π_ref):

    in the loss:    per-token loss += β · k(logp, ref_logp)       trajectory side
    in the reward:  R_i ← R_i − β Σ_t m_it · sg[k1]                reward side

The reward placement changes the scalar that weights ∇log p_θ(τ) (:func:`kl_in_reward`);
with the score function it gives the exact gradient of J − β·KL(π_θ‖π_ref). The loss
placement differentiates the estimator itself. Registered placements (kind ``"kl"``) share
the signature ``fn(logp, ref_logp) -> per-token term``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import (
    LOG_RATIO_CLAMP,
    check_finite,
    check_mask,
    check_option,
    check_pair,
    check_positive,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from .registry import register, register_label

__all__ = [
    "k1_in_reward",
    "k1_loss",
    "k2_loss",
    "k3_loss",
    "kl_estimate",
    "kl_in_reward",
]


register_label("kl", "none", side="trajectory", summary="no KL term")
register_label("kl", "kl_penalty", side="trajectory",
               summary="β·KL(π_old‖π_θ) subtracted from the surrogate (PPO-KL)")


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-element KL(π_θ‖π_ref) estimator k1, k2 or k3 on samples from π_θ.

    ``logp`` = log π_θ(y), ``ref_logp`` = log π_ref(y), same shape, finite. Differentiable in
    ``logp`` (use it as a loss) — detach it to use the value in the reward.

    Overflow convention for k3: log r is clamped to [−20, 20] before the exp, as in verl's
    ``kl_penalty_forward`` ("low_var_kl"), so k3 ≤ e²⁰ − 21 is never inf (beyond the clamp
    its gradient is zero). verl also clamps k3 itself to [−10, 10]; pgbook does not (TRL's
    GRPO k3 has no clamp at all): that clamp would bias the estimate wherever
    π_ref/π_θ > ~13 on a token. Within |log r| ≤ 20 this is TRL's k3 exactly.
    """
    check_option(kind, "kind", ("k1", "k2", "k3"))
    check_pair(logp, ref_logp, "logp", "ref_logp")
    check_finite(logp, "logp")
    check_finite(ref_logp, "ref_logp")
    lr = ref_logp.to(logp.dtype) - logp
    if kind == "k1":
        return -lr
    if kind == "k2":
        return 0.5 * lr * lr
    lr = lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.expm1(lr) - lr


def kl_in_reward(rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float,
                 kind: str = "k1") -> Tensor:
    """R_i − β Σ_t m_{i,t} · sg[k(log π_θ(y_t), log π_ref(y_t))], shape (N,).

    ``rewards`` (N,), ``logp``/``ref_logp``/``mask`` (N, T). With ``kind="k1"`` the summed
    term is Σ_t (log π_θ − log π_ref)(y_t) = log π_θ(y|x)/π_ref(y|x), whose expectation is
    KL(π_θ‖π_ref) of the whole response: R − β·k1 is the KL-regularised reward, and the
    score-function gradient of E[R − β log π_θ/π_ref] is the exact gradient of
    J − β·KL(π_θ‖π_ref) (chapter 12). The KL is detached: it changes the weight of
    ∇log p_θ(τ), not p_θ. Factor of J(θ): reward. Returned in the rewards' dtype.
    Positions where the mask is 0 may hold anything in ``logp``/``ref_logp`` (NaN, −inf);
    an all-zero mask is an error (rows of zeros, padding responses, are fine).
    """
    check_option(kind, "kind", ("k1", "k2", "k3"))
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_tensor(mask, "mask", ndim=2)
    check_pair(logp, ref_logp, "logp", "ref_logp")
    check_same_shape(logp, mask, "logp", "mask")
    check_same_device(rewards=rewards, logp=logp, mask=mask)
    if logp.dim() != 2 or logp.shape[0] != rewards.shape[0]:
        raise ValueError(f"logp: expected shape ({rewards.shape[0]}, T) (one row per reward), "
                         f"got {tuple(logp.shape)}")
    check_mask(mask, "mask")
    check_finite(rewards, "rewards")
    beta = check_positive(beta, "beta", allow_zero=True)
    m = mask.to(torch.bool)
    lp = torch.where(m, logp.detach(), torch.zeros((), dtype=logp.dtype, device=logp.device))
    rl = torch.where(m, ref_logp.detach().to(logp.dtype),
                     torch.zeros((), dtype=logp.dtype, device=logp.device))
    k = torch.where(m, kl_estimate(lp, rl, kind), torch.zeros((), dtype=logp.dtype, device=logp.device))
    return rewards - (beta * k.sum(-1)).to(rewards.dtype)


@register("kl", "k1_in_reward", side="reward", form="reward",
          summary="R − β·Σ_t sg[log π_θ − log π_ref]: KL-regularised reward")
def k1_in_reward(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """The per-token term sg[log π_θ − log π_ref] that :func:`kl_in_reward` sums and
    subtracts from R (detached: a number, not a loss)."""
    check_tensor(logp, "logp")
    check_tensor(ref_logp, "ref_logp")
    return kl_estimate(logp.detach(), ref_logp.detach(), "k1")


@register("kl", "k1_loss", side="trajectory", form="token", summary="+β·(log π_θ − log π_ref) in the loss")
def k1_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k1 = log π_θ − log π_ref as a loss term. Its expected gradient on samples
    from π_θ is zero (E[∇log π_θ] = 0): as a loss it does nothing on average (chapter 12)."""
    return kl_estimate(logp, ref_logp, "k1")


@register("kl", "k2_loss", side="trajectory", form="token", summary="+β·½(log π_θ − log π_ref)² in the loss")
def k2_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k2 = ½ (log π_ref − log π_θ)² as a loss term, shape of ``logp``.

    For one categorical draw y ~ π_θ its expected gradient is ∇KL(π_θ‖π_ref) (the reverse
    KL). Summed over the tokens of responses sampled from π_θ, the expected gradient is
    Σ_t E_{h_t}[∇KL(π_θ(·|h_t)‖π_ref(·|h_t))] with the prefixes h_t held fixed: it misses the
    term E[Σ_t ∇log π_θ(y_t|h_t) Σ_{t'>t} (log π_θ − log π_ref)(y_t')] through which a token
    changes the prefixes that follow it, so it is not ∇KL of whole responses (Tang & Munos
    2025, arXiv:2506.09477; chapter 12 measures the gap). Factor of J(θ): trajectory."""
    return kl_estimate(logp, ref_logp, "k2")


@register("kl", "k3_loss", side="trajectory", form="token",
          summary="+β·(π_ref/π_θ − 1 − log π_ref/π_θ) in the loss (GRPO)")
def k3_loss(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 = r − 1 − log r, r = π_ref/π_θ, as a loss term (DeepSeekMath's GRPO),
    shape of ``logp``.

    Its value is a non-negative, unbiased estimate of KL(π_θ‖π_ref) (summed over a
    response's tokens: of the sequence KL, by the chain rule). Its gradient is another
    matter. For one categorical draw y ~ π_θ the expected gradient is ∇KL(π_ref‖π_θ), the
    *forward* KL. Summed over the tokens of a response it is
    Σ_t E_{h_t ~ π_θ}[∇KL(π_ref(·|h_t)‖π_θ(·|h_t))]: forward per-token KLs at prefixes drawn
    from π_θ and held fixed, which is the gradient of neither sequence KL (the forward KL of
    whole responses takes its prefixes from π_ref; Tang & Munos 2025, arXiv:2506.09477;
    chapter 12 computes all three exactly). On samples from π_old (every epoch after the
    first) it is evaluated without an importance weight, so its expectation is over π_old's
    prefixes and tokens. TRL's GRPOTrainer computes exactly this term (``per_token_kl``);
    verl's ``low_var_kl`` also clamps log r to [−20, 20] and k3 to [−10, 10], which pgbook
    does not. Factor of J(θ): trajectory."""
    return kl_estimate(logp, ref_logp, "k3")
