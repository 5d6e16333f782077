"""PPO on the exact bandit world (chapter 07): many gradient epochs on one batch.

PPO is the proximal framework of chapter 06 with the samples of chapter 05: the batch is
drawn once from π_old = π_θold and reused for several epochs through the importance ratio
r_θ = π_θ(a|s) / π_old(a|s):

    L_IS(θ)   = (1/N) Σ_i r_θ,i A_i                                (∇ at θ_old = the PG estimate)
    L_KL(θ)   = L_IS(θ) − β · (1/N) Σ_i KL(π_old(·|s_i) ‖ π_θ(·|s_i))   (PPO-KL; fixed or adaptive β)
    L_clip(θ) = (1/N) Σ_i min(r_θ,i A_i, clip(r_θ,i, 1 − ε, 1 + ε) A_i)  (PPO-clip; dual clip for A < 0)

The per-sample terms are :mod:`pgbook.trajectory.losses` (``importance_weighted_loss``,
``ppo_clip_loss``) with their sign flipped (losses are minimised, objectives maximised).
The KL over the batch's states is exact over actions (the bandit lists every action), as in
Schulman et al. (2017); :func:`pgbook.exact.bandits.exact_kl` gives the ρ-weighted KL the chapter
reports as the true distance moved.

Shapes: a batch holds N samples, (N,), or M independent batches, (M, N); θ is (P,) or
(M, P) for M runs that share nothing (every operation, Adam included, acts per run).
Everything runs on the device and dtype of θ_old. Factor of J(θ): trajectory (how samples
of p_θold enter an update of p_θ; the advantages, the reward side, are fixed inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_index,
    check_number,
    check_option,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
)
from ..exact.bandits import check_world, exact_kl, state_kl
from ..reward.baselines import BaselineSpec, sample_weights
from ..trajectory.losses import clip_fraction, importance_weighted_loss, ppo_clip_loss
from ..worlds.bandits import Bandit, SoftmaxPolicy


@dataclass(frozen=True)
class PPOBatch:
    """One batch collected from π_old: contexts ``s``, actions ``a``, advantages ``adv`` and
    log π_old(a_i|s_i) ``old_logp``, each of shape (N,) or (M, N); ``theta_old`` (P,)."""

    s: Tensor
    a: Tensor
    adv: Tensor
    old_logp: Tensor
    theta_old: Tensor

    def __post_init__(self) -> None:
        for name in ("s", "a"):
            x = check_tensor(getattr(self, name), name)
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer ids, got dtype {x.dtype}")
        check_tensor(self.adv, "adv", floating=True)
        check_tensor(self.old_logp, "old_logp", floating=True)
        check_tensor(self.theta_old, "theta_old", ndim=1, floating=True)
        if not self.s.shape == self.a.shape == self.adv.shape == self.old_logp.shape:
            raise ValueError(f"s, a, adv and old_logp: expected one shape, got "
                             f"{tuple(self.s.shape)}, {tuple(self.a.shape)}, "
                             f"{tuple(self.adv.shape)} and {tuple(self.old_logp.shape)}")
        check_same_device(s=self.s, a=self.a, adv=self.adv, old_logp=self.old_logp,
                          theta_old=self.theta_old)

    @property
    def shape(self) -> torch.Size:
        return self.s.shape


def make_batch(policy: SoftmaxPolicy, theta_old: Tensor, s: Tensor, a: Tensor,
               adv: Tensor) -> PPOBatch:
    """A :class:`PPOBatch` from given samples and advantages (checked: shapes equal,
    indices in range, advantages finite); ``old_logp`` is computed from ``theta_old``."""
    check_tensor(theta_old, "theta_old", ndim=1, floating=True)
    check_finite(theta_old, "theta_old")
    check_index(s, "s", policy.n_contexts)
    check_index(a, "a", policy.n_actions)
    check_tensor(adv, "adv", floating=True)
    if not (s.shape == a.shape == adv.shape):
        raise ValueError(
            f"s, a and adv: expected one shape, got {tuple(s.shape)}, {tuple(a.shape)} and "
            f"{tuple(adv.shape)}"
        )
    if s.dim() not in (1, 2) or s.shape[-1] == 0:
        raise ValueError(f"s: expected shape (N,) or (M, N) with N ≥ 1, got {tuple(s.shape)}")
    check_finite(adv, "adv")
    check_same_device(theta_old=theta_old, s=s, a=a, adv=adv)
    theta_old = theta_old.detach()
    old_logp = policy.log_probs(theta_old)[s, a]
    return PPOBatch(s, a, adv.to(theta_old.dtype), old_logp, theta_old)


def collect(bandit: Bandit, policy: SoftmaxPolicy, theta_old: Tensor, n: int | tuple,
            generator: torch.Generator, baseline: BaselineSpec = "value") -> PPOBatch:
    """Sample s ~ ρ, a ~ π_old(·|s), r from the bandit (``n`` = N or (M, N)) and weight
    each sample by A_i = r_i − b(s_i) for ``baseline`` (default: the exact V_old(s), so A
    is the advantage under π_old; see :func:`pgbook.reward.baselines.get_baseline`)."""
    check_world(bandit, policy, theta_old, "theta_old")
    theta_old = theta_old.detach()
    raw = bandit.sample(policy.probs(theta_old), n, generator)
    adv = sample_weights(bandit, policy, theta_old, raw, baseline)
    return make_batch(policy, theta_old, raw.s, raw.a, adv)


def _check_batch(policy: SoftmaxPolicy, batch: PPOBatch) -> PPOBatch:
    """A PPOBatch whose ids index the policy and whose θ_old fits it (negative ids would
    wrap around silently when indexing)."""
    if not isinstance(policy, SoftmaxPolicy):
        raise ValueError(f"policy: expected a SoftmaxPolicy, got {type(policy).__name__}")
    if not isinstance(batch, PPOBatch):
        raise ValueError(f"batch: expected a PPOBatch (see ppo.collect), got {type(batch).__name__}")
    key = (policy.n_contexts, policy.n_actions, policy.n_params)
    if getattr(batch, "_checked_for", None) == key:  # the epochs reuse one batch: check it once
        return batch
    check_index(batch.s, "batch.s", policy.n_contexts)
    check_index(batch.a, "batch.a", policy.n_actions)
    policy._check_theta(batch.theta_old, "batch.theta_old")
    check_finite(batch.adv, "batch.adv")
    check_finite(batch.old_logp, "batch.old_logp")
    if not _is_meta(batch.s):
        object.__setattr__(batch, "_checked_for", key)
    return batch


def _check_beta(beta: float | Tensor) -> float | Tensor:
    """β ≥ 0: a number, or a finite tensor (one β per run)."""
    if isinstance(beta, Tensor):
        check_finite(beta, "beta")
        if beta.dim() > 1:
            raise ValueError(f"beta: expected a number or a tensor of shape (M,), got "
                             f"{tuple(beta.shape)}")
        if not _is_meta(beta) and bool((beta < 0).any()):
            raise ValueError(f"beta: expected values ≥ 0, got min {float(beta.min()):g}")
        return beta
    return check_positive(beta, "beta", allow_zero=True)


def _logp(policy: SoftmaxPolicy, theta: Tensor, batch: PPOBatch) -> Tensor:
    """log π_θ(a_i|s_i) with the batch's shape; θ (P,) or (M, P) for (M, N) batches."""
    lp = policy.log_probs(theta)  # (S, A) or (M, S, A)
    if theta.dim() == 1:
        return lp[batch.s, batch.a]
    if batch.s.dim() != 2 or theta.shape[0] != batch.s.shape[0]:
        raise ValueError(
            f"theta: expected shape ({policy.n_params},) or (M, {policy.n_params}) with M = "
            f"{batch.s.shape[0] if batch.s.dim() == 2 else 'the leading batch size'}, got "
            f"{tuple(theta.shape)} for batch shape {tuple(batch.s.shape)}"
        )
    flat = lp.flatten(-2)
    return torch.gather(flat, -1, batch.s * policy.n_actions + batch.a)


