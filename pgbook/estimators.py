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

from ._validate import check_finite, check_same_device, check_tensor
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
    f = lambda t: bandit.J(policy.probs(t), rewards=table.to(t.dtype))  # noqa: E731
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
    "score", "all_scores", "softmax_score", "reinforce_surrogate", "no_baseline",
    "constant_baseline", "value_baseline", "optimal_baseline", "optimal_baseline_table",
    "action_baseline", "baseline_bias", "get_baseline", "sample_weights",
    "exact_estimator_moments", "exact_total_variance", "state_table", "exact_J",
]
