"""Off-policy estimation on the bandit world (chapter 05): exact variances and biases.

Samples come from a behaviour policy μ and are reweighted by w = π(a|s)/μ(a|s)
(:mod:`pgbook.trajectory.importance`). On an enumerable bandit the variance of ordinary IS,
the large-N variance and the O(1/N) bias of self-normalised IS, the bias and variance of
truncated IS, and E_μ[w²] = 1 + χ²(π‖μ) are finite sums; this module computes them, and
the IS estimates of J and ∇J they are checked against. On the enumerable tiny LM
(:mod:`pgbook.worlds.seqlm`) it computes the second moment of the sequence weight
Π_t π(y_t|h_t)/μ(y_t|h_t), which grows with the response length. Factor of J(θ):
trajectory (samples from p_μ instead of p_θ).

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
from ..worlds.seqlm import SeqPolicy, Sequences
from .bandits import check_world
from .seqlm import _check_policy, _seqs
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
    "exact_prefix_weight_second_moment",
    "exact_tis_J_moments",
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
                 self_normalised: bool = False, truncate: float | None = None) -> Tensor:
    """Estimate J(π) = E_π[r] from a batch drawn from μ: ordinary IS (1/N) Σ w_i r_i,
    SNIS Σ w_i r_i / Σ w_i, or truncated IS (1/N) Σ min(w_i, c) r_i (``truncate=c``), with
    w_i = π(a_i|s_i) / μ(a_i|s_i).

    ``probs`` π and ``behaviour_probs`` μ are (S, A) tables, μ > 0 everywhere; the batch
    (``bandit.sample(behaviour_probs, ...)``) has fields (..., N); returns (...).
    """
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    bandit._check_probs(probs)
    _check_flag(self_normalised, "self_normalised")
    w = _batch_weights(probs, behaviour_probs, batch)
    check_finite(batch.r, "rewards")
    return is_estimate(batch.r.to(w.dtype), w, self_normalised, truncate).to(probs.dtype)


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


def exact_tis_J_moments(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor,
                        c: float | Tensor, n_samples: int = 1) -> tuple[Tensor, Tensor]:
    """Exact bias and variance of the truncated IS estimate Ĵ = (1/N) Σ_i min(w_i, c) r_i of
    J(π) from N samples of μ, each of shape (...) (``c`` a number or a tensor that
    broadcasts with the tables' batch shape (...), e.g. a grid of levels):

        bias     = E_μ[min(w, c) r] − J = −Σ_s ρ(s) Σ_a μ(a|s) (w − c)₊ r(s, a)
        variance = ( E_μ[min(w, c)² (r² + σ²)] − E_μ[min(w, c) r]² ) / N

    with w = π/μ, r the mean reward and σ the reward noise. The bias does not shrink with N
    (unlike SNIS's); for c ≥ max w it is 0 and the variance is ordinary IS's
    (:func:`exact_is_J_variance`). ``probs``, ``behaviour_probs``: (..., S, A).
    Trajectory factor of J(θ).
    """
    check_positive_int(n_samples, "n_samples")
    p, q, r, rho, J = _bandit_tables(bandit, probs, behaviour_probs)
    if isinstance(c, Tensor):
        check_tensor(c, "c")
        check_same_device(c=c, probs=probs)
    elif isinstance(c, (bool, str)) or not isinstance(c, (int, float)):
        raise ValueError(f"c: expected a number or a tensor of truncation levels, got {c!r}")
    c_t = torch.as_tensor(c, dtype=p.dtype, device=p.device)
    check_finite(c_t, "c")
    if c_t.device.type != "meta" and bool((c_t <= 0).any()):
        raise ValueError(f"c: expected truncation levels > 0, got min {float(c_t.min()):g}")
    c_t = c_t[..., None, None]
    w = torch.clamp(p / q, max=c_t)
    s2 = bandit.noise_std ** 2
    first = ((q * w * r).sum(-1) * rho).sum(-1)
    second = ((q * w * w * (r * r + s2)).sum(-1) * rho).sum(-1)
    bias = first - J
    var = (second - first * first) / n_samples
    return bias.to(probs.dtype), var.to(probs.dtype)


def exact_prefix_weight_second_moment(policy: SeqPolicy, theta: Tensor, behaviour_theta: Tensor,
                                      behaviour_policy: SeqPolicy | None = None,
                                      seqs: Sequences | None = None,
                                      per_token: bool = False) -> Tensor:
    """E_{x~ρ, y~μ}[ w_{1:L}² ] for every prefix length L = 1..T on the enumerable tiny LM,
    shape (T,), where

        w_{1:L}(x, y) = Π_{t ≤ L} π_θ(y_t|h_t) / μ(y_t|h_t)

    is the importance weight of the response's first L tokens (positions after EOS count
    as ratio 1: the response has ended). ``w_{1:T}`` is the sequence weight
    p_θ(y|x) / p_μ(y|x). Its mean is exactly 1 for every L (a product of ratios is a
    martingale under μ), and its second moment grows with L, roughly geometrically when
    each token contributes a similar χ²: this is why a sequence-level ratio is unusable
    for long responses, and why PPO's per-token ratio and GSPO's length-normalised ratio
    exist. The sum runs in log space (logsumexp), so tiny sequence probabilities do not
    underflow.

    ``per_token=True`` returns instead the second moment of the single token weight at each
    position, E_μ[(π_θ(y_t|h_t)/μ(y_t|h_t))² | the response is still running at t], (T,)
    (NaN-free: a position no response reaches gives 1): the weight PPO's per-token ratio
    uses, which does not compound with t.

    ``policy`` and ``behaviour_policy`` (default: ``policy``) are
    :class:`pgbook.worlds.seqlm.SeqPolicy` objects on one space; ``theta`` π's parameters,
    ``behaviour_theta`` μ's. ``seqs`` defaults to the full enumeration. Runs in θ's dtype
    and device. Trajectory factor of J(θ).
    """
    _check_policy(policy, theta)
    mu_policy = policy if behaviour_policy is None else behaviour_policy
    if not isinstance(mu_policy, SeqPolicy):
        raise ValueError(f"behaviour_policy: expected a SeqPolicy (or None: the policy itself), "
                         f"got {type(mu_policy).__name__}")
    _check_policy(mu_policy, behaviour_theta, "behaviour_theta")
    check_same_device(theta=theta, behaviour_theta=behaviour_theta)
    if not isinstance(per_token, bool):
        raise ValueError(f"per_token: expected True or False, got {per_token!r}")
    if mu_policy.space is not policy.space and (mu_policy.space.T != policy.space.T
                                                or mu_policy.space.V != policy.space.V):
        raise ValueError("behaviour_policy: expected a policy on the same space as policy "
                         f"(T={policy.space.T}, V={policy.space.V}), got T={mu_policy.space.T}, "
                         f"V={mu_policy.space.V}")
    seqs = _seqs(policy, seqs)
    with torch.no_grad():
        lp = to_work(policy.token_logprobs(theta.detach(), seqs.x, seqs.tokens))
        lq = to_work(mu_policy.token_logprobs(behaviour_theta.detach(), seqs.x, seqs.tokens))
        lq = lq.to(lp.dtype)
        m = seqs.mask.to(lp.dtype)
        log_r = m * (lp - lq)                                          # (N, T): log w_t
        rho = policy.space.rho.to(device=lp.device, dtype=lp.dtype)
        log_q = rho.log()[seqs.x] + (m * lq).sum(-1)                   # log ρ(x) p_μ(y|x)
        if per_token:
            q = log_q.exp()[:, None]
            alive = (q * m).sum(0)
            num = (q * m * (2 * log_r).exp()).sum(0)
            out = torch.where(alive > 0, num / alive.clamp_min(torch.finfo(q.dtype).tiny),
                              torch.ones_like(alive))
        else:
            log_w = torch.cumsum(log_r, dim=-1)                        # log w_{1:L}
            out = torch.logsumexp(log_q[:, None] + 2 * log_w, dim=0).exp()
    return out.to(theta.dtype)


def snis_bias_coefficient(bandit: Bandit, probs: Tensor, behaviour_probs: Tensor) -> Tensor:
    """c in E[Ĵ_SNIS] = J + c / N + O(1/N²):  c = −E_μ[w² (r − J)], shape (...).

    From the delta method on the ratio (Σ w r / N) / (Σ w / N). At N = 1 the weight cancels
    (Ĵ = r_1, so E Ĵ = J(μ)); as N grows the bias vanishes: SNIS is consistent.
    ``probs``, ``behaviour_probs``: (..., S, A).
    """
    p, q, r, rho, J = _bandit_tables(bandit, probs, behaviour_probs)
    return -(((p * p / q) * (r - J[..., None, None])).sum(-1) * rho).sum(-1).to(probs.dtype)