def _check_eps(eps_low) -> float | None:
    """ε must be None (no clip) or a number in (0, 1)."""
    if eps_low is None:
        return None
    v = check_positive(eps_low, "eps_low")
    if v >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {v}")
    return v


def surrogate(policy: SoftmaxPolicy, theta: Tensor, batch: PPOBatch, eps_low: float | None = None,
              eps_high: float | None = None, dual_clip: float | None = None) -> Tensor:
    """The batch surrogate, a mean over the last (sample) dimension, shape () or (M,):

    ``eps_low=None``: L_IS(θ) = (1/N) Σ_i r_θ,i A_i (the importance-sampled surrogate; its
    gradient at θ = θ_old is exactly the score-function estimate (1/N) Σ_i A_i ∇log π(a_i|s_i));
    ``eps_low=ε``: PPO's clipped surrogate (1/N) Σ_i min(r A, clip(r, 1 − ε, 1 + ε_high) A),
    with ``dual_clip=c`` the A < 0 terms bounded below by c·A.
    """
    _check_batch(policy, batch)
    logp = _logp(policy, theta, batch)
    if eps_low is None:
        if eps_high is not None or dual_clip is not None:
            raise ValueError("eps_high and dual_clip need a clip range eps_low")
        terms = -importance_weighted_loss(logp, batch.adv, batch.old_logp)
    else:
        terms = -ppo_clip_loss(logp, batch.adv, batch.old_logp, eps_low=_check_eps(eps_low),
                               eps_high=eps_high, dual_clip=dual_clip)
    return terms.mean(-1)


