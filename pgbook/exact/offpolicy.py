"""Off-policy estimation on the bandit world (chapter 05): exact variances and biases.

Samples come from a behaviour policy μ and are reweighted by w = π(a|s)/μ(a|s)
(:mod:`pgbook.trajectory.importance`). On an enumerable bandit the variance of ordinary IS,
the large-N variance and the O(1/N) bias of self-normalised IS, and E_μ[w²] = 1 + χ²(π‖μ)
are finite sums; this module computes them, and the IS estimates of J and ∇J they are
checked against. Factor of J(θ): trajectory (samples from p_μ instead of p_θ).

Shapes: probability tables (..., S, A); a batch from μ has fields (N,) or (M, N).
Everything runs on the device and dtype of its inputs; half precision is computed in
float32 and returned in the input dtype. The KL between two policies is
:func:`pgbook.exact.bandits.exact_kl`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_index,
    check_positive_int,
    check_probs,
    check_same_device,
    check_same_shape,
    check_tensor,
    to_work,
)
from ..reward.baselines import BaselineSpec, sample_weights
from ..trajectory.importance import check_positive_probs, importance_weights, is_estimate
from ..trajectory.losses import importance_weighted_loss, ratio
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy
from .bandits import check_world
from .stats import estimates_from_loss


def _check_flag(value: bool, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def _check_tables(probs: Tensor, behaviour_probs: Tensor) -> None:
    """Two probability tables (..., S, A) with the same (S, A) whose leading dims broadcast."""
    check_tensor(probs, "probs", floating=True)
    check_tensor(behaviour_probs, "behaviour_probs", floating=True)
    if probs.dim() < 2 or behaviour_probs.dim() < 2 or probs.shape[-2:] != behaviour_probs.shape[-2:]:
        raise ValueError(f"probs and behaviour_probs: expected tables (..., S, A) with the same "
                         f"S and A, got {tuple(probs.shape)} and {tuple(behaviour_probs.shape)}")
    try:
        torch.broadcast_shapes(probs.shape, behaviour_probs.shape)
    except RuntimeError:
        raise ValueError(f"probs and behaviour_probs: leading dimensions do not broadcast, got "
                         f"{tuple(probs.shape)} and {tuple(behaviour_probs.shape)}") from None

__all__ = [
    "exact_is_J_variance",
    "exact_weight_second_moment",
    "off_policy_J",
    "off_policy_gradient",
    "snis_bias_coefficient",
]


# -- IS estimates on a bandit -------------------------------------------------------------------
def _batch_weights(probs: Tensor, behaviour_probs: Tensor, batch: BanditBatch) -> Tensor:
    if not isinstance(batch, BanditBatch):
        raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
    check_positive_probs(probs, "probs")
    check_positive_probs(behaviour_probs, "behaviour_probs")
    check_same_shape(probs, behaviour_probs, "probs", "behaviour_probs")
    if probs.dim() != 2:
        raise ValueError(f"probs: expected a table of shape (S, A), got {tuple(probs.shape)}")
    check_same_device(probs=probs, behaviour_probs=behaviour_probs, s=batch.s)
    check_index(batch.s, "batch.s", probs.shape[0])
    check_index(batch.a, "batch.a", probs.shape[1])
    lp, lq = to_work(probs).log(), to_work(behaviour_probs).log()
    return importance_weights(lp[batch.s, batch.a], lq[batch.s, batch.a])


def off_policy_J(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor, batch: BanditBatch,
                 self_normalised: bool = False) -> Tensor:
    """Estimate J(π) = E_π[r] from a batch drawn from μ: ordinary IS (1/N) Σ w_i r_i or
    SNIS Σ w_i r_i / Σ w_i, with w_i = π(a_i|s_i) / μ(a_i|s_i).

    ``probs`` π and ``behaviour_probs`` μ are (S, A) tables, μ > 0 everywhere; the batch
    (``bandit.sample(behaviour_probs, ...)``) has fields (..., N); returns (...).
    """
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    bandit._check_probs(probs)
    _check_flag(self_normalised, "self_normalised")
    w = _batch_weights(probs, behaviour_probs, batch)
    check_finite(batch.r, "rewards")
    return is_estimate(batch.r.to(w.dtype), w, self_normalised).to(probs.dtype)


def off_policy_gradient(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                        behaviour_probs: Tensor, batch: BanditBatch,
                        baseline: BaselineSpec = "none",
                        self_normalised: bool = False) -> Tensor:
    """Estimate ∇J(θ) from a batch drawn from μ, as minus the gradient of the importance-
    weighted surrogate (:func:`pgbook.trajectory.losses.importance_weighted_loss`, ℓ_i = −w_i A_i):

        ordinary:        ĝ = (1/N) Σ_i w_i A_i ∇log π_θ(a_i|s_i)
        self-normalised: ĝ = Σ_i w_i A_i ∇log π_θ(a_i|s_i) / Σ_i w_i   (Σ w held fixed)

    with A_i = r_i − b_i for ``baseline`` (as in :func:`pgbook.reward.baselines.get_baseline`;
    'value' is V_π(s) of the *target* policy). ``theta`` is (P,); batch fields (N,) give
    (P,), (M, N) give (M, P) (one vectorised call). ``behaviour_probs`` is μ as an (S, A)
    table, > 0 everywhere. Trajectory factor of J(θ).
    """
    check_world(bandit, policy, theta)
    _check_flag(self_normalised, "self_normalised")
    check_tensor(behaviour_probs, "behaviour_probs", floating=True)
    check_same_device(theta=theta, bandit=bandit.means, behaviour_probs=behaviour_probs)
    if batch.s.dim() not in (1, 2):
        raise ValueError(
            f"batch: expected fields of shape (N,) or (M, N), got {tuple(batch.s.shape)}"
        )
    theta = theta.detach()
    with torch.no_grad():
        probs = policy.probs(theta)
    _batch_weights(probs, behaviour_probs, batch)  # validates μ, π and the batch
    blogp = to_work(behaviour_probs).log().to(theta.dtype)[batch.s, batch.a]
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


def exact_weight_second_moment(probs: Tensor, behaviour_probs: Tensor,
                               rho: Tensor | None = None) -> Tensor:
    """E_{s~ρ, a~μ}[w²] = Σ_s ρ(s) Σ_a π(a|s)² / μ(a|s) = 1 + χ²(π‖μ); shape (...).

    ≥ 1, equal to 1 iff π = μ. The ESS of N samples is ≈ N / E_μ[w²] for large N, and the
    variance of ordinary IS scales with it.
    """
    _check_tables(probs, behaviour_probs)
    check_probs(probs, "probs")
    check_positive_probs(behaviour_probs, "behaviour_probs")
    check_same_device(probs=probs, behaviour_probs=behaviour_probs)
    if rho is not None:
        check_tensor(rho, "rho", floating=True)
        check_same_device(rho=rho, probs=probs)
    p, q = to_work(probs), to_work(behaviour_probs).to(to_work(probs).dtype)
    return ((p * p / q).sum(-1) * _rho(rho, p)).sum(-1).to(probs.dtype)


def _bandit_tables(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor):
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    _check_tables(probs, behaviour_probs)
    bandit._check_probs(probs)
    bandit._check_probs(behaviour_probs, "behaviour_probs")
    check_probs(probs, "probs")
    check_positive_probs(behaviour_probs, "behaviour_probs")
    p = to_work(probs)
    q = to_work(behaviour_probs).to(p.dtype)
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
    _check_flag(self_normalised, "self_normalised")
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
