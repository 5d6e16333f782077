"""Exact analysis on the bandit world (Part I): J, ∇J, and the exact moments of estimators.

Because a bandit has finitely many contexts and actions,

    J(θ) = Σ_s ρ(s) Σ_a π_θ(a|s) r(s, a)

is a finite, differentiable sum: autograd gives the exact gradient ∇J(θ) every estimator is
compared with. An estimator is written as a *surrogate loss* whose autograd gradient is the
estimate,

    loss(θ) = −(1/N) Σ_i sg(w_i) · log π_θ(a_i|s_i),      −∇loss = ĝ,

with w_i = r_i − b_i the reward-side weight (:mod:`pgbook.reward.baselines`) and ∇log π the
trajectory-side score (:meth:`pgbook.worlds.bandits.SoftmaxPolicy.scores`). Enumerating every
(s, a) gives the estimator's exact mean and covariance; :func:`policy_gradient_estimates`
draws Monte-Carlo estimates to compare with them (:class:`pgbook.exact.stats.EstimatorStats`).

Shapes: samples (N,) or (M, N) for M independent batches; θ (P,); scores (S, A, P).
Everything runs on the device and dtype of θ and the bandit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_index,
    check_positive_int,
    check_probs,
    check_same_device,
    check_tensor,
    to_work,
)
from ..reward.baselines import BaselineSpec, baseline_table, sample_weights
from ..trajectory.losses import score_function_loss
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy
from .stats import estimates_from_loss

__all__ = [
    "baseline_bias",
    "check_world",
    "exact_J",
    "exact_control_variate_moments",
    "exact_coordinate_baseline_variance",
    "exact_estimator_moments",
    "exact_gradient",
    "exact_kl",
    "exact_total_variance",
    "exact_total_variances",
    "policy_gradient_estimates",
    "reinforce_surrogate",
    "score",
    "softmax_score",
    "state_kl",
]


def check_world(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor | None = None,
                name: str = "theta", *, batched: bool = False) -> None:
    """The policy must have the bandit's contexts and actions; θ (when given, named ``name``
    in errors) must be a finite floating (P,) tensor on the bandit's device, or (..., P)
    with ``batched`` (for the functions that take a batch of parameter vectors)."""
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a pgbook.worlds.bandits.Bandit, got {type(bandit).__name__}")
    if not isinstance(policy, SoftmaxPolicy):
        raise ValueError(f"policy: expected a SoftmaxPolicy, got {type(policy).__name__}")
    if (policy.n_contexts, policy.n_actions) != (bandit.n_contexts, bandit.n_actions):
        raise ValueError(f"policy: expected {bandit.n_contexts} contexts × {bandit.n_actions} "
                         f"actions (the bandit's), got {policy.n_contexts} × {policy.n_actions}")
    if theta is not None:
        policy._check_theta(theta, name, batched=batched)  # floating, (P,) or (..., P), finite
        check_same_device(**{name: theta}, bandit=bandit.means)


def _check_batch(batch: BanditBatch, policy: SoftmaxPolicy) -> BanditBatch:
    """A BanditBatch whose ids index the policy's contexts and actions (checked before any
    ``torch.func`` transform, inside which the values cannot be read)."""
    if not isinstance(batch, BanditBatch):
        raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
    check_index(batch.s, "batch.s", policy.n_contexts)
    check_index(batch.a, "batch.a", policy.n_actions)
    return batch


# -- J and its gradient --------------------------------------------------------------------------
def exact_J(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """J(θ) by enumeration (differentiable); ``theta`` (P,) or a batch (..., P), J of shape
    (...)."""
    check_world(bandit, policy, theta, batched=True)
    return bandit.J(policy.probs(theta))


def exact_gradient(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """∇J(θ), shape (P,), by autograd through the enumerated sum."""
    check_world(bandit, policy, theta)
    return torch.func.grad(lambda t: exact_J(bandit, policy, t))(theta.detach())


# -- the score function and the surrogate ------------------------------------------------------
def score(policy: SoftmaxPolicy, theta: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Per-sample score ∇_θ log π_θ(a_i|s_i), shape (*batch, P), by vectorised autograd."""
    if not isinstance(policy, SoftmaxPolicy):
        raise ValueError(f"policy: expected a SoftmaxPolicy, got {type(policy).__name__}")
    policy.log_prob(theta, s, a)  # checks θ, the ids and their shapes before the transform
    jac = torch.func.jacrev(lambda t: policy.log_prob(t, s, a))(theta.detach())
    return jac


