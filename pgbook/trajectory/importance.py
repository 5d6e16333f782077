"""Importance sampling: samples from a behaviour policy μ, reweighted towards π_θ.

Any expectation under π can be taken under another policy μ that covers it (μ > 0 wherever
π > 0), by reweighting each sample with the importance weight w = π(a|s) / μ(a|s):

    E_{a~π}[ f(s, a) ] = E_{a~μ}[ w(s, a) f(s, a) ].

With f = r this estimates J(θ); with f = A ∇log π_θ it estimates ∇J(θ). Two estimators:

* ordinary IS, (1/N) Σ_i w_i f_i: unbiased; its variance grows with E_μ[w²] = 1 + χ²(π‖μ);
* self-normalised IS (SNIS), Σ_i w_i f_i / Σ_i w_i: biased (≈ −E_μ[w²(f − E_π f)]/N), but
  consistent, invariant to a constant shift of f, and often of lower variance;
* truncated IS (TIS), (1/N) Σ_i min(w_i, c) f_i: biased by −E_μ[(w − c)₊ f] (a bias that
  does not vanish with N), with the variance bounded by c² E_μ[f²]/N (Ionides 2008); the
  truncated token weight of TIS for LLM rollouts is this estimator per token.

The effective sample size ESS = (Σ w)² / Σ w² says how many on-policy samples the weighted
batch is worth. Changing the sampling distribution changes the *trajectory* factor
p_θ(τ): the samples come from μ, and the weights correct for it. Exact variances and biases
on the bandit world are in :mod:`pgbook.exact.offpolicy`.

Shapes: log-probs and weights (..., N) (N samples last). Everything runs on the device and
dtype of its inputs; half precision is computed in float32 and returned in the input dtype.
Weights are computed in log space (exp(log π − log μ)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_positive,
    check_probs,
    check_same_device,
    check_same_shape,
    check_tensor,
    to_work,
)

__all__ = [
    "check_log_probs",
    "check_positive_probs",
    "check_weights",
    "effective_sample_size",
    "importance_weights",
    "is_estimate",
    "truncate_weights",
]


def check_log_probs(x: Tensor, name: str) -> Tensor:
    """Finite log-probabilities, ≤ 0 (a probability in (0, 1])."""
    check_tensor(x, name, floating=True)
    if _is_meta(x):
        return x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name}: expected finite log-probabilities, got "
            f"{int((~torch.isfinite(x)).sum())} non-finite entries (a zero probability has "
            f"log −inf: importance weights need probabilities > 0)"
        )
    if bool((x > 0).any()):
        raise ValueError(
            f"{name}: expected log-probabilities ≤ 0, got max {float(x.max()):.3g} "
            f"(pass log π, not logits or probabilities)"
        )
    return x


def check_positive_probs(p: Tensor, name: str) -> Tensor:
    """A probability table (..., S, A) with every entry > 0."""
    check_probs(p, name)
    if not _is_meta(p) and bool((p <= 0).any()):
        raise ValueError(
            f"{name}: expected probabilities > 0 everywhere (importance weights divide by "
            f"them), got min {float(p.min()):.3g}"
        )
    return p


def check_weights(w: Tensor, name: str = "weights") -> Tensor:
    """Importance weights (..., N): finite, non-negative, with a positive sum per batch."""
    check_tensor(w, name, floating=True)
    if w.dim() < 1:
        raise ValueError(f"{name}: expected shape (..., N), got a scalar")
    check_finite(w, name)
    if not _is_meta(w):
        if bool((w < 0).any()):
            raise ValueError(f"{name}: expected non-negative weights, min is {float(w.min()):.3g}")
        if bool((w.sum(-1) <= 0).any()):
            raise ValueError(f"{name}: every batch needs a positive weight, some sum to 0")
    return w


def importance_weights(logp: Tensor, behaviour_logp: Tensor) -> Tensor:
    """w = π(a|s) / μ(a|s) = exp(log π − log μ), computed in log space; shape of the inputs.

    ``logp`` = log π(a_i|s_i), ``behaviour_logp`` = log μ(a_i|s_i) at the sampled pairs (any
    shared shape, e.g. (N,) or (M, N)). Both must be finite (μ > 0 where samples lie) and
    ≤ 0. Not differentiated (a weight, not a loss; for the differentiable ratio use
    :func:`pgbook.trajectory.losses.ratio`). Trajectory factor of J(θ): it corrects for sampling
    p_μ(τ) instead of p_θ(τ).

    Overflow: a weight too large for the output dtype (π/μ > ~1.8e308 in float64, ~3.4e38 in
    float32/bfloat16) raises ValueError rather than returning inf (a clamp, as the policy
    losses use, would bias the estimate without a word).
    """
    check_log_probs(logp, "logp")
    check_log_probs(behaviour_logp, "behaviour_logp")
    check_same_shape(logp, behaviour_logp, "logp", "behaviour_logp")
    check_same_device(logp=logp, behaviour_logp=behaviour_logp)
    out = torch.promote_types(logp.dtype, behaviour_logp.dtype)
    lw = to_work(logp.detach()) - to_work(behaviour_logp.detach())
    w = torch.exp(lw).to(out)
    if not _is_meta(w) and not bool(torch.isfinite(w).all()):
        raise ValueError(f"logp, behaviour_logp: an importance weight π/μ overflows {out} "
                         f"(largest log-weight {float(lw.max()):.4g}); μ must cover π")
    return w


def truncate_weights(weights: Tensor, c: float) -> Tensor:
    """Truncated importance weights min(w, c), same shape and dtype as ``weights``.

    ``c`` > 0 is the truncation level (TIS uses c ≈ 2 for token weights). Truncation trades
    a bias, −E_μ[(w − c)₊ f] for the estimate of E_π[f], for a variance bounded by c²:
    ``c`` ≥ max w leaves the weights (and the estimator) unchanged. Trajectory factor of
    J(θ): it changes how samples of μ stand in for samples of π_θ.
    """
    check_weights(weights)
    c = check_positive(c, "c")
    return torch.clamp(weights, max=c)


def is_estimate(values: Tensor, weights: Tensor, self_normalised: bool = False,
                truncate: float | None = None) -> Tensor:
    """Importance-sampling estimate of E_π[f] from samples of μ:

        ordinary:         (1/N) Σ_i w_i f_i            (unbiased)
        self-normalised:  Σ_i w_i f_i / Σ_i w_i        (biased, consistent)
        truncated:        (1/N) Σ_i min(w_i, c) f_i    (``truncate=c``; biased, bounded weights)

    ``weights`` is (..., N); ``values`` f_i is (..., N) (a scalar per sample, returns (...))
    or (..., N, P) (a vector per sample, e.g. A_i ∇log π, returns (..., P)). ``truncate``
    combines with ``self_normalised`` (Σ min(w, c) f / Σ min(w, c)). Trajectory factor of
    J(θ) (the sampling distribution).
    """
    check_weights(weights)
    if truncate is not None:
        weights = truncate_weights(weights, check_positive(truncate, "truncate"))
    check_tensor(values, "values", floating=True)
    if not isinstance(self_normalised, bool):
        raise ValueError(f"self_normalised: expected True or False, got {self_normalised!r}")
    check_same_device(values=values, weights=weights)
    vector = values.dim() == weights.dim() + 1
    if tuple(values.shape[: weights.dim()]) != tuple(weights.shape) or \
            values.dim() not in (weights.dim(), weights.dim() + 1):
        raise ValueError(
            f"values: expected shape {tuple(weights.shape)} or {tuple(weights.shape)} + (P,) "
            f"(the weights' shape), got {tuple(values.shape)}"
        )
    check_finite(values, "values")
    out = torch.promote_types(values.dtype, weights.dtype)
    w, f = to_work(weights), to_work(values)
    wf = (w.unsqueeze(-1) * f).sum(-2) if vector else (w * f).sum(-1)
    norm = w.sum(-1) if self_normalised else torch.full_like(w.sum(-1), w.shape[-1])
    return (wf / (norm.unsqueeze(-1) if vector else norm)).to(out)


def effective_sample_size(weights: Tensor) -> Tensor:
    """ESS = (Σ_i w_i)² / Σ_i w_i² over the last dimension, shape (...).

    Between 1 and N; equal to N exactly when all weights are equal (π = μ gives w = 1).
    For large N, ESS / N → 1 / E_μ[w²] (:func:`exact_weight_second_moment`).
    """
    check_weights(weights)
    w = to_work(weights)
    w = w / w.amax(-1, keepdim=True)  # ESS is scale-free; this keeps Σ w² from overflowing
    return (w.sum(-1).pow(2) / w.pow(2).sum(-1)).to(weights.dtype)
