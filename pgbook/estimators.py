"""Policy-gradient estimators on the exact bandit world (Part I).

An estimator is written as a *surrogate loss* whose autograd gradient is the estimator:

    loss(θ) = −(1/N) Σ_i sg(w_i) · log π_θ(a_i|s_i),      −∇loss = ĝ,

with w_i the weight of sample i: the reward (REINFORCE), or the reward minus a baseline
(an advantage). Baselines are reward-side pieces (they change the weight R, not p_θ); the
score function ∇log π is the trajectory-side piece.

Shapes: samples (N,) — or (M, N) for M independent batches; θ (P,); per-sample scores
(N, P). Everything runs on the device and dtype of θ and the bandit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import check_finite, check_positive_int, check_same_device, check_tensor
from .bandits import Bandit, BanditBatch, SoftmaxPolicy, exact_J
from .losses import score_function_loss
from .registry import register, register_label, register_method


def score(policy: SoftmaxPolicy, theta: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Per-sample score ∇_θ log π_θ(a_i|s_i), shape (*batch, P), by vectorised autograd."""
    jac = torch.func.jacrev(lambda t: policy.log_prob(t, s, a))(theta.detach())
    return jac


def all_scores(policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """∇_θ log π_θ(a|s) for every (s, a), shape (S, A, P)."""
    return torch.func.jacrev(policy.log_probs)(theta.detach())


def softmax_score(probs: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Closed form for a tabular softmax: ∇_{logits(s)} log π(a|s) = e_a − π(·|s).

    Returns (*batch, S, A): row s_i holds e_{a_i} − π(·|s_i), other rows are zero.
    """
    S, A = probs.shape
    out = torch.zeros(*s.shape, S, A, dtype=probs.dtype, device=probs.device)
    row = torch.nn.functional.one_hot(a, A).to(probs.dtype) - probs[s]
    out.scatter_(-2, s[..., None, None].expand(*s.shape, 1, A), row.unsqueeze(-2))
    return out


def reinforce_surrogate(policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                        weights: Tensor) -> Tensor:
    """The scalar loss −(1/N) Σ_i sg(w_i) log π_θ(a_i|s_i); −∇ of it is the estimate ĝ.

    ``weights`` has the batch's shape (N,): rewards, or rewards minus a baseline.
    """
    check_tensor(weights, "weights", floating=True)
    if weights.shape != batch.s.shape:
        raise ValueError(f"weights: expected shape {tuple(batch.s.shape)}, got {tuple(weights.shape)}")
    check_finite(weights, "weights")
    logp = policy.log_prob(theta, batch.s, batch.a)
    return score_function_loss(logp, weights).mean()


# -- baselines (reward side) ------------------------------------------------------------------
# A baseline maps (bandit, policy, θ, batch) to b_i with the batch's shape; the weight of a
# sample becomes r_i − b_i. Baselines that depend only on s leave E[ĝ] unchanged.


@register("advantage", "reward", side="reward", summary="w = R (no baseline)")
def no_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b = 0: the weight is the raw reward."""
    return torch.zeros_like(batch.r)


def constant_baseline(c: float):
    """b = c for every sample (a state baseline that ignores the state): unbiased."""

    def baseline(bandit, policy, theta, batch):
        return torch.full_like(batch.r, float(c))

    baseline.__name__ = f"constant_baseline({c:g})"
    return baseline


register_label("advantage", "constant_baseline", side="reward", summary="w = R − c")


@register("advantage", "state_value", side="reward", summary="w = R − V(s) = A(s, a)")
def value_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b(s) = V_θ(s) = Σ_a π_θ(a|s) r(s, a) (exact), so the weight is the advantage A(s, a)."""
    with torch.no_grad():
        return bandit.values(policy.probs(theta))[batch.s]


def optimal_baseline_table(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """The variance-optimal state baseline, shape (S,):

        b*(s) = E_{a~π(·|s)}[ ‖∇log π(a|s)‖² r(s, a) ] / E_{a~π(·|s)}[ ‖∇log π(a|s)‖² ].

    It minimises the total variance tr Cov[ĝ] among baselines that depend on s only
    (reward noise adds a constant that does not move the minimiser).
    """
    with torch.no_grad():
        probs = policy.probs(theta)
        sq = all_scores(policy, theta).pow(2).sum(-1)  # (S, A)
        num = (probs * sq * bandit.means.to(probs.dtype)).sum(-1)
        den = (probs * sq).sum(-1)
        v = bandit.values(probs)
        # where every score is zero (a deterministic policy) any baseline is optimal: use V(s)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), v)


@register("advantage", "optimal_baseline", side="reward",
          summary="w = R − b*(s), b* = E[‖∇log π‖² r]/E[‖∇log π‖²]")
def optimal_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b*(s_i) from :func:`optimal_baseline_table`."""
    return optimal_baseline_table(bandit, policy, theta)[batch.s]


def action_baseline(table: Tensor):
    """b(s, a) = table[s, a]: a baseline that *depends on the action*. Biased: the bias of
    the gradient is exactly −∇_θ Σ_s ρ(s) Σ_a π_θ(a|s) b(s, a) (see :func:`baseline_bias`)."""

    def baseline(bandit, policy, theta, batch):
        check_same_device(table=table, r=batch.r)
        return table.to(batch.r.dtype)[batch.s, batch.a]

    return baseline


def baseline_bias(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, table: Tensor) -> Tensor:
    """Exact bias E[ĝ_b] − ∇J of the estimator with baseline b(s, a) = ``table`` (S, A):

        E[∇log π (r − b)] − ∇J = −E[∇log π · b] = −∇_θ Σ_s ρ(s) Σ_a π_θ(a|s) b(s, a)  (b fixed).

    A table constant in a (a state baseline) gives zero.
    """
    f = lambda t: bandit.J(policy.probs(t), rewards=table.to(t.dtype))
    return -torch.func.grad(f)(theta.detach())


BASELINES = {
    "none": no_baseline,
    "value": value_baseline,
    "optimal": optimal_baseline,
}


def get_baseline(baseline) -> callable:
    """A baseline callable from a name ('none', 'value', 'optimal'), a number (constant
    baseline) or a callable (returned as is)."""
    if callable(baseline):
        return baseline
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return constant_baseline(float(baseline))
    if baseline in BASELINES:
        return BASELINES[baseline]
    raise ValueError(
        f"baseline: expected one of {sorted(BASELINES)}, a number or a callable, got {baseline!r}"
    )


def sample_weights(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                   baseline="none") -> Tensor:
    """w_i = r_i − b_i for the chosen baseline; shape of the batch."""
    check_finite(batch.r, "rewards")
    b = get_baseline(baseline)(bandit, policy, theta, batch)
    return batch.r - b


def exact_estimator_moments(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                            baseline_table: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact mean (P,) and covariance (P, P) of the *single-sample* estimator
    g = ∇log π(a|s) (r − b(s, a)), by enumerating every (s, a) (and the reward noise).

    An N-sample average has the same mean and covariance / N.
    ``baseline_table`` is b as an (S, A) table (constant along a for a state baseline).
    """
    with torch.no_grad():
        probs = policy.probs(theta)
        sc = all_scores(policy, theta)  # (S, A, P)
        b = torch.zeros_like(probs) if baseline_table is None else baseline_table.to(probs.dtype)
        w = bandit.means.to(probs.dtype) - b  # (S, A)
        joint = bandit.rho.to(probs.dtype)[:, None] * probs  # (S, A)
        mean = torch.einsum("sa,sap->p", joint * w, sc)
        second = torch.einsum("sa,sap,saq->pq", joint * (w * w + bandit.noise_std ** 2), sc, sc)
        return mean, second - torch.outer(mean, mean)


def exact_total_variance(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                         baseline_table: Tensor | None = None, n_samples: int = 1) -> Tensor:
    """tr Cov[ĝ] of the N-sample estimator, exactly: the single-sample trace divided by N."""
    _, cov = exact_estimator_moments(bandit, policy, theta, baseline_table)
    return torch.diagonal(cov).sum() / n_samples


def state_table(values: Tensor, n_actions: int) -> Tensor:
    """Broadcast a per-context baseline (S,) to an (S, A) table."""
    return values[:, None].expand(-1, n_actions)


def _half_to_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


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
    th = _half_to_float(theta.detach())
    with torch.no_grad():
        probs = policy.probs(th)
        sc = all_scores(policy, th)  # (S, A, P)
        joint = bandit.rho.to(th.dtype)[:, None] * probs  # (S, A)
        w = bandit.means.to(th.dtype) - tables.to(th.dtype)  # (..., S, A)
        mean = torch.einsum("...sa,sap->...p", joint * w, sc)
        sq = sc.pow(2).sum(-1)  # (S, A)
        second = (joint * sq * (w * w + bandit.noise_std ** 2)).sum((-2, -1))
        return ((second - mean.pow(2).sum(-1)) / n_samples).to(out_dtype)


def optimal_constant_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """The constant b that minimises tr Cov[ĝ] among constant baselines, a scalar:

        b_c* = E_{s~ρ, a~π}[ ‖∇log π(a|s)‖² r(s, a) ] / E_{s~ρ, a~π}[ ‖∇log π(a|s)‖² ].

    (tr Cov is a parabola in b; this is its vertex.) It is J(θ) = E[r] only when every score
    has the same norm. Reward side of J(θ). Returns J(θ) where every score is zero.
    """
    check_same_device(theta=theta, bandit=bandit.means)
    th = _half_to_float(theta.detach())
    with torch.no_grad():
        probs = policy.probs(th)
        joint = bandit.rho.to(th.dtype)[:, None] * probs
        wsq = joint * all_scores(policy, th).pow(2).sum(-1)
        den = wsq.sum()
        num = (wsq * bandit.means.to(th.dtype)).sum()
        J = (joint * bandit.means.to(th.dtype)).sum()
        out = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), J)
        return out.to(theta.dtype)


# -- methods of Part I -------------------------------------------------------------------------
register_label("policy_loss", "exact", side="trajectory",
               summary="∇J by enumerating every trajectory (no sampling)")
register_label("aggregation", "sample_mean", side="reward",
               summary="(1/N) Σ_i over samples")

register_method("J(θ)", None, policy_loss="exact", advantage="reward",
                aggregation="sample_mean", kl="none",
                fixes="the objective itself: exact but needs every trajectory", chapter="01")
register_method("REINFORCE", "J(θ)", policy_loss="score_function",
                fixes="∇J needs a sum over all trajectories: the log-derivative trick makes it "
                      "an expectation under p_θ that samples can estimate",
                chapter="02", reference="Williams 1992")
register_method("REINFORCE + baseline", "REINFORCE", advantage="state_value",
                fixes="high variance when rewards are far from zero", chapter="03",
                reference="Williams 1992; Greensmith et al. 2004")

__all__ = [
    "action_baseline",
    "all_scores",
    "baseline_bias",
    "constant_baseline",
    "exact_J",
    "exact_estimator_moments",
    "exact_total_variance",
    "exact_total_variances",
    "get_baseline",
    "no_baseline",
    "optimal_baseline",
    "optimal_baseline_table",
    "optimal_constant_baseline",
    "reinforce_surrogate",
    "sample_weights",
    "score",
    "softmax_score",
    "state_table",
    "value_baseline",
]
