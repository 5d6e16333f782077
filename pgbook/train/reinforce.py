"""Training on the exact bandit world: the on-policy REINFORCE loop and the weighted-MLE view.

REINFORCE samples a batch from the current policy and takes one gradient-ascent step on
the score-function estimate,

    ĝ = (1/N) Σ_i A_i ∇log π_θ(a_i|s_i),      θ ← θ + η ĝ,

with A_i = r_i − b_i (the reward minus a baseline, :mod:`pgbook.exact.bandits`). Because the
world is enumerable, every step also records the *exact* J(θ), so a learning curve is the
true objective, not a noisy batch reward.

On a fixed batch, ĝ is the gradient of the weighted log-likelihood

    L(θ) = (1/N) Σ_i A_i log π_θ(a_i|s_i)          (A held fixed),

so policy optimisation is maximum likelihood with per-sample weights that the reward
decides. Supervised fine-tuning (SFT) is the case A_i = 1 on data that were not drawn from
π_θ: the trajectory side changes (which samples enter) and so does the reward side (every
weight is one).

Shapes: θ is (P,) for one run or (R, P) for R runs trained at once; a batch is (N,) per run.
Everything runs on the device and dtype of θ (half precision is trained in float32 and
returned in its own dtype).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_float_dtype,
    check_generator,
    check_index,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..exact.bandits import check_world, reinforce_surrogate
from ..reward.baselines import (
    BaselineSpec,
    RunningMean,
    running_mean_update,
    sample_weights,
    success_weights,
)
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy


# -- the weighted-MLE view ----------------------------------------------------------------------
def weighted_log_likelihood(policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                            weights: Tensor) -> Tensor:
    """L(θ) = (1/N) Σ_i A_i log π_θ(a_i|s_i), a scalar, with the weights A_i held fixed.

    ∇_θ L on a fixed batch is exactly the score-function estimate ĝ = (1/N) Σ_i A_i
    ∇log π_θ(a_i|s_i): the policy-gradient step is a step of weighted maximum likelihood.
    ``weights`` has the batch's shape ((N,) or (M, N); the mean runs over all of it);
    ``theta`` is (P,). Trajectory factor of J(θ) (log π_θ), weighted by the reward side.
    It is minus :func:`pgbook.exact.bandits.reinforce_surrogate` (a loss is minimised).
    """
    return -reinforce_surrogate(policy, theta, batch, weights)


def sft_loss(policy: SoftmaxPolicy, theta: Tensor, s: Tensor, a: Tensor) -> Tensor:
    """Supervised fine-tuning loss −(1/N) Σ_i log π_θ(a_i|s_i) on given pairs (s_i, a_i).

    It is −L(θ) of :func:`weighted_log_likelihood` with every weight A_i = 1, on data that
    were *not* sampled from π_θ (on π_θ's own samples the expected gradient of this loss is
    zero, the baseline identity). ``s`` and ``a`` share a batch shape; ``theta`` is (P,).
    Changes both factors of J(θ) relative to REINFORCE: the samples (trajectory side) and
    their weights, A = 1 (reward side).
    """
    check_tensor(theta, "theta", floating=True)
    check_tensor(s, "s", nonempty=True)
    check_tensor(a, "a", nonempty=True)
    ones = torch.ones(s.shape, dtype=theta.dtype, device=theta.device)
    return -weighted_log_likelihood(policy, theta, BanditBatch(s, a, ones), ones)


def empirical_policy(s: Tensor, a: Tensor, n_contexts: int, n_actions: int,
                     dtype: torch.dtype = torch.float64) -> Tensor:
    """Empirical action frequencies n(s, a) / n(s), shape (S, A), from pairs (s_i, a_i).

    For a tabular softmax this is the maximum-likelihood policy, the point SFT converges to
    (∇ of :func:`sft_loss` vanishes there). A context that never occurs has no data and
    keeps the uniform distribution (where SFT started from θ = 0 stays). On the device of
    ``s``; ``dtype`` is that of the result.
    """
    check_positive_int(n_contexts, "n_contexts")
    check_positive_int(n_actions, "n_actions")
    check_float_dtype(dtype)
    check_index(s, "s", n_contexts)
    check_index(a, "a", n_actions)
    if s.shape != a.shape:
        raise ValueError(
            f"s and a must have the same shape, got {tuple(s.shape)} and {tuple(a.shape)}"
        )
    check_same_device(s=s, a=a)
    flat = (s * n_actions + a).reshape(-1)
    counts = torch.bincount(flat, minlength=n_contexts * n_actions).to(dtype)
    counts = counts.reshape(n_contexts, n_actions)
    n_s = counts.sum(-1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / n_actions)
    return torch.where(n_s > 0, counts / n_s.clamp_min(1), uniform)


@dataclass
class MLEFit:
    """Result of :func:`fit_weighted_mle`: final θ (P,) and L(θ_k) for k = 0..steps."""

    theta: Tensor
    objective: Tensor


def fit_weighted_mle(policy: SoftmaxPolicy, theta0: Tensor, batch: BanditBatch,
                     weights: Tensor | None = None, steps: int = 1000, lr: float = 1.0,
                     progress: bool = False) -> MLEFit:
    """Full-batch gradient ascent θ ← θ + η ∇L(θ) on the weighted log-likelihood of one
    fixed batch (:func:`weighted_log_likelihood`); ``weights=None`` means A = 1 (SFT).

    Many steps on one batch: the weights never change, so this is maximum likelihood on a
    reweighted dataset, not policy improvement. ``theta0`` is (P,); the batch is (N,).
    Trajectory factor of J(θ) with fixed reward-side weights.
    """
    check_tensor(theta0, "theta0", floating=True)
    policy._check_theta(theta0, "theta0", batched=False)
    check_positive_int(steps, "steps")
    check_positive(lr, "lr")
    if not isinstance(batch, BanditBatch):
        raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
    check_index(batch.s, "batch.s", policy.n_contexts)
    check_index(batch.a, "batch.a", policy.n_actions)
    if weights is None:
        weights = torch.ones(batch.s.shape, dtype=theta0.dtype, device=theta0.device)
    check_tensor(weights, "weights", floating=True)
    if weights.shape != batch.s.shape:
        raise ValueError(f"weights: expected shape {tuple(batch.s.shape)} (the batch's), got "
                         f"{tuple(weights.shape)}")
    check_finite(weights, "weights")
    out_dtype = theta0.dtype
    theta = theta0.detach().to(work_dtype(out_dtype))
    f = lambda t: weighted_log_likelihood(policy, t, batch, weights)
    value_and_grad = torch.func.grad_and_value(f)
    values = []
    from ..widgets import progress as progress_bar  # the saved output is the finished bar
    for _ in progress_bar(range(steps), disable=not progress, desc="weighted MLE", leave=False):
        g, v = value_and_grad(theta)
        values.append(v)
        theta = theta + lr * g
    values.append(f(theta).detach())
    return MLEFit(theta.to(out_dtype), torch.stack(values).to(out_dtype))


# -- the on-policy training loop ------------------------------------------------------------------
@dataclass
class History:
    """What :func:`reinforce` records; ``runs`` is the runs' shape (``()`` for one run).

    Attributes:
        J: (steps + 1, *runs) exact J(θ_k) for k = 0..steps (before the first update first).
        theta: (steps + 1, *runs, P) the parameters θ_k.
        grad_norm: (steps, *runs) ‖ĝ_k‖, the norm of the estimate used at step k.
        batch_reward: (steps, *runs) the mean sampled reward of batch k (what one would see
            without the exact world: a noisy version of J(θ_k)).
        optimum: max_π J, the value of the greedy policy.
    """

    J: Tensor
    theta: Tensor
    grad_norm: Tensor
    batch_reward: Tensor
    optimum: float
    lr: Tensor
    batch_size: int
    baseline: object

    @property
    def steps(self) -> int:
        return self.J.shape[0] - 1

    @property
    def final_J(self) -> Tensor:
        """J after the last step, shape ``runs``."""
        return self.J[-1]

    @property
    def gap(self) -> Tensor:
        """optimum − J(θ_k), shape (steps + 1, *runs): how far from the best policy."""
        return self.optimum - self.J


def reinforce(bandit: Bandit, policy: SoftmaxPolicy, theta0: Tensor, steps: int,
              batch_size: int, lr: float | Tensor, baseline: BaselineSpec = "none",
              generator: torch.Generator | None = None,
              progress: bool = True, desc: str | None = None) -> History:
    """On-policy REINFORCE: for k = 0..steps−1, draw N = ``batch_size`` samples from π_θk,

        ĝ_k = (1/N) Σ_i (r_i − b_i) ∇log π_θk(a_i|s_i),      θ_{k+1} = θ_k + η ĝ_k,

    and record the exact J(θ_k) (:class:`History`).

    Several runs train at once, vectorised: ``theta0`` is (P,) or (*runs, P), ``lr`` a number
    or a tensor whose shape broadcasts with ``runs`` (e.g. (L, 1) learning rates against
    (L, K, P) starting points for K seeds each). Runs share ``generator`` but draw
    independent batches. ``baseline`` is one of :func:`pgbook.reward.baselines.get_baseline`'s
    choices ('none', 'value', 'optimal', a number, or a callable of one run's θ and batch
    that works under ``torch.func.vmap``, which maps it over the runs),
    the same for every run, or a :class:`pgbook.reward.baselines.RunningMean`: an estimated
    baseline, one table b(s) per run built from that run's earlier batches (updated after
    each step by :func:`pgbook.reward.baselines.running_mean_update`). Trajectory factor (the
    score function) with the reward-side weight r − b; the baseline does not change E[ĝ],
    only its variance.
    """
    check_tensor(theta0, "theta0", floating=True)
    check_world(bandit, policy, theta0, "theta0", batched=True)
    check_positive_int(steps, "steps")
    check_positive_int(batch_size, "batch_size")
    check_generator(generator, theta0.device)
    check_same_device(theta0=theta0, bandit=bandit.means)
    out_dtype = theta0.dtype
    dtype = work_dtype(out_dtype)
    P = theta0.shape[-1]
    lr_t = torch.as_tensor(check_number(lr, "lr"), dtype=dtype, device=theta0.device) \
        if not isinstance(lr, Tensor) else check_tensor(lr, "lr", floating=True).to(dtype)
    check_same_device(lr=lr_t, theta0=theta0)
    check_finite(lr_t, "lr")
    if theta0.device.type != "meta" and bool((lr_t <= 0).any()):
        raise ValueError(f"lr: expected learning rates > 0, got min {float(lr_t.min()):g}")
    runs = torch.broadcast_shapes(theta0.shape[:-1], lr_t.shape)
    theta = theta0.detach().to(dtype).expand(*runs, P).reshape(-1, P).clone()  # (R, P)
    eta = lr_t.expand(runs).reshape(-1, 1)  # (R, 1)

    running = isinstance(baseline, RunningMean)
    if running:
        init = 0.0 if isinstance(baseline.init, str) else float(baseline.init)
        table = torch.full((theta.shape[0], bandit.n_contexts), init, dtype=dtype,
                           device=theta.device)
        counts = torch.zeros_like(table)

    def weights_one(t, s, a, r):
        return sample_weights(bandit, policy, t, BanditBatch(s, a, r), baseline)

    def loss_one(t, s, a, w):
        return weighted_log_likelihood(policy, t, BanditBatch(s, a, w), w)

    weights_fn = torch.func.vmap(weights_one)
    grad_fn = torch.func.vmap(torch.func.grad(loss_one))

    def exact(t):
        with torch.no_grad():
            return bandit.J(policy.probs(t))

    Js, thetas, norms, rewards = [exact(theta)], [theta], [], []
    from ..widgets import progress as progress_bar  # the saved output is the finished bar
    for _ in progress_bar(range(steps), disable=not progress, desc=desc or f"REINFORCE ({baseline})",
                    leave=False):
        batch = bandit.sample(policy.probs(theta), batch_size, generator)  # (R, N)
        check_finite(batch.r, "rewards")
        if running:  # b(s) from earlier batches only, then updated with this one
            w = baseline.weights(table, counts, batch.s, batch.r.to(dtype))
            table, counts = running_mean_update(table, counts, batch.s, batch.r.to(dtype),
                                                baseline.decay)
        else:
            w = weights_fn(theta, batch.s, batch.a, batch.r).to(dtype)
        g = grad_fn(theta, batch.s, batch.a, w)  # (R, P)
        theta = theta + eta * g
        Js.append(exact(theta))
        thetas.append(theta)
        norms.append(g.norm(dim=-1))
        rewards.append(batch.r.mean(-1))

    def stack(xs, *tail):
        return torch.stack(xs).reshape(len(xs), *runs, *tail).to(out_dtype)

    return History(J=stack(Js), theta=stack(thetas, P), grad_norm=stack(norms),
                   batch_reward=stack(rewards), optimum=float(bandit.optimal_J()),
                   lr=lr_t, batch_size=batch_size, baseline=baseline)


def rejection_sampling_ft(bandit: Bandit, policy: SoftmaxPolicy, theta0: Tensor,
                          iterations: int, batch_size: int, lr: float | Tensor,
                          generator: torch.Generator,
                          success: float = 1.0, sft_steps: int = 1, progress: bool = False,
                          desc: str | None = None) -> History:
    """Rejection-sampling fine-tuning (expert iteration; STaR, Zelikman et al. 2022; RFT,
    Yuan et al. 2023): repeat ``iterations`` times

        sample N = ``batch_size`` pairs from π_θ,  keep those with r ≥ ``success``,
        take ``sft_steps`` gradient steps of SFT on the K kept pairs:
        θ ← θ + η (1/K) Σ_{kept} ∇log π_θ(a_i|s_i)

    (no step when nothing was kept). This is weighted MLE with the weights
    :func:`pgbook.reward.baselines.success_weights` on the policy's own samples: one SFT
    step is (N/K) times the REINFORCE estimate for the binary reward 1[r ≥ success] with no
    baseline, so its direction is unbiased for ∇P_θ(success) up to the random scale N/K,
    and failures are discarded rather than pushed down. Shapes, ``lr`` and vectorised runs
    as in :func:`reinforce`; the returned :class:`History` records the exact J of the
    bandit's own rewards, ``grad_norm`` of the first SFT step and ``batch_reward`` (the
    batch's mean reward). Changes both factors relative to REINFORCE: the weight (reward
    side) and which samples enter (trajectory side).
    """
    check_tensor(theta0, "theta0", floating=True)
    check_world(bandit, policy, theta0, "theta0", batched=True)
    check_positive_int(iterations, "iterations")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(sft_steps, "sft_steps")
    check_generator(generator, theta0.device)
    check_same_device(theta0=theta0, bandit=bandit.means)
    success = check_number(success, "success")
    out_dtype = theta0.dtype
    dtype = work_dtype(out_dtype)
    P = theta0.shape[-1]
    lr_t = torch.as_tensor(check_number(lr, "lr"), dtype=dtype, device=theta0.device) \
        if not isinstance(lr, Tensor) else check_tensor(lr, "lr", floating=True).to(dtype)
    check_same_device(lr=lr_t, theta0=theta0)
    check_finite(lr_t, "lr")
    if theta0.device.type != "meta" and bool((lr_t <= 0).any()):
        raise ValueError(f"lr: expected learning rates > 0, got min {float(lr_t.min()):g}")
    runs = torch.broadcast_shapes(theta0.shape[:-1], lr_t.shape)
    theta = theta0.detach().to(dtype).expand(*runs, P).reshape(-1, P).clone()  # (R, P)
    eta = lr_t.expand(runs).reshape(-1, 1)

    def loss_one(t, s, a, w):
        return weighted_log_likelihood(policy, t, BanditBatch(s, a, w), w)

    grad_fn = torch.func.vmap(torch.func.grad(loss_one))

    def exact(t):
        with torch.no_grad():
            return bandit.J(policy.probs(t))

    Js, thetas, norms, rewards = [exact(theta)], [theta], [], []
    from ..widgets import progress as progress_bar  # the saved output is the finished bar
    for _ in progress_bar(range(iterations), disable=not progress, desc=desc or "rejection sampling",
                    leave=False):
        batch = bandit.sample(policy.probs(theta), batch_size, generator)  # (R, N)
        check_finite(batch.r, "rewards")
        w = success_weights(batch.r.to(dtype), success)                      # N/K on kept
        for k in range(sft_steps):
            g = grad_fn(theta, batch.s, batch.a, w)
            if k == 0:
                norms.append(g.norm(dim=-1))
            theta = theta + eta * g
        Js.append(exact(theta))
        thetas.append(theta)
        rewards.append(batch.r.mean(-1))

    def stack(xs, *tail):
        return torch.stack(xs).reshape(len(xs), *runs, *tail).to(out_dtype)

    return History(J=stack(Js), theta=stack(thetas, P), grad_norm=stack(norms),
                   batch_reward=stack(rewards), optimum=float(bandit.optimal_J()),
                   lr=lr_t, batch_size=batch_size, baseline=f"success ≥ {success:g}")


__all__ = [
    "History",
    "MLEFit",
    "empirical_policy",
    "fit_weighted_mle",
    "reinforce",
    "rejection_sampling_ft",
    "sft_loss",
    "weighted_log_likelihood",
]