def softmax_score(probs: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Closed form for a tabular softmax: ∇_{logits(s)} log π(a|s) = e_a − π(·|s).

    Returns (*batch, S, A): row s_i holds e_{a_i} − π(·|s_i), other rows are zero.
    """
    check_tensor(probs, "probs", ndim=2, floating=True)
    check_probs(probs, "probs")
    S, A = probs.shape
    check_index(s, "s", S)
    check_index(a, "a", A)
    if s.shape != a.shape:
        raise ValueError(f"s and a must have the same shape, got {tuple(s.shape)} and "
                         f"{tuple(a.shape)}")
    check_same_device(probs=probs, s=s, a=a)
    out = torch.zeros(*s.shape, S, A, dtype=probs.dtype, device=probs.device)
    row = torch.nn.functional.one_hot(a, A).to(probs.dtype) - probs[s]
    out.scatter_(-2, s[..., None, None].expand(*s.shape, 1, A), row.unsqueeze(-2))
    return out


def reinforce_surrogate(policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                        weights: Tensor) -> Tensor:
    """The scalar loss −(1/N) Σ_i sg(w_i) log π_θ(a_i|s_i); −∇ of it is the estimate ĝ.

    ``weights`` has the batch's shape (N,): rewards, or rewards minus a baseline.
    """
    if not isinstance(batch, BanditBatch):
        raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
    check_tensor(weights, "weights", floating=True)
    if weights.shape != batch.s.shape:
        raise ValueError(f"weights: expected shape {tuple(batch.s.shape)}, got {tuple(weights.shape)}")
    check_finite(weights, "weights")
    logp = policy.log_prob(theta, batch.s, batch.a)
    return score_function_loss(logp, weights).mean()


# -- exact moments of the score-function estimator ---------------------------------------------
def exact_estimator_moments(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                            baseline: BaselineSpec = "none") -> tuple[Tensor, Tensor]:
    """Exact mean (P,) and covariance (P, P) of the *single-sample* estimator
    g = ∇log π(a|s) (r − b(s, a)), by enumerating every (s, a) (and the reward noise).

    An N-sample average has the same mean and covariance / N. ``baseline`` is any baseline
    spec of :mod:`pgbook.reward.baselines` ('none', 'value', 'optimal', a number, an (S,) or
    (S, A) table, a callable): the same specs the Monte-Carlo tools take.
    """
    check_world(bandit, policy, theta)
    with torch.no_grad():
        probs = policy.probs(theta)
        sc = policy.scores(theta)  # (S, A, P)
        b = baseline_table(bandit, policy, theta, baseline).to(probs.dtype)
        w = bandit.means.to(probs.dtype) - b  # (S, A)
        joint = bandit.rho.to(probs.dtype)[:, None] * probs  # (S, A)
        mean = torch.einsum("sa,sap->p", joint * w, sc)
        second = torch.einsum("sa,sap,saq->pq", joint * (w * w + bandit.noise_std ** 2), sc, sc)
        return mean, second - torch.outer(mean, mean)


def exact_total_variance(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                         baseline: BaselineSpec = "none", n_samples: int = 1) -> Tensor:
    """tr Cov[ĝ] of the N-sample estimator with ``baseline`` (a baseline spec), exactly:
    the single-sample trace divided by N = ``n_samples``."""
    check_positive_int(n_samples, "n_samples")
    _, cov = exact_estimator_moments(bandit, policy, theta, baseline)
    return torch.diagonal(cov).sum() / n_samples


def exact_total_variances(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                          tables: Tensor, n_samples: int = 1) -> Tensor:
    """tr Cov[ĝ] of the N-sample estimator for a whole batch of baselines at once, exactly:

        tr Cov = (1/N) ( Σ_{s,a} ρ(s) π(a|s) ‖∇log π(a|s)‖² ((r(s,a) − b(s,a))² + σ²)
                         − ‖E[ĝ]‖² ),    E[ĝ] = Σ_{s,a} ρ π ∇log π (r − b).

    ``tables`` is (..., S, A): one baseline table b(s, a) per leading index (constant along
    a for a state baseline, e.g. ``c[:, None, None].expand(-1, S, A)`` for constants c);
    returns (...). A shift of every reward by c is the baseline −c. Reward side of J(θ)
    (the weight r − b), averaged with the trajectory-side score. Half-precision inputs are
    computed in float32 and returned in their own dtype.
    """
    check_world(bandit, policy, theta)
    check_tensor(tables, "tables", floating=True)
    if tables.dim() < 2 or tuple(tables.shape[-2:]) != (bandit.n_contexts, bandit.n_actions):
        raise ValueError(
            f"tables: expected shape (..., {bandit.n_contexts}, {bandit.n_actions}), "
            f"got {tuple(tables.shape)}"
        )
    check_same_device(tables=tables, theta=theta, bandit=bandit.means)
    check_finite(tables, "tables")
    check_positive_int(n_samples, "n_samples")
    out_dtype = torch.promote_types(theta.dtype, tables.dtype)
    th = to_work(theta.detach())
    with torch.no_grad():
        probs = policy.probs(th)
        sc = policy.scores(th)  # (S, A, P)
        joint = bandit.rho.to(th.dtype)[:, None] * probs  # (S, A)
        w = bandit.means.to(th.dtype) - tables.to(th.dtype)  # (..., S, A)
        mean = torch.einsum("...sa,sap->...p", joint * w, sc)
        sq = sc.pow(2).sum(-1)  # (S, A)
        second = (joint * sq * (w * w + bandit.noise_std ** 2)).sum((-2, -1))
        return ((second - mean.pow(2).sum(-1)) / n_samples).to(out_dtype)


def baseline_bias(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                  baseline: BaselineSpec) -> Tensor:
    """Exact bias E[ĝ_b] − ∇J of the estimator with ``baseline`` (a baseline spec; an (S, A)
    table b(s, a) for an action-dependent one), shape (P,):

        E[∇log π (r − b)] − ∇J = −E[∇log π · b] = −∇_θ Σ_s ρ(s) Σ_a π_θ(a|s) b(s, a)  (b fixed).

    A baseline that depends on the state only gives zero. Reward side of J(θ): b changes
    the weight r − b, and an action-dependent b changes what the estimator climbs (the
    objective with rewards b subtracted).
    """
    check_world(bandit, policy, theta)
    table = baseline_table(bandit, policy, theta, baseline)
    f = lambda t: bandit.J(policy.probs(t), rewards=table.to(t.dtype))
    return -torch.func.grad(f)(theta.detach())


def exact_coordinate_baseline_variance(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                                       table: Tensor, n_samples: int = 1) -> Tensor:
    """tr Cov[ĝ] exactly when coordinate k of each sample uses its own state baseline,
    ĝ_k = ∂_k log π(a|s) (r − b_k(s)), with ``table`` b of shape (S, P) (e.g.
    :func:`pgbook.reward.baselines.optimal_coordinate_baseline_table`):

        tr Cov = (1/N) Σ_k ( Σ_{s,a} ρ π (∂_k log π)² ((r − b_k(s))² + σ²) − (∂_k J)² ).

    A table constant along k is an ordinary state baseline (the value of
    :func:`exact_total_variance`). Reward side of J(θ). Returns a 0-dim tensor.
    """
    check_world(bandit, policy, theta)
    check_tensor(table, "table", floating=True)
    if tuple(table.shape) != (bandit.n_contexts, policy.n_params):
        raise ValueError(f"table: expected shape ({bandit.n_contexts}, {policy.n_params}) "
                         f"(one baseline per context and coordinate), got {tuple(table.shape)}")
    check_finite(table, "table")
    check_same_device(table=table, theta=theta)
    check_positive_int(n_samples, "n_samples")
    with torch.no_grad():
        probs = policy.probs(theta)
        sc = policy.scores(theta)  # (S, A, P)
        joint = bandit.rho.to(probs.dtype)[:, None] * probs
        w = bandit.means.to(probs.dtype)[:, :, None] - table.to(probs.dtype)[:, None, :]
        mean = torch.einsum("sa,sap->p", joint * bandit.means.to(probs.dtype), sc)
        second = torch.einsum("sa,sap->p", joint, sc.pow(2) * (w * w + bandit.noise_std ** 2))
        return (second - mean.pow(2)).sum() / n_samples


def exact_control_variate_moments(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                                  table: Tensor) -> tuple[Tensor, Tensor]:
    """Exact mean (P,) and covariance (P, P) of the one-sample estimator with an
    action-dependent control variate whose expectation is added back (Q-Prop, Gu et al.
    2017; Tucker et al. 2018; Liu et al. 2018):

        g(s, a) = ∇log π(a|s) (r − b(s, a)) + Σ_{a'} π(a'|s) ∇log π(a'|s) b(s, a'),

    with ``table`` b (S, A) held fixed. The added term is E_{a'~π}[∇log π(a'|s) b(s, a')],
    computed exactly for the sampled context, so E[g] = ∇J for *any* b (the bias of
    :func:`baseline_bias` is cancelled); the variance is what b changes. With b = r the
    action's randomness drops out entirely and only the context's remains. Reward side of
    J(θ) (the weight r − b) plus an exact correction term.
    """
    check_world(bandit, policy, theta)
    check_tensor(table, "table", floating=True)
    if tuple(table.shape) != (bandit.n_contexts, bandit.n_actions):
        raise ValueError(f"table: expected shape ({bandit.n_contexts}, {bandit.n_actions}), "
                         f"got {tuple(table.shape)}")
    check_finite(table, "table")
    check_same_device(table=table, theta=theta)
    with torch.no_grad():
        probs = policy.probs(theta)
        sc = policy.scores(theta)  # (S, A, P)
        b = table.to(probs.dtype)
        corr = torch.einsum("sa,sap->sp", probs * b, sc)  # (S, P): Σ_a' π b ∇log π
        g = sc * (bandit.means.to(probs.dtype) - b)[..., None] + corr[:, None, :]
        joint = bandit.rho.to(probs.dtype)[:, None] * probs
        mean = torch.einsum("sa,sap->p", joint, g)
        second = torch.einsum("sa,sap,saq->pq", joint, g, g) + bandit.noise_std ** 2 * \
            torch.einsum("sa,sap,saq->pq", joint, sc, sc)
        return mean, second - torch.outer(mean, mean)


# -- Monte-Carlo estimates to compare with ------------------------------------------------------
def policy_gradient_estimates(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                              n_samples: int, n_estimates: int, generator: torch.Generator,
                              baseline: BaselineSpec = "none") -> Tensor:
    """M = ``n_estimates`` independent N-sample score-function estimates of ∇J, (M, P).

    Each uses a fresh batch of N = ``n_samples`` draws (s, a, r) and the weights r − b for
    ``baseline`` ('none', 'value', 'optimal', a number, or a callable; see
    :func:`pgbook.reward.baselines.get_baseline`).
    """
    check_world(bandit, policy, theta)
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_estimates, "n_estimates")
    theta = theta.detach()
    batch = bandit.sample(policy.probs(theta), (n_estimates, n_samples), generator)
    w = sample_weights(bandit, policy, theta, batch, baseline)

    def loss(t, sample):
        s, a, weights = sample
        return reinforce_surrogate(policy, t, BanditBatch(s, a, weights), weights)

    return estimates_from_loss(loss, theta, (batch.s, batch.a, w))


# -- the KL divergence between two policies ---------------------------------------------------
def state_kl(logp_ref: Tensor, logp: Tensor) -> Tensor:
    """Per-context KL(π_ref(·|s) ‖ π(·|s)) = Σ_a π_ref(a|s) (log π_ref(a|s) − log π(a|s)).

    ``logp_ref`` and ``logp`` are log-probability tables of shape (..., S, A) with the same
    (S, A) and leading dimensions that broadcast; returns (..., S). Differentiable in both.
    Actions with π_ref = 0 (log −inf) contribute 0; an action with π = 0 where π_ref > 0
    gives +inf. NaN or +inf entries raise ValueError.
    """
    check_tensor(logp_ref, "logp_ref", floating=True)
    check_tensor(logp, "logp", floating=True)
    check_same_device(logp_ref=logp_ref, logp=logp)
    if logp_ref.dim() < 2 or logp.dim() < 2 or logp_ref.shape[-2:] != logp.shape[-2:]:
        raise ValueError(
            f"logp_ref and logp: expected tables (..., S, A) with the same contexts S and actions A, got "
            f"{tuple(logp_ref.shape)} and {tuple(logp.shape)}"
        )
    if any(a != b and a != 1 and b != 1
           for a, b in zip(reversed(logp_ref.shape[:-2]), reversed(logp.shape[:-2]))):
        raise ValueError(f"logp_ref and logp: leading dimensions do not broadcast, got "
                         f"{tuple(logp_ref.shape)} and {tuple(logp.shape)}")
    for name, t in (("logp_ref", logp_ref), ("logp", logp)):
        # a NaN or +inf entry makes the sum NaN or +inf (−inf entries alone give −inf)
        if not _is_meta(t) and t.numel() and not float(t.detach().sum()) < math.inf and \
                bool((torch.isnan(t) | (t == torch.inf)).any()):
            raise ValueError(f"{name}: expected log-probabilities (−inf allowed), got NaN or +inf")
    p_ref = logp_ref.exp()
    terms = p_ref * (logp_ref - logp)
    return torch.where(p_ref > 0, terms, torch.zeros_like(terms)).sum(-1)


def exact_kl(bandit: Bandit, logp_ref: Tensor, logp: Tensor) -> Tensor:
    """Exact KL(π_ref ‖ π) = Σ_s ρ(s) Σ_a π_ref(a|s) log(π_ref(a|s) / π(a|s)), shape (...).

    ``logp_ref`` and ``logp`` are log-probability tables (..., S, A) that broadcast against
    each other, e.g. ``policy.log_probs(theta_ref)`` and ``policy.log_probs(theta)``, or
    ``probs.log()`` for tables of probabilities; ρ is the bandit's. Differentiable in both
    (so in θ through ``policy.log_probs``). Zero iff π = π_ref on every context with ρ > 0.
    This is the divergence PPO penalises (chapter 07), the one whose second-order expansion
    is the Fisher quadratic (chapter 06), and the one that sets the variance of importance
    weights (chapter 05). Factor of J(θ): trajectory (a distance between two trajectory
    distributions).
    """
    for name, t in (("logp_ref", logp_ref), ("logp", logp)):
        check_tensor(t, name, floating=True)
        if t.dim() < 2 or tuple(t.shape[-2:]) != (bandit.n_contexts, bandit.n_actions):
            raise ValueError(f"{name}: expected shape (..., {bandit.n_contexts}, "
                             f"{bandit.n_actions}) (log π(a|s) for every context and action), "
                             f"got {tuple(t.shape)}")
    check_same_device(logp_ref=logp_ref, logp=logp, bandit=bandit.means)
    kl = state_kl(logp_ref, logp)
    return (kl * bandit.rho.to(kl.dtype)).sum(-1)