def batch_kl(policy: SoftmaxPolicy, theta: Tensor, batch: PPOBatch) -> Tensor:
    """(1/N) Σ_i KL(π_old(·|s_i) ‖ π_θ(·|s_i)), exact over actions at the batch's contexts;
    shape () or (M,). This is the penalty of PPO-KL (Schulman et al. 2017, eq. 8)."""
    _check_batch(policy, batch)
    check_tensor(theta, "theta", floating=True)
    if theta.dim() > 2 or (theta.dim() == 2 and (batch.s.dim() != 2
                                                 or theta.shape[0] != batch.s.shape[0])):
        raise ValueError(f"theta: expected shape ({policy.n_params},) or (M, {policy.n_params}) "
                         f"with M = the leading batch size, got {tuple(theta.shape)} for batch "
                         f"shape {tuple(batch.s.shape)}")
    kl_s = state_kl(policy.log_probs(batch.theta_old), policy.log_probs(theta))  # (S,) / (M, S)
    if kl_s.dim() == 1:
        return kl_s[batch.s].mean(-1)
    return torch.gather(kl_s, -1, batch.s).mean(-1)


def ppo_objective(policy: SoftmaxPolicy, theta: Tensor, batch: PPOBatch,
                  eps_low: float | None = None,
                  eps_high: float | None = None, dual_clip: float | None = None,
                  beta: float | Tensor = 0.0) -> Tensor:
    """What a PPO epoch maximises: :func:`surrogate` − β · :func:`batch_kl`; () or (M,).
    ``beta`` may be a tensor of shape (M,) (one β per run). Factor of J(θ): trajectory."""
    beta = _check_beta(beta)
    obj = surrogate(policy, theta, batch, eps_low, eps_high, dual_clip)
    if isinstance(beta, Tensor) or float(beta) != 0.0:
        obj = obj - beta * batch_kl(policy, theta, batch)
    return obj


