"""Sampler/trainer mismatch: when the policy that sampled is not the policy being trained.

GRPO and PPO assume the responses were drawn from π_old, the trainer's own policy before
the update. In a real pipeline the rollouts come from an inference engine (vLLM, SGLang)
that computes the "same" policy with other kernels, another precision, another MoE
routing: the sampler's μ(y_t|h_t) differs from the trainer's π_old(y_t|h_t), so training
that believes itself on-policy is off-policy. The correction multiplies each token's policy
term by an importance weight built from

    ρ_t = π_old(y_t|h_t) / μ(y_t|h_t)      (trainer's old log-prob − sampler's log-prob)

at one of two granularities and with one of two ways to bound it (Yao, Liu et al. 2025,
"Your efficient RL framework secretly brings you off-policy RL training"; Ring-1T's IcePop,
arXiv:2510.18855):

    token_truncate     w_t = clip(ρ_t, C_min, C_max)                    TIS
    token_mask         w_t = ρ_t if C_min ≤ ρ_t ≤ C_max else 0          MIS / IcePop
    sequence_truncate  w_t = clip(Π_s ρ_s, C_min, C_max)   (every token of the response)
    sequence_mask      w_t = Π_s ρ_s if inside [C_min, C_max] else 0

C_min = None means no lower bound (``correction_min``), C_max = ``correction_max`` (default
2, as in the TIS blog and verl). The sequence weight Π_s ρ_s = π_old(y|x)/μ(y|x) makes the
estimator unbiased when nothing is clipped, at a variance that grows exponentially with the
length; a token weight is bounded but corrects only the last step of each prefix (biased).
Chapter 14 measures both exactly on the enumerable LM.

Registered as kind ``"correction"`` (form ``"weights"``, trajectory side), each
``fn(old_logp, sampler_logp, mask, *, c_max, c_min) -> weights``; ``"none"`` is a label.
:func:`pgbook.methods.policy_loss` applies one when given ``sampler_logp`` and
``correction`` (the weights multiply the policy term, not the KL term, before the
aggregation), and :func:`pgbook.train.grpo.grpo_train` passes the rollout's log-probs.

References: TRL's ``vllm_importance_sampling_mode`` ("token_truncate", "token_mask",
"sequence_truncate", "sequence_mask", with ``vllm_importance_sampling_clip_min``/
``_clip_max``), which these equal (TRL's default C_max is 3 and its default mode
"sequence_mask"). verl's ``compute_rollout_correction_weights`` ("token"/"sequence", upper
truncation at ``rollout_is_threshold``, default 2) equals ``*_truncate`` with C_min = None
except that verl first caps |log ρ| at 20; verl's rejection sampling
(``compute_rollout_rejection_mask``) removes rejected tokens from the loss mask (and so from
the aggregation's normaliser) and thresholds a KL estimate rather than ρ, where ``*_mask``
here sets their weight to 0 and keeps the normaliser, as TRL and IcePop do.

Shapes: ``old_logp``, ``sampler_logp``, ``mask`` (..., T), tokens last; weights (..., T),
0 off the mask, detached, in the work dtype of ``old_logp`` (float32 for half precision).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite_where,
    check_mask,
    check_pair,
    check_positive,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..registry import register, register_label, resolve

__all__ = [
    "CORRECTIONS",
    "correction_stats",
    "correction_weights",
    "mismatch_log_ratio",
    "sequence_mask",
    "sequence_truncate",
    "token_mask",
    "token_truncate",
]

CORRECTIONS = ("none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")

register_label("correction", "none", side="trajectory",
               summary="no sampler/trainer correction: the rollout is taken as on-policy")


def mismatch_log_ratio(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """log ρ_t = log π_old(y_t|h_t) − log μ(y_t|h_t) on the mask, 0 elsewhere, shape (..., T),
    detached, work dtype. Both inputs must be finite on the mask (elsewhere: anything)."""
    check_pair(old_logp, sampler_logp, "old_logp", "sampler_logp")
    check_mask(mask, "mask", tuple(old_logp.shape))
    check_same_device(old_logp=old_logp, mask=mask)
    check_finite_where(old_logp, mask, "old_logp")
    check_finite_where(sampler_logp, mask, "sampler_logp")
    m = mask.to(torch.bool)
    wd = work_dtype(old_logp.dtype)
    zero = torch.zeros((), dtype=wd, device=old_logp.device)
    lr = torch.where(m, old_logp.detach().to(wd) - sampler_logp.detach().to(wd), zero)
    if not _is_meta(lr) and not bool(torch.isfinite(lr).all()):
        raise ValueError("sampler_logp: expected finite log-probs (and old_logp too) on the "
                         "response tokens, got NaN or inf")
    return lr


def _bounds(c_max: float | None, c_min: float | None, names: tuple[str, str] = ("c_max", "c_min")
            ) -> tuple[float | None, float | None]:
    hi = None if c_max is None else check_positive(c_max, names[0])
    lo = None if c_min is None else check_positive(c_min, names[1], allow_zero=True)
    if hi is not None and lo is not None and lo > hi:
        raise ValueError(f"{names[1]}: expected at most {names[0]} = {hi}, got {lo}")
    return hi, lo


def _weights(old_logp, sampler_logp, mask, c_max, c_min, sequence: bool, truncate: bool):
    hi, lo = _bounds(c_max, c_min)
    lr = mismatch_log_ratio(old_logp, sampler_logp, mask)
    m = mask.to(torch.bool)
    if sequence:
        lr = lr.sum(-1, keepdim=True).expand_as(lr)
    log_hi = None if hi is None else math.log(hi)
    log_lo = None if lo is None or lo == 0 else math.log(lo)
    if truncate:    # clip in log space: exp never overflows once an upper bound is set
        lw = lr if log_hi is None and log_lo is None else torch.clamp(lr, min=log_lo, max=log_hi)
        w = torch.exp(lw)
    else:
        outside = torch.zeros_like(m)
        if log_hi is not None:
            outside = outside | (lr > log_hi)
        if log_lo is not None:
            outside = outside | (lr < log_lo)
        w = torch.where(outside, torch.zeros_like(lr), torch.exp(lr.masked_fill(outside, 0)))
    w = torch.where(m, w, torch.zeros_like(w))
    if not _is_meta(w) and not bool(torch.isfinite(w).all()):
        raise ValueError(f"sampler_logp: an importance weight π_old/μ overflows (log-ratio up to "
                         f"{float(lr.max()):.3g}); set correction_max to bound it")
    return w


@register("correction", "token_truncate", side="trajectory", form="weights",
          summary="w_t = clip(π_old/μ, C_min, C_max) per token (TIS)",
          reference="Yao, Liu et al. 2025 (truncated importance sampling)")
def token_truncate(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *,
                   c_max: float | None = 2.0, c_min: float | None = None) -> Tensor:
    """Token-level truncated IS (TIS): w_t = clip(π_old(y_t|h_t)/μ(y_t|h_t), C_min, C_max)."""
    return _weights(old_logp, sampler_logp, mask, c_max, c_min, sequence=False, truncate=True)


@register("correction", "token_mask", side="trajectory", form="weights",
          summary="w_t = π_old/μ inside [C_min, C_max], else 0, per token (MIS / IcePop)",
          reference="Ring-1T's IcePop (arXiv:2510.18855); Yao, Liu et al. 2025")
def token_mask(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *,
               c_max: float | None = 2.0, c_min: float | None = None) -> Tensor:
    """Token-level masked IS (MIS, IcePop): w_t = ρ_t if C_min ≤ ρ_t ≤ C_max, else 0."""
    return _weights(old_logp, sampler_logp, mask, c_max, c_min, sequence=False, truncate=False)


@register("correction", "sequence_truncate", side="trajectory", form="weights",
          summary="w = clip(π_old(y)/μ(y), C_min, C_max) per response",
          reference="Yao, Liu et al. 2025")
def sequence_truncate(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *,
                      c_max: float | None = 2.0, c_min: float | None = None) -> Tensor:
    """Sequence-level truncated IS: w_t = clip(Π_s ρ_s, C_min, C_max) on every token."""
    return _weights(old_logp, sampler_logp, mask, c_max, c_min, sequence=True, truncate=True)


@register("correction", "sequence_mask", side="trajectory", form="weights",
          summary="w = π_old(y)/μ(y) inside [C_min, C_max], else 0, per response",
          reference="Yao, Liu et al. 2025")
def sequence_mask(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *,
                  c_max: float | None = 2.0, c_min: float | None = None) -> Tensor:
    """Sequence-level masked IS: w_t = Π_s ρ_s if it lies in [C_min, C_max], else 0."""
    return _weights(old_logp, sampler_logp, mask, c_max, c_min, sequence=True, truncate=False)


def correction_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor,
                       correction: str = "token_truncate", correction_max: float | None = 2.0,
                       correction_min: float | None = None) -> Tensor:
    """The importance weights (..., T) of a registered ``correction`` (see the module
    docstring): ``"token_truncate"``, ``"token_mask"``, ``"sequence_truncate"``,
    ``"sequence_mask"``, yours, or ``"none"`` (every weight 1 on the mask). Detached; 0 off
    the mask. Factor of J(θ): trajectory (it reweights samples drawn from μ towards π_old)."""
    _bounds(correction_max, correction_min, ("correction_max", "correction_min"))
    if correction == "none":
        lr = mismatch_log_ratio(old_logp, sampler_logp, mask)
        return mask.to(torch.bool).to(lr.dtype)
    fn = resolve("correction", correction, "weights", what="correction")
    return fn(old_logp, sampler_logp, mask, c_max=correction_max, c_min=correction_min)


def correction_stats(weights: Tensor, old_logp: Tensor, sampler_logp: Tensor,
                     mask: Tensor) -> dict:
    """Diagnostics of a correction, detached 0-dim tensors: ``mismatch_kl`` (the token mean
    of k3(ρ) = ρ − 1 − log ρ, an estimate of KL(μ‖π_old) per token on μ's samples),
    ``mismatch_max`` (max |log ρ_t|), ``weight_mean``, ``weight_zero_fraction`` (tokens
    whose weight is 0: masked out) and ``weight_ess`` (ESS/n = (Σw)²/(n Σw²) over the
    valid tokens; 1 when every weight is equal)."""
    lr = mismatch_log_ratio(old_logp, sampler_logp, mask)
    check_tensor(weights, "weights", floating=True)
    check_shape(weights, "weights", tuple(old_logp.shape))
    check_same_device(weights=weights, old_logp=old_logp)
    check_finite_where(weights, mask, "weights")
    if not _is_meta(weights) and bool(((weights < 0) & (mask != 0)).any()):
        raise ValueError("weights: expected importance weights ≥ 0, got a negative one")
    m = mask.to(torch.bool)
    w = weights.detach().to(lr.dtype)
    n = m.sum().to(lr.dtype)
    zero = torch.zeros((), dtype=lr.dtype, device=lr.device)
    wm = torch.where(m, w, zero)
    return {
        "mismatch_kl": torch.where(m, torch.expm1(lr) - lr, zero).sum() / n,
        "mismatch_max": lr.abs().max(),
        "weight_mean": wm.sum() / n,
        "weight_zero_fraction": ((wm == 0) & m).sum().to(lr.dtype) / n,
        "weight_ess": wm.sum().pow(2) / (n * wm.pow(2).sum()).clamp_min(
            torch.finfo(lr.dtype).tiny),
    }
