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
:class:`RunningMean`   an *estimated* baseline: the running mean of the rewards seen so far
                       in each context (training loops only: it has state, see below)
=====================  ===============================================================

Every spec but :class:`RunningMean` is a function of θ and the current batch. A running mean
is learned from the rewards of earlier batches, so it has state and only a training loop
can use it (:func:`pgbook.train.reinforce.reinforce` keeps one table per run); at any one
step it is a fixed per-state table b(s), built from samples independent of the current
batch, so it leaves E[ĝ] = ∇J unchanged. :func:`running_mean_update` is its update.

The exact tools need b as an (S, A) table: :func:`baseline_table` evaluates any spec on the
enumerated batch of every (s, a) pair (with r = the mean reward r(s, a)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_index,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
)
from ..registry import register, register_label, resolve
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy

__all__ = [
    "RunningMean",
    "baseline_table",
    "constant_baseline",
    "get_baseline",
    "no_baseline",
    "optimal_baseline",
    "optimal_baseline_table",
    "optimal_constant_baseline",
    "optimal_coordinate_baseline_table",
    "running_mean_update",
    "sample_weights",
    "state_table",
    "success_weights",
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
    policy._check_theta(theta, batched=False)
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
register_label("advantage", "success", side="reward",
               summary="w = 1[R = 1] (kept samples only): rejection-sampling fine-tuning")


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


def optimal_coordinate_baseline_table(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor
                                      ) -> Tensor:
    """A baseline per state *and per coordinate* of θ, shape (S, P):

        b*_k(s) = E_{a~π(·|s)}[ (∂_k log π(a|s))² r(s, a) ] / E_{a~π(·|s)}[ (∂_k log π(a|s))² ],

    so that coordinate k of the estimate is ∂_k log π(a|s) (r − b*_k(s)). Each coordinate's
    variance is a parabola in its own b_k, minimised separately; the scalar b*(s) of
    :func:`optimal_baseline_table` minimises only their sum under the constraint that every
    coordinate shares one b (Greensmith et al. 2004; Peters & Schaal 2008), so this one
    has a total variance no larger (:func:`pgbook.exact.bandits.exact_coordinate_baseline_variance`).
    Unbiased (it does not depend on a). Where a coordinate's score is zero in a context (it
    does not move there) the value is V(s). Reward side of J(θ).
    """
    _check_call(bandit, policy, theta)
    with torch.no_grad():
        probs = policy.probs(theta)
        sq = policy.scores(theta).pow(2)  # (S, A, P)
        r = bandit.means.to(probs.dtype)
        num = torch.einsum("sa,sap->sp", probs * r, sq)
        den = torch.einsum("sa,sap->sp", probs, sq)
        v = bandit.values(probs)[:, None].expand_as(den)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), v)


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


@dataclass(frozen=True)
class RunningMean:
    """An estimated per-context baseline: the mean of the rewards observed in context s in
    *earlier* batches, b_k(s), updated after each step by :func:`running_mean_update`:

        decay = None (cumulative):  b(s) ← mean of every past reward of context s
        decay = α ∈ (0, 1]:          b(s) ← (1 − α) b(s) + α r̄_k(s)   (r̄_k(s): the batch's
                                     mean reward in s; the first visit sets b(s) = r̄_k(s))

    A context not seen yet has b(s) = ``init``: a number, or ``"leave_one_out"`` (the
    default), the mean of the *other* rewards of the current batch, (Σ_j r_j − r_i)/(N − 1),
    which needs no guess and, built from samples independent of sample i, keeps the step
    unbiased. What a practitioner can run without the oracle V_θ(s): the exponential
    average tracks V_θ(s) as the policy moves, the cumulative mean lags behind it. Built
    from other samples only, b is independent of the sample it weights, so the estimate
    stays unbiased (a state baseline). Reward side of J(θ).
    """

    decay: float | None = 0.1
    init: float | str = "leave_one_out"

    def __post_init__(self):
        if self.decay is not None:
            d = check_positive(self.decay, "decay")
            if d > 1:
                raise ValueError(f"decay: expected a number in (0, 1] or None, got {d}")
        if isinstance(self.init, str):
            if self.init != "leave_one_out":
                raise ValueError(f"init: expected a number or 'leave_one_out', got {self.init!r}")
            return
        check_number(self.init, "init")

    def weights(self, table: Tensor, counts: Tensor, s: Tensor, r: Tensor) -> Tensor:
        """r_i − b(s_i) for a batch ``s``, ``r`` (*R, N) given the tables (*R, S) built from
        earlier batches (``counts`` = 0 marks a context not seen yet)."""
        _check_running(table, counts, s, r)
        b = torch.gather(table, -1, s).to(r.dtype)
        if self.init == "leave_one_out":
            n = r.shape[-1]
            if n < 2:
                raise ValueError("batch_size: a leave-one-out start needs N ≥ 2 samples")
            loo = (r.sum(-1, keepdim=True) - r) / (n - 1)
            b = torch.where(torch.gather(counts, -1, s) > 0, b, loo)
        return r - b