def adaptive_beta(beta: float | Tensor, kl: float | Tensor, kl_target: float,
                  factor: float = 2.0, tolerance: float = 1.5) -> float | Tensor:
    """Schulman et al. (2017)'s adaptive KL coefficient, applied after each policy update:

        β ← β · 2   if KL > 1.5 · d_targ,      β ← β / 2   if KL < d_targ / 1.5,

    else unchanged. Works elementwise on tensors (one β per run) and returns the type given.
    """
    kl_target = check_positive(kl_target, "kl_target")
    factor = check_positive(factor, "factor")
    tolerance = check_positive(tolerance, "tolerance")
    beta = _check_beta(beta)
    if isinstance(kl, Tensor):
        check_finite(kl, "kl")
    else:
        check_number(kl, "kl")
    if isinstance(beta, Tensor) and isinstance(kl, Tensor):
        check_same_device(beta=beta, kl=kl)
    if isinstance(beta, Tensor) or isinstance(kl, Tensor):
        b = beta if isinstance(beta, Tensor) else torch.as_tensor(beta, dtype=kl.dtype, device=kl.device)
        k = kl if isinstance(kl, Tensor) else torch.as_tensor(kl, dtype=b.dtype, device=b.device)
        up, down = k > tolerance * kl_target, k < kl_target / tolerance
        return torch.where(up, b * factor, torch.where(down, b / factor, b))
    b, k = check_positive(beta, "beta", allow_zero=True), float(kl)
    if k > tolerance * kl_target:
        return b * factor
    if k < kl_target / tolerance:
        return b / factor
    return b


@dataclass
class PPOHistory:
    """Per-epoch records of :func:`run_epochs`, each (epochs + 1,) or (epochs + 1, M); row 0
    is θ_old. ``surrogate``: L_IS (unclipped); ``objective``: what was maximised; ``J``:
    exact J(θ); ``kl``: exact KL(π_old ‖ π_θ) (ρ-weighted); ``batch_kl``: the KL at the
    batch's contexts; ``clip_frac``: fraction of samples with a clipped (zero) gradient."""

    surrogate: Tensor
    objective: Tensor
    J: Tensor
    kl: Tensor
    batch_kl: Tensor
    clip_frac: Tensor
    theta: Tensor
    settings: dict = field(default_factory=dict)

    def peak_epoch(self) -> Tensor:
        """The epoch at which exact J is highest (after it, more epochs lower J)."""
        return self.J.argmax(0)


OPTIMIZERS = ("adam", "sgd")


