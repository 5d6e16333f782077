"""Off-policy estimation: samples from a behaviour policy μ, reweighted towards π_θ.

Any expectation under π can be taken under another policy μ that covers it (μ > 0 wherever
π > 0), by reweighting each sample with the importance weight w = π(a|s) / μ(a|s):

    E_{a~π}[ f(s, a) ] = E_{a~μ}[ w(s, a) f(s, a) ].

With f = r this estimates J(θ); with f = A ∇log π_θ it estimates ∇J(θ). Two estimators:

* ordinary IS, (1/N) Σ_i w_i f_i: unbiased; its variance grows with E_μ[w²] = 1 + χ²(π‖μ);
* self-normalised IS (SNIS), Σ_i w_i f_i / Σ_i w_i: biased (≈ −E_μ[w²(f − E_π f)]/N), but
  consistent, invariant to a constant shift of f, and often of lower variance.

The effective sample size ESS = (Σ w)² / Σ w² says how many on-policy samples the weighted
batch is worth. Changing the sampling distribution is a change of the *trajectory* factor
p_θ(τ): the samples come from μ, and the weights correct for it.

Shapes: log-probs and weights (..., N) (N samples last); probability tables (S, A); a
batch from μ has fields (N,) or (M, N) for M independent batches. Everything runs on the
device and dtype of its inputs; half precision is computed in float32 and returned in the
input dtype. Weights are computed in log space (exp(log π − log μ)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import (
    _is_meta,
    check_finite,
    check_positive_int,
    check_probs,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from .bandits import Bandit, BanditBatch, SoftmaxPolicy
from .estimators import _half_to_float, sample_weights
from .losses import importance_weighted_loss, ratio
from .measure import estimates_from_loss
from .registry import register_label, register_method


def _check_logp(x: Tensor, name: str) -> Tensor:
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


def _check_positive_probs(p: Tensor, name: str) -> Tensor:
    """A probability table (..., S, A) with every entry > 0."""
    check_probs(p, name)
    if not _is_meta(p) and bool((p <= 0).any()):
        raise ValueError(
            f"{name}: expected probabilities > 0 everywhere (importance weights divide by "
            f"them), got min {float(p.min()):.3g}"
        )
    return p


def _check_weights(w: Tensor, name: str = "weights") -> Tensor:
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


# -- weights, estimates, ESS --------------------------------------------------------------------
def importance_weights(logp: Tensor, behaviour_logp: Tensor) -> Tensor:
    """w = π(a|s) / μ(a|s) = exp(log π − log μ), computed in log space; shape of the inputs.

    ``logp`` = log π(a_i|s_i), ``behaviour_logp`` = log μ(a_i|s_i) at the sampled pairs (any
    shared shape, e.g. (N,) or (M, N)). Both must be finite (μ > 0 where samples lie) and
    ≤ 0. Not differentiated (a weight, not a loss; for the differentiable ratio use
    :func:`pgbook.losses.ratio`). Trajectory factor of J(θ): it corrects for sampling
    p_μ(τ) instead of p_θ(τ).
    """
    _check_logp(logp, "logp")
    _check_logp(behaviour_logp, "behaviour_logp")
    check_same_shape(logp, behaviour_logp, "logp", "behaviour_logp")
    check_same_device(logp=logp, behaviour_logp=behaviour_logp)
    out = torch.promote_types(logp.dtype, behaviour_logp.dtype)
    lw = _half_to_float(logp.detach()) - _half_to_float(behaviour_logp.detach())
    return torch.exp(lw).to(out)


def is_estimate(values: Tensor, weights: Tensor, self_normalised: bool = False) -> Tensor:
    """Importance-sampling estimate of E_π[f] from samples of μ:

        ordinary:         (1/N) Σ_i w_i f_i        (unbiased)
        self-normalised:  Σ_i w_i f_i / Σ_i w_i    (biased, consistent)

    ``weights`` is (..., N); ``values`` f_i is (..., N) (a scalar per sample, returns (...))
    or (..., N, P) (a vector per sample, e.g. A_i ∇log π, returns (..., P)). Trajectory
    factor of J(θ) (the sampling distribution).
    """
    _check_weights(weights)
    check_tensor(values, "values", floating=True)
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
    w, f = _half_to_float(weights), _half_to_float(values)
    wf = (w.unsqueeze(-1) * f).sum(-2) if vector else (w * f).sum(-1)
    norm = w.sum(-1) if self_normalised else torch.full_like(w.sum(-1), w.shape[-1])
    return (wf / (norm.unsqueeze(-1) if vector else norm)).to(out)


def effective_sample_size(weights: Tensor) -> Tensor:
    """ESS = (Σ_i w_i)² / Σ_i w_i² over the last dimension, shape (...).

    Between 1 and N; equal to N exactly when all weights are equal (π = μ gives w = 1).
    For large N, ESS / N → 1 / E_μ[w²] (:func:`exact_weight_second_moment`).
    """
    _check_weights(weights)
    w = _half_to_float(weights)
    return (w.sum(-1).pow(2) / w.pow(2).sum(-1)).to(weights.dtype)


# -- on a bandit ----------------------------------------------------------------------------------
def _batch_weights(probs: Tensor, behaviour_probs: Tensor, batch: BanditBatch) -> Tensor:
    _check_positive_probs(probs, "probs")
    _check_positive_probs(behaviour_probs, "behaviour_probs")
    check_same_shape(probs, behaviour_probs, "probs", "behaviour_probs")
    if probs.dim() != 2:
        raise ValueError(f"probs: expected a table of shape (S, A), got {tuple(probs.shape)}")
    check_same_device(probs=probs, behaviour_probs=behaviour_probs, s=batch.s)
    lp, lq = _half_to_float(probs).log(), _half_to_float(behaviour_probs).log()
    return importance_weights(lp[batch.s, batch.a], lq[batch.s, batch.a])


def off_policy_J(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor, batch: BanditBatch,
                 self_normalised: bool = False) -> Tensor:
    """Estimate J(π) = E_π[r] from a batch drawn from μ: ordinary IS (1/N) Σ w_i r_i or
    SNIS Σ w_i r_i / Σ w_i, with w_i = π(a_i|s_i) / μ(a_i|s_i).

    ``probs`` π and ``behaviour_probs`` μ are (S, A) tables, μ > 0 everywhere; the batch
    (``bandit.sample(behaviour_probs, ...)``) has fields (..., N); returns (...).
    """
    w = _batch_weights(probs, behaviour_probs, batch)
    check_finite(batch.r, "rewards")
    return is_estimate(batch.r.to(w.dtype), w, self_normalised).to(probs.dtype)


def off_policy_gradient(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                        behaviour_probs: Tensor, batch: BanditBatch, baseline="none",
                        self_normalised: bool = False) -> Tensor:
    """Estimate ∇J(θ) from a batch drawn from μ, as minus the gradient of the importance-
    weighted surrogate (:func:`pgbook.losses.importance_weighted_loss`, ℓ_i = −w_i A_i):

        ordinary:        ĝ = (1/N) Σ_i w_i A_i ∇log π_θ(a_i|s_i)
        self-normalised: ĝ = Σ_i w_i A_i ∇log π_θ(a_i|s_i) / Σ_i w_i   (Σ w held fixed)

    with A_i = r_i − b_i for ``baseline`` (as in :func:`pgbook.estimators.get_baseline`;
    'value' is V_π(s) of the *target* policy). ``theta`` is (P,); batch fields (N,) give
    (P,), (M, N) give (M, P) (one vectorised call). ``behaviour_probs`` is μ as an (S, A)
    table, > 0 everywhere. Trajectory factor of J(θ).
    """
    check_tensor(theta, "theta", floating=True)
    check_same_device(theta=theta, bandit=bandit.means, behaviour_probs=behaviour_probs)
    if batch.s.dim() not in (1, 2):
        raise ValueError(
            f"batch: expected fields of shape (N,) or (M, N), got {tuple(batch.s.shape)}"
        )
    theta = theta.detach()
    with torch.no_grad():
        probs = policy.probs(theta)
    _batch_weights(probs, behaviour_probs, batch)  # validates μ, π and the batch
    blogp = _half_to_float(behaviour_probs).log().to(theta.dtype)[batch.s, batch.a]
    adv = sample_weights(bandit, policy, theta, batch, baseline).to(theta.dtype)

    def loss(t, sample):
        s, a, A, old = sample
        logp = policy.log_prob(t, s, a)
        per = importance_weighted_loss(logp, A, old)  # −w_i A_i
        if self_normalised:
            return per.sum() / ratio(logp, old).detach().sum()
        return per.mean()

    if batch.s.dim() == 1:
        return -torch.func.grad(loss)(theta, (batch.s, batch.a, adv, blogp))
    return estimates_from_loss(loss, theta, (batch.s, batch.a, adv, blogp))


# -- exact quantities ------------------------------------------------------------------------------
def _rho(rho: Tensor | None, p: Tensor) -> Tensor:
    if rho is None:
        return torch.full(p.shape[-2:-1], 1.0 / p.shape[-2], dtype=p.dtype, device=p.device)
    check_probs(rho, "rho")
    if rho.shape != p.shape[-2:-1]:
        raise ValueError(f"rho: expected shape {tuple(p.shape[-2:-1])}, got {tuple(rho.shape)}")
    return rho.to(p.dtype)


def exact_kl(probs: Tensor, behaviour_probs: Tensor, rho: Tensor | None = None) -> Tensor:
    """KL(π‖μ) = Σ_s ρ(s) Σ_a π(a|s) log(π(a|s) / μ(a|s)), exactly; shape (...).

    ``probs`` π and ``behaviour_probs`` μ are (..., S, A) (μ > 0 everywhere); ``rho`` (S,)
    weights the contexts (uniform when None). Zero iff π = μ on every context with ρ > 0.
    Takes probability tables; :func:`pgbook.proximal.exact_kl` is the same divergence taken
    on parameter vectors (in log space, differentiable in both), used by chapters 06-07.
    """
    check_probs(probs, "probs")
    _check_positive_probs(behaviour_probs, "behaviour_probs")
    check_same_device(probs=probs, behaviour_probs=behaviour_probs)
    p, q = _half_to_float(probs), _half_to_float(behaviour_probs).to(_half_to_float(probs).dtype)
    per_s = (torch.xlogy(p, p) - p * q.log()).sum(-1)
    return (per_s * _rho(rho, p)).sum(-1).to(probs.dtype)


def exact_weight_second_moment(probs: Tensor, behaviour_probs: Tensor,
                               rho: Tensor | None = None) -> Tensor:
    """E_{s~ρ, a~μ}[w²] = Σ_s ρ(s) Σ_a π(a|s)² / μ(a|s) = 1 + χ²(π‖μ); shape (...).

    ≥ 1, equal to 1 iff π = μ. The ESS of N samples is ≈ N / E_μ[w²] for large N, and the
    variance of ordinary IS scales with it.
    """
    check_probs(probs, "probs")
    _check_positive_probs(behaviour_probs, "behaviour_probs")
    check_same_device(probs=probs, behaviour_probs=behaviour_probs)
    p, q = _half_to_float(probs), _half_to_float(behaviour_probs).to(_half_to_float(probs).dtype)
    return ((p * p / q).sum(-1) * _rho(rho, p)).sum(-1).to(probs.dtype)


def _bandit_tables(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor):
    bandit._check_probs(probs)
    bandit._check_probs(behaviour_probs)
    check_probs(probs, "probs")
    _check_positive_probs(behaviour_probs, "behaviour_probs")
    p = _half_to_float(probs)
    q = _half_to_float(behaviour_probs).to(p.dtype)
    r = bandit.means.to(p.dtype)
    rho = bandit.rho.to(p.dtype)
    J = ((p * r).sum(-1) * rho).sum(-1)
    return p, q, r, rho, J


def exact_is_J_variance(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor,
                        n_samples: int = 1, self_normalised: bool = False) -> Tensor:
    """Variance of the N-sample IS estimate of J(π) from μ, shape (...):

        ordinary (exact):          ( E_μ[w² (r² + σ²)] − J² ) / N
        self-normalised (large N): E_μ[w² ((r − J)² + σ²)] / N   (delta method)

    with E_μ[w² g] = Σ_s ρ(s) Σ_a π(a|s)² / μ(a|s) g(s, a), r the mean reward and σ the
    reward noise. SNIS replaces r by r − J: it is invariant to a shift of every reward.
    ``probs``, ``behaviour_probs``: (..., S, A).
    """
    check_positive_int(n_samples, "n_samples")
    p, q, r, rho, J = _bandit_tables(bandit, probs, behaviour_probs)
    w2 = p * p / q  # μ w² = π² / μ
    s2 = bandit.noise_std ** 2
    if self_normalised:
        d = r - J[..., None, None]
        m = ((w2 * (d * d + s2)).sum(-1) * rho).sum(-1)
    else:
        m = ((w2 * (r * r + s2)).sum(-1) * rho).sum(-1) - J * J
    return (m / n_samples).to(probs.dtype)


def snis_bias_coefficient(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor) -> Tensor:
    """c in E[Ĵ_SNIS] = J + c / N + O(1/N²):  c = −E_μ[w² (r − J)], shape (...).

    From the delta method on the ratio (Σ w r / N) / (Σ w / N). At N = 1 the weight cancels
    (Ĵ = r_1, so E Ĵ = J(μ)); as N grows the bias vanishes: SNIS is consistent.
    ``probs``, ``behaviour_probs``: (..., S, A).
    """
    p, q, r, rho, J = _bandit_tables(bandit, probs, behaviour_probs)
    return -(((p * p / q) * (r - J[..., None, None])).sum(-1) * rho).sum(-1).to(probs.dtype)


# -- methods ---------------------------------------------------------------------------------------
register_label("data", "behaviour_policy", side="trajectory",
               summary="samples drawn from a fixed behaviour policy μ, reweighted by π_θ/μ")
register_label("aggregation", "self_normalised", side="trajectory",
               summary="Σ_i w_i(·) / Σ_i w_i: divide by the sum of importance weights, not N")

register_method("Off-policy PG (IS)", "REINFORCE + baseline", data="behaviour_policy",
                policy_loss="importance_weighted",
                fixes="every update needs fresh samples from π_θ: importance weights π_θ/μ "
                      "reuse samples from another policy μ (unbiased; the variance grows with "
                      "the divergence of π_θ from μ)",
                chapter="05", reference="Kahn & Marshall 1953; Precup et al. 2000")
register_method("Off-policy PG (SNIS)", "Off-policy PG (IS)", aggregation="self_normalised",
                fixes="ordinary IS is unstable when a few weights are large: dividing by Σ w "
                      "bounds the estimate (biased by O(1/N), consistent)",
                chapter="05", reference="Hesterberg 1995; Owen 2013 (Monte Carlo theory, ch. 9)")

__all__ = [
    "effective_sample_size",
    "exact_is_J_variance",
    "exact_kl",
    "exact_weight_second_moment",
    "importance_weights",
    "is_estimate",
    "off_policy_J",
    "off_policy_gradient",
    "snis_bias_coefficient",
]