def _check_running(table: Tensor, counts: Tensor, s: Tensor, r: Tensor) -> None:
    """Tables (*R, S) of finite means and non-negative counts, a batch s, r (*R, N)."""
    check_tensor(table, "table", floating=True)
    if table.dim() < 1:
        raise ValueError("table: expected shape (*R, S), got a scalar")
    S = table.shape[-1]
    check_shape(counts, "counts", tuple(table.shape))
    if counts.dtype == torch.bool or counts.is_complex():
        raise ValueError(f"counts: expected a real (integer or floating) tensor of counts, got "
                         f"dtype {counts.dtype}")
    check_index(s, "s", S)
    check_tensor(r, "r", floating=True)
    if s.shape != r.shape or tuple(s.shape[:-1]) != tuple(table.shape[:-1]) or s.dim() < 1:
        raise ValueError(f"s and r: expected shape {tuple(table.shape[:-1])} + (N,), got "
                         f"{tuple(s.shape)} and {tuple(r.shape)}")
    check_finite(r, "r")
    check_finite(table, "table")
    check_same_device(table=table, counts=counts, s=s, r=r)
    check_finite(counts, "counts")
    if counts.device.type != "meta" and counts.numel() and bool((counts < 0).any()):
        raise ValueError("counts: expected counts ≥ 0 (rewards seen per context), got a "
                         "negative one")


def running_mean_update(table: Tensor, counts: Tensor, s: Tensor, r: Tensor,
                        decay: float | None = None) -> tuple[Tensor, Tensor]:
    """One update of per-context running means (batched over runs).

    ``table`` (*R, S) the current means b(s), ``counts`` (*R, S) how many rewards each has
    seen, ``s`` (*R, N) context ids and ``r`` (*R, N) rewards of the new batch. Returns the
    new ``(table, counts)``: contexts absent from a run's batch keep their value; a context
    seen for the first time takes its batch mean; otherwise the cumulative mean
    (``decay=None``) or the exponential average with weight ``decay`` on the batch mean
    (see :class:`RunningMean`). No loop over samples: one ``scatter_add`` per run batch.
    On the device and dtype of ``table``. Reward side of J(θ).
    """
    _check_running(table, counts, s, r)
    if decay is not None:
        decay = check_positive(decay, "decay")
        if decay > 1:
            raise ValueError(f"decay: expected a number in (0, 1] or None, got {decay}")
    sums = torch.zeros_like(table).scatter_add(-1, s, r.to(table.dtype))
    n = torch.zeros_like(table).scatter_add(-1, s, torch.ones_like(r, dtype=table.dtype))
    counts = counts.to(table.dtype)
    seen = n > 0
    batch_mean = sums / n.clamp_min(1)
    if decay is None:
        new = (table * counts + sums) / (counts + n).clamp_min(1)
    else:
        new = (1 - decay) * table + decay * batch_mean
    new = torch.where(seen & (counts == 0), batch_mean, new)
    return torch.where(seen, new, table), counts + n


def success_weights(rewards: Tensor, success: float = 1.0, normalise: bool = True) -> Tensor:
    """The weights of rejection-sampling fine-tuning (STaR, RFT, expert iteration):

        w_i = 1[r_i ≥ success] · N / K,      K = Σ_i 1[r_i ≥ success]   (normalise=True)

    over the last dimension (N samples), so that the weighted log-likelihood
    (1/N) Σ_i w_i log π(a_i|s_i) is the SFT loss *averaged over the K kept samples*; a batch
    with no success gets all-zero weights. ``normalise=False`` gives plain 1[r ≥ success]
    (the REINFORCE weight of the binary reward, no baseline). ``rewards`` (..., N); returns
    the same shape and dtype. Reward side of J(θ): a stop-gradient weight that is one for
    kept samples and zero for discarded ones (never negative).
    """
    check_tensor(rewards, "rewards", floating=True)
    if rewards.dim() < 1 or rewards.numel() == 0:
        raise ValueError(f"rewards: expected shape (..., N) with at least one sample, got "
                         f"{tuple(rewards.shape)}")
    check_finite(rewards, "rewards")
    success = check_number(success, "success")
    if not isinstance(normalise, bool):
        raise ValueError(f"normalise: expected True or False, got {normalise!r}")
    keep = (rewards >= success).to(rewards.dtype)
    if not normalise:
        return keep
    k = keep.sum(-1, keepdim=True)
    return torch.where(k > 0, keep * rewards.shape[-1] / k.clamp_min(1), keep)


def get_baseline(baseline: BaselineSpec, bandit: Bandit | None = None) -> Baseline:
    """The baseline callable ``fn(bandit, policy, theta, batch) -> b`` for a spec (module
    docstring). A tensor spec needs ``bandit`` (for its shape)."""
    if baseline is None:
        return no_baseline
    if isinstance(baseline, RunningMean):
        raise ValueError("baseline: a RunningMean is learned from earlier batches, so only a "
                         "training loop can use it (pgbook.train.reinforce.reinforce); for a "
                         "fixed per-state baseline pass an (S,) tensor")
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