def run_epochs(bandit: Bandit, policy: SoftmaxPolicy, batch: PPOBatch, epochs: int, lr: float,
               eps_low: float | None = None, eps_high: float | None = None,
               dual_clip: float | None = None, beta: float = 0.0,
               optimizer: str = "adam") -> PPOHistory:
    """``epochs`` full-batch gradient steps on :func:`ppo_objective` from θ_old, recording
    after each: the unclipped surrogate L_IS, the objective, exact J, exact KL(π_old‖π_θ).

    ``eps_low=None`` and ``beta=0`` is the plain importance-sampled surrogate (no proximity
    at all); ``beta > 0`` is PPO-KL with a fixed β; ``eps_low`` is PPO-clip (``dual_clip`` adds the
    dual clip). A (M, N) batch runs M independent runs at once (θ of shape (M, P)).
    ``optimizer``: ``"adam"`` (as PPO is used) or ``"sgd"`` (plain gradient ascent).
    """
    check_positive_int(epochs, "epochs")
    lr = check_positive(lr, "lr")
    eps_low = _check_eps(eps_low)
    beta = check_positive(beta, "beta", allow_zero=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    _check_batch(policy, batch)
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    check_same_device(theta_old=batch.theta_old, bandit=bandit.means)
    th0 = batch.theta_old
    if batch.s.dim() == 2:
        th0 = th0.expand(batch.s.shape[0], -1)
    param = torch.nn.Parameter(th0.clone())
    opt = (torch.optim.Adam([param], lr=lr) if optimizer == "adam"
           else torch.optim.SGD([param], lr=lr))
    opts = dict(eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)

    rows: dict[str, list] = {k: [] for k in ("surrogate", "objective", "J", "kl", "batch_kl",
                                             "clip_frac")}

    def record(t):
        with torch.no_grad():
            logp = _logp(policy, t, batch)
            rows["surrogate"].append(surrogate(policy, t, batch))
            rows["objective"].append(ppo_objective(policy, t, batch, beta=beta, **opts))
            rows["J"].append(bandit.J(policy.probs(t)))
            rows["kl"].append(exact_kl(bandit, policy.log_probs(batch.theta_old), policy.log_probs(t)))
            rows["batch_kl"].append(batch_kl(policy, t, batch))
            if eps_low is None:
                rows["clip_frac"].append(torch.zeros_like(rows["J"][-1]))
            else:
                cf = clip_fraction(logp, batch.old_logp, batch.adv, eps_low, eps_high)
                rows["clip_frac"].append(cf.to(t.dtype).mean(-1))

    record(param.detach())
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            loss = -ppo_objective(policy, param, batch, beta=beta, **opts).sum()
            loss.backward()
            opt.step()
            record(param.detach())
    return PPOHistory(**{k: torch.stack(v) for k, v in rows.items()}, theta=param.detach(),
                      settings=dict(epochs=epochs, lr=lr, beta=beta, optimizer=optimizer, **opts))


def ppo_iterations(bandit: Bandit, policy: SoftmaxPolicy, theta0: Tensor, iterations: int,
                   n_samples: int, generator: torch.Generator, epochs: int, lr: float,
                   eps_low: float | None = None, beta: float = 0.0,
                   kl_target: float | None = None,
                   baseline: BaselineSpec = "value", optimizer: str = "adam") -> dict:
    """PPO's outer loop: ``iterations`` times collect N samples from the current policy,
    run ``epochs`` epochs (:func:`run_epochs`), then, with ``kl_target`` = d_targ, adapt β
    by :func:`adaptive_beta` from the batch KL reached (this needs an initial ``beta`` > 0:
    the rule multiplies it). Returns a dict of (iterations + 1,)
    tensors ``J`` (exact), and (iterations,) tensors ``kl`` (batch KL of each update),
    ``beta`` (the β each update used), plus the final ``theta``.
    """
    check_world(bandit, policy, theta0, "theta0")
    check_positive_int(iterations, "iterations")
    check_positive_int(n_samples, "n_samples")
    if kl_target is not None:
        check_positive(kl_target, "kl_target")
    check_option(optimizer, "optimizer", OPTIMIZERS)
    check_positive(lr, "lr")
    check_positive_int(epochs, "epochs")
    _check_eps(eps_low)
    check_positive(beta, "beta", allow_zero=True)
    if kl_target is not None and beta == 0:
        raise ValueError(f"kl_target: the adaptive rule multiplies β, so from beta = 0 it stays "
                         f"0 and kl_target = {kl_target!r} would do nothing; pass an initial "
                         f"beta > 0 with it (e.g. beta=1.0)")
    theta = theta0.detach()
    Js, kls, betas = [bandit.J(policy.probs(theta))], [], []
    for _ in range(iterations):
        batch = collect(bandit, policy, theta, n_samples, generator, baseline)
        hist = run_epochs(bandit, policy, batch, epochs, lr, eps_low=eps_low, beta=beta,
                          optimizer=optimizer)
        theta = hist.theta
        Js.append(hist.J[-1])
        kls.append(hist.batch_kl[-1])
        betas.append(torch.as_tensor(beta, dtype=theta.dtype, device=theta.device))
        if kl_target is not None:
            beta = adaptive_beta(beta, float(kls[-1]), kl_target)
    return dict(J=torch.stack(Js), kl=torch.stack(kls), beta=torch.stack(betas), theta=theta)


__all__ = [
    "PPOBatch",
    "PPOHistory",
    "adaptive_beta",
    "batch_kl",
    "collect",
    "make_batch",
    "ppo_iterations",
    "ppo_objective",
    "run_epochs",
    "surrogate",
]
