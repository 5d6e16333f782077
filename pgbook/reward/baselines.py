"""Baselines on the bandit world (Part I): the weight of a sample becomes r − b.

Subtracting b from the reward changes the scalar that multiplies ∇log π_θ(a|s), never
p_θ: a reward-side piece. A baseline that depends on the state only leaves E[ĝ] = ∇J
unchanged (chapter 03); one that depends on the action biases it by exactly
−∇_θ Σ_s ρ(s) Σ_a π_θ(a|s) b(s, a) (:func:`pgbook.exact.bandits.baseline_bias`).

A *baseline spec* is described once and accepted by every tool, Monte-Carlo
(:func:`pgbook.exact.bandits.policy_gradient_estimates`, :func:`pgbook.train.reinforce.reinforce`,
:func:`pgbook.train.ppo.collect`) and exact (:func:`pgbook.exact.bandits.exact_estimator_moments`,
:func:`~pgbook.exact.bandits.exact_total_variance`, :func:`~pgbook.exact.bandits.baseline_bias`):

=====================  ===============================================================
spec                   baseline
=====================  ===============================================================
``"none"`` (or None)   b = 0 (the weight is the raw reward)
``"value"``            b(s) = V_θ(s) = Σ_a π_θ(a|s) r(s, a), so r − b = A(s, a)
``"optimal"``          b*(s) = E[‖∇log π‖² r | s] / E[‖∇log π‖² | s] (variance-optimal)
a number c             b = c for every sample (a constant baseline)
a tensor (S,)          b(s) = table[s] (any per-state baseline)
a tensor (S, A)        b(s, a) = table[s, a] (action-dependent: biased)
a callable             ``fn(bandit, policy, theta, batch) -> b`` with the batch's shape
another name           a component registered with kind ``"advantage"``, form ``"baseline"``
=====================  ===============================================================

The exact tools need b as an (S, A) table: :func:`baseline_table` evaluates any spec on the
enumerated batch of every (s, a) pair (with r = the mean reward r(s, a)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_index,
    check_number,
    check_positive_int,
    check_same_device,
    check_tensor,
)
from ..registry import register, register_label, resolve
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy

__all__ = [
    "baseline_table",
    "constant_baseline",
    "get_baseline",
    "no_baseline",
    "optimal_baseline",
    "optimal_baseline_table",
    "optimal_constant_baseline",
    "sample_weights",
    "state_table",
    "value_baseline",
]

Baseline = Callable[[Bandit, SoftmaxPolicy, Tensor, BanditBatch], Tensor]
#: a baseline spec (module docstring): a name, a number, a table, a callable, or None
BaselineSpec = str | float | Tensor | Baseline | None


def _check_call(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                batch: BanditBatch | None = None) -> None:
    """The world matches, θ is a finite (P,) tensor on its device, the batch's ids index it
    (value checks are skipped inside torch.func transforms: the callers check first)."""
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    if not isinstance(policy, SoftmaxPolicy):
        raise ValueError(f"policy: expected a SoftmaxPolicy, got {type(policy).__name__}")
    if (policy.n_contexts, policy.n_actions) != (bandit.n_contexts, bandit.n_actions):
        raise ValueError(f"policy: expected {bandit.n_contexts} contexts × {bandit.n_actions} "
                         f"actions (the bandit's), got {policy.n_contexts} × {policy.n_actions}")
    policy._check_theta(theta)
    check_same_device(theta=theta, bandit=bandit.means)
    if batch is not None:
        if not isinstance(batch, BanditBatch):
            raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
        check_index(batch.s, "batch.s", bandit.n_contexts)
        check_index(batch.a, "batch.a", bandit.n_actions)
        check_same_device(batch=batch.s, bandit=bandit.means)


@register("advantage", "none", side="reward", form="baseline", summary="w = R (no baseline)")
def no_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b = 0: the weight is the raw reward."""
    _check_call(bandit, policy, theta, batch)
    return torch.zeros_like(batch.r)


def constant_baseline(c: float) -> Baseline:
    """b = c for every sample (a state baseline that ignores the state): unbiased."""
    c = check_number(c, "baseline")

    def baseline(bandit, policy, theta, batch):
        return torch.full_like(batch.r, c)

    baseline.__name__ = f"constant_baseline({c:g})"
    return baseline


register_label("advantage", "constant", side="reward", summary="w = R − c")
register_label("advantage", "unit", side="reward",
               summary="w = 1 for every sample: plain maximum likelihood")


@register("advantage", "value", side="reward", form="baseline", summary="w = R − V(s) = A(s, a)")
def value_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b(s) = V_θ(s) = Σ_a π_θ(a|s) r(s, a) (exact), so the weight is the advantage A(s, a)."""
    _check_call(bandit, policy, theta, batch)
    with torch.no_grad():
        return bandit.values(policy.probs(theta))[batch.s]


def optimal_baseline_table(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """The variance-optimal state baseline, shape (S,):

        b*(s) = E_{a~π(·|s)}[ ‖∇log π(a|s)‖² r(s, a) ] / E_{a~π(·|s)}[ ‖∇log π(a|s)‖² ].

    It minimises the trace of the covariance, tr Cov[ĝ], among scalar baselines that
    depend on s only (reward noise adds a constant that does not move the minimiser); a
    baseline per coordinate of θ can do better (Greensmith et al. 2004; Peters & Schaal
    2008). Where every score is zero (a deterministic policy) any baseline is optimal:
    V(s) is returned there.
    """
    _check_call(bandit, policy, theta)
    with torch.no_grad():
        probs = policy.probs(theta)
        sq = policy.scores(theta).pow(2).sum(-1)  # (S, A)
        num = (probs * sq * bandit.means.to(probs.dtype)).sum(-1)
        den = (probs * sq).sum(-1)
        v = bandit.values(probs)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), v)


@register("advantage", "optimal", side="reward", form="baseline",
          summary="w = R − b*(s), b* = E[‖∇log π‖² r]/E[‖∇log π‖²]")
def optimal_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch) -> Tensor:
    """b*(s_i) from :func:`optimal_baseline_table`."""
    _check_call(bandit, policy, theta, batch)
    return optimal_baseline_table(bandit, policy, theta)[batch.s]


def optimal_constant_baseline(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """The constant b that minimises tr Cov[ĝ] among constant baselines, a scalar:

        b_c* = E_{s~ρ, a~π}[ ‖∇log π(a|s)‖² r(s, a) ] / E_{s~ρ, a~π}[ ‖∇log π(a|s)‖² ].

    (tr Cov is a parabola in b; this is its vertex.) It is J(θ) = E[r] only when every score
    has the same norm. Returns J(θ) where every score is zero. Computed in float32 for
    half-precision θ and returned in θ's dtype.
    """
    _check_call(bandit, policy, theta)
    th = theta.detach().to(torch.promote_types(theta.dtype, torch.float32))
    with torch.no_grad():
        probs = policy.probs(th)
        joint = bandit.rho.to(th.dtype)[:, None] * probs
        wsq = joint * policy.scores(th).pow(2).sum(-1)
        den = wsq.sum()
        num = (wsq * bandit.means.to(th.dtype)).sum()
        J = (joint * bandit.means.to(th.dtype)).sum()
        out = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), J)
        return out.to(theta.dtype)


def _table_baseline(table: Tensor, S: int, A: int) -> Baseline:
    check_tensor(table, "baseline", floating=True)
    if tuple(table.shape) not in ((S,), (S, A)):
        raise ValueError(f"baseline: expected a table of shape ({S},) (per state) or ({S}, {A}) "
                         f"(per state and action), got {tuple(table.shape)}")
    check_finite(table, "baseline")
    per_action = table.dim() == 2

    def baseline(bandit, policy, theta, batch):
        check_same_device(baseline=table, r=batch.r)
        t = table.to(batch.r.dtype)
        return t[batch.s, batch.a] if per_action else t[batch.s]

    baseline.__name__ = "table_baseline"
    return baseline


def get_baseline(baseline: BaselineSpec, bandit: Bandit | None = None) -> Baseline:
    """The baseline callable ``fn(bandit, policy, theta, batch) -> b`` for a spec (module
    docstring). A tensor spec needs ``bandit`` (for its shape)."""
    if baseline is None:
        return no_baseline
    if isinstance(baseline, Tensor):
        if bandit is None:
            raise ValueError("baseline: a table baseline needs the bandit (for its shape)")
        return _table_baseline(baseline, bandit.n_contexts, bandit.n_actions)
    if callable(baseline):
        return baseline
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return constant_baseline(baseline)
    if isinstance(baseline, str):
        return resolve("advantage", baseline, "baseline", what="baseline")
    raise ValueError(f"baseline: expected 'none', 'value', 'optimal', a number, an (S,) or "
                     f"(S, A) tensor or a callable, got {baseline!r}")


def sample_weights(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                   baseline: BaselineSpec = "none") -> Tensor:
    """w_i = r_i − b_i for the baseline spec ``baseline``; shape of the batch."""
    _check_call(bandit, policy, theta, batch)
    check_finite(batch.r, "rewards")
    b = get_baseline(baseline, bandit)(bandit, policy, theta, batch)
    check_tensor(b, "baseline(...)")
    if b.shape != batch.r.shape:
        raise ValueError(f"baseline: expected b with the batch's shape {tuple(batch.r.shape)}, "
                         f"got {tuple(b.shape)}")
    check_finite(b, "baseline(...)")
    return batch.r - b


def baseline_table(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor,
                   baseline: BaselineSpec = "none") -> Tensor:
    """b(s, a) for every pair, (S, A) in θ's dtype: the spec evaluated on the enumerated batch
    (s, a) of all S·A pairs with r = r(s, a) (what the exact tools need)."""
    _check_call(bandit, policy, theta)
    S, A = bandit.n_contexts, bandit.n_actions
    dev = bandit.means.device
    s = torch.arange(S, device=dev).repeat_interleave(A)
    a = torch.arange(A, device=dev).repeat(S)
    batch = BanditBatch(s, a, bandit.means.to(theta.dtype)[s, a])
    b = get_baseline(baseline, bandit)(bandit, policy, theta.detach(), batch)
    check_tensor(b, "baseline(...)")
    if b.shape != (S * A,):
        raise ValueError(f"baseline: expected one value per sample, got shape {tuple(b.shape)}")
    check_finite(b, "baseline(...)")
    return b.to(theta.dtype).reshape(S, A)


def state_table(values: Tensor, n_actions: int) -> Tensor:
    """Broadcast a per-context baseline (S,) to an (S, A) table (constant along a)."""
    check_tensor(values, "values", ndim=1, floating=True)
    check_finite(values, "values")
    check_positive_int(n_actions, "n_actions")
    return values[:, None].expand(-1, n_actions)
