"""The exact world of Part I: contextual bandits small enough to enumerate.

A contextual bandit has contexts s ~ ρ(s), actions a ~ π_θ(a|s) and rewards with mean
r(s, a) (plus optional Gaussian noise of known standard deviation). Because there are
finitely many contexts and actions, the objective is a finite sum,

    J(θ) = Σ_s ρ(s) Σ_a π_θ(a|s) r(s, a),

which is differentiable, so autograd gives the *exact* gradient ∇J(θ) that every
estimator in the book is compared with.

Shapes: S contexts, A actions, P parameters. ``probs`` is (S, A); a policy maps a flat
parameter vector θ of shape (P,) to logits (S, A). Everything runs on the device and dtype
of the tensors it is given; random draws take an explicit ``torch.Generator`` that lives on
the same device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_float_dtype,
    check_generator,
    check_in_range,
    check_index,
    check_number,
    check_positive,
    check_positive_int,
    check_probs,
    check_same_device,
    check_shape,
    check_tensor,
)

__all__ = [
    "Bandit",
    "BanditBatch",
    "LinearSoftmax",
    "SoftmaxPolicy",
    "TabularSoftmax",
    "context_bandit",
    "difficulty_bandit",
    "noisy_bandit",
    "offset_bandit",
    "sample_groups",
    "two_param_bandit",
]


@dataclass(frozen=True)
class BanditBatch:
    """Samples (s_i, a_i, r_i); each field has the batch shape (e.g. (N,) or (M, N)): ``s`` and
    ``a`` integer ids, ``r`` floating rewards, on one device (checked on construction; the
    ids' range is checked by whatever indexes with them)."""

    s: Tensor
    a: Tensor
    r: Tensor

    def __post_init__(self) -> None:
        for name in ("s", "a"):
            x = check_tensor(getattr(self, name), name)
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"{name}: expected integer ids, got dtype {x.dtype}")
        check_tensor(self.r, "r", floating=True)
        if not self.s.shape == self.a.shape == self.r.shape:
            raise ValueError(f"s, a and r: expected one batch shape, got {tuple(self.s.shape)}, "
                             f"{tuple(self.a.shape)} and {tuple(self.r.shape)}")
        check_same_device(s=self.s, a=self.a, r=self.r)

    def __len__(self) -> int:
        return self.s.shape[0]


class Bandit:
    """A contextual bandit with exact expectations.

    Args:
        rho: (S,) context distribution ρ(s); must sum to one.
        means: (S, A) mean reward r(s, a); finite.
        noise_std: standard deviation of Gaussian reward noise (0 = deterministic rewards).
        name: a label used in figures.

    Factor of J(θ): this *is* the reward factor R and the context distribution; the policy
    supplies the other factor.
    """

    def __init__(self, rho: Tensor, means: Tensor, noise_std: float = 0.0, name: str = "bandit",
                 action_names: list[str] | None = None):
        check_tensor(rho, "rho", ndim=1, floating=True, nonempty=True)      # ≥ 1 context
        check_tensor(means, "means", ndim=2, floating=True, nonempty=True)  # ≥ 1 action
        check_same_device(rho=rho, means=means)
        if means.shape[0] != rho.shape[0]:
            raise ValueError(
                f"means: expected {rho.shape[0]} rows (one per context of rho), "
                f"got shape {tuple(means.shape)}"
            )
        check_probs(rho, "rho")
        check_finite(means, "means")
        if not isinstance(name, str):
            raise ValueError(f"name: expected a string, got {name!r}")
        if action_names is not None and len(action_names) != means.shape[1]:
            raise ValueError(f"action_names: expected {means.shape[1]} names (one per action), "
                             f"got {len(action_names)}")
        self.rho = rho
        self.means = means.to(rho.dtype)
        self.noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
        self.name = name
        self.action_names = action_names

    # -- basic facts ---------------------------------------------------------------------
    @property
    def n_contexts(self) -> int:
        return self.means.shape[0]

    @property
    def n_actions(self) -> int:
        return self.means.shape[1]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, *args, **kwargs) -> Bandit:
        """A copy on another device and/or dtype, called like ``Tensor.to``: ``to(dtype)``,
        ``to(device)``, ``to(device, dtype)``, ``to(device=..., dtype=...)``, or
        ``to(other_tensor)``. The dtype must be floating."""
        try:
            means = self.means.to(*args, **kwargs)
        except (TypeError, RuntimeError) as e:
            raise ValueError(f"to: expected a device and/or a floating dtype (as Tensor.to "
                             f"takes them), got args={args!r} kwargs={kwargs!r} ({e})") from None
        check_float_dtype(means.dtype, "dtype")
        return Bandit(self.rho.to(device=means.device, dtype=means.dtype), means,
                      self.noise_std, self.name, self.action_names)

    def shifted(self, c: float) -> Bandit:
        """The same bandit with every reward shifted by ``c`` (∇J is unchanged)."""
        c = check_number(c, "c")
        return Bandit(self.rho, self.means + c, self.noise_std, f"{self.name}+{c:g}",
                      self.action_names)

    def __repr__(self) -> str:
        return (f"Bandit({self.name!r}, contexts={self.n_contexts}, actions={self.n_actions}, "
                f"noise_std={self.noise_std:g}, device={self.device}, dtype={self.dtype})")

    # -- exact quantities ----------------------------------------------------------------
    def _check_probs(self, probs: Tensor, name: str = "probs") -> Tensor:
        check_tensor(probs, name, floating=True)
        if tuple(probs.shape[-2:]) != (self.n_contexts, self.n_actions):
            raise ValueError(
                f"{name}: expected shape (..., {self.n_contexts}, {self.n_actions}), "
                f"got {tuple(probs.shape)}"
            )
        check_same_device(**{name: probs}, bandit=self.means)
        check_probs(probs, name)
        return probs

    def J(self, probs: Tensor, rewards: Tensor | None = None) -> Tensor:
        """Exact J = Σ_s ρ(s) Σ_a π(a|s) r(s, a); differentiable in ``probs``.

        ``probs`` is (..., S, A); ``rewards`` (S, A) replaces the bandit's reward table (used
        to compute the exact bias of an action-dependent baseline). Returns shape (...).
        """
        self._check_probs(probs)
        if rewards is None:
            r = self.means
        else:
            check_shape(rewards, "rewards", self.means.shape)
            check_same_device(rewards=rewards, bandit=self.means)
            r = check_finite(rewards, "rewards")
        r = r.to(probs.dtype)
        return ((probs * r).sum(-1) * self.rho.to(probs.dtype)).sum(-1)

    def values(self, probs: Tensor) -> Tensor:
        """State values V(s) = Σ_a π(a|s) r(s, a), shape (..., S)."""
        self._check_probs(probs)
        return (probs * self.means.to(probs.dtype)).sum(-1)

    def reward_variance(self, probs: Tensor) -> Tensor:
        """Exact variance of one sampled reward (s ~ ρ, a ~ π(·|s), r = r(s, a) + noise):

            Var[r] = Σ_s ρ(s) Σ_a π(a|s) (r(s, a)² + σ²) − J²,       shape (...).

        The Monte-Carlo estimate Ĵ_N = (1/N) Σ_i r_i of J has variance Var[r] / N, so its
        error shrinks like 1/√N (chapter 01). Reward factor of J(θ) (with the context
        distribution), weighted by the policy. ``probs`` is (..., S, A); half-precision
        inputs are computed in float32 and returned in their own dtype.
        """
        self._check_probs(probs)
        p = probs.float() if probs.dtype in (torch.float16, torch.bfloat16) else probs
        r = self.means.to(p.dtype)
        rho = self.rho.to(p.dtype)
        second = ((p * (r * r + self.noise_std ** 2)).sum(-1) * rho).sum(-1)
        mean = ((p * r).sum(-1) * rho).sum(-1)
        return (second - mean * mean).clamp_min(0).to(probs.dtype)

    def advantages(self, probs: Tensor) -> Tensor:
        """A(s, a) = r(s, a) − V(s), shape (..., S, A): the reward minus the state baseline."""
        self._check_probs(probs)
        return self.means.to(probs.dtype) - self.values(probs).unsqueeze(-1)

    def optimal_J(self) -> Tensor:
        """max_π J = Σ_s ρ(s) max_a r(s, a) (the value of the greedy policy)."""
        return (self.rho * self.means.max(-1).values).sum()

    # -- sampling ------------------------------------------------------------------------
    def sample(self, probs: Tensor, n: int | tuple[int, ...], generator: torch.Generator,
               ) -> BanditBatch:
        """Draw s ~ ρ, a ~ π(·|s), r = r(s, a) + noise; every field has shape ``n``.

        ``n`` may be an int (N,) or a tuple such as (M, N) for M independent batches.
        ``probs`` is (S, A), or (R, S, A) for R policies at once (e.g. R training runs):
        then every field has shape (R, *n), row k drawn from policy k.
        """
        self._check_probs(probs)
        if probs.dim() not in (2, 3):
            raise ValueError(
                f"probs: expected shape (S, A) or (R, S, A) for sampling, got {tuple(probs.shape)}"
            )
        shape = (n,) if not isinstance(n, (tuple, list, torch.Size)) else tuple(n)
        if not shape:
            raise ValueError("n: expected an int N or a non-empty tuple such as (M, N), got ()")
        for k in shape:
            check_positive_int(k, "n")
        check_generator(generator, self.device)
        total = 1
        for k in shape:
            total *= k
        p = probs.detach().to(torch.float64 if probs.dtype in (torch.float16, torch.bfloat16)
                              else probs.dtype)
        lead = tuple(p.shape[:-2])
        p = p.reshape(-1, self.n_contexts, self.n_actions)  # (R, S, A), R = 1 for (S, A)
        total *= p.shape[0]
        s = torch.multinomial(self.rho.to(p.dtype), total, replacement=True, generator=generator)
        run = torch.arange(p.shape[0], device=self.device).repeat_interleave(total // p.shape[0])
        a = torch.multinomial(p[run, s], 1, generator=generator).squeeze(-1)
        r = self.means[s, a]
        if self.noise_std > 0:
            noise = torch.randn(total, generator=generator, device=self.device, dtype=r.dtype)
            r = r + self.noise_std * noise
        shape = lead + shape
        return BanditBatch(s.view(shape), a.view(shape), r.view(shape))


class SoftmaxPolicy:
    """π_θ(a|s) = softmax(logits_θ(s))_a. Subclasses define :meth:`logits`.

    Factor of J(θ): the trajectory factor p_θ(τ) = ρ(s) π_θ(a|s); the log-derivative trick
    differentiates this factor only.
    """

    n_contexts: int
    n_actions: int
    n_params: int

    def logits(self, theta: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_theta(self, theta: Tensor, name: str = "theta", *, batched: bool = True
                     ) -> Tensor:
        """``theta`` a finite floating tensor of shape (..., P), or exactly (P,) when not
        ``batched`` (the functions that take one parameter vector)."""
        check_tensor(theta, name, floating=True)
        if not batched and theta.shape != (self.n_params,):
            raise ValueError(
                f"{name}: expected shape ({self.n_params},) for {type(self).__name__} (one "
                f"parameter vector), got {tuple(theta.shape)}"
            )
        if theta.shape[-1:] != (self.n_params,):
            raise ValueError(
                f"{name}: expected shape (..., {self.n_params}) for {type(self).__name__}, "
                f"got {tuple(theta.shape)}"
            )
        return check_finite(theta, name)

    def probs(self, theta: Tensor) -> Tensor:
        """π_θ(·|s) for every context, shape (..., S, A)."""
        return torch.softmax(self.logits(theta), dim=-1)

    def log_probs(self, theta: Tensor) -> Tensor:
        """log π_θ(·|s) for every context, shape (..., S, A)."""
        return torch.log_softmax(self.logits(theta), dim=-1)

    def scores(self, theta: Tensor, autograd: bool = False) -> Tensor:
        """∇_θ log π_θ(a|s) for every (s, a), shape (S, A, P): the score function, the
        trajectory-side factor of every policy-gradient estimator.

        It is the logits' Jacobian minus its π-weighted mean over actions; subclasses whose
        Jacobian is known in closed form (tabular: the identity; linear: the features)
        use it, which is far faster than autograd on these tiny problems. ``autograd=True``
        forces ``torch.func.jacrev`` (to check the closed form). ``theta`` is one parameter
        vector, (P,)."""
        self._check_theta(theta, batched=False)
        if not isinstance(autograd, bool):
            raise ValueError(f"autograd: expected True or False, got {autograd!r}")
        theta = theta.detach()
        jac = None if autograd else self._logits_jacobian(theta)
        if jac is None:
            return torch.func.jacrev(self.log_probs)(theta)
        return jac - torch.einsum("sa,sap->sp", self.probs(theta), jac)[:, None, :]

    def _logits_jacobian(self, theta: Tensor) -> Tensor | None:
        """∂ logits(s, a) / ∂θ, (S, A, P), when known in closed form (else None)."""
        return None

    def log_prob(self, theta: Tensor, s: Tensor, a: Tensor) -> Tensor:
        """log π_θ(a_i|s_i) for sampled pairs; ``s`` and ``a`` share a batch shape."""
        check_index(s, "s", self.n_contexts)
        check_index(a, "a", self.n_actions)
        if s.shape != a.shape:
            raise ValueError(f"s and a must have the same shape, got {tuple(s.shape)} and {tuple(a.shape)}")
        self._check_theta(theta, batched=False)
        check_same_device(theta=theta, s=s, a=a)
        return self.log_probs(theta)[s, a]

    def init(self, like: Tensor | None = None, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu") -> Tensor:
        """θ = 0 (the uniform policy), on the device/dtype of ``like`` when given."""
        if like is not None:
            check_tensor(like, "like", floating=True)
            return like.new_zeros(self.n_params)
        check_float_dtype(dtype)
        return torch.zeros(self.n_params, dtype=dtype, device=device)


class TabularSoftmax(SoftmaxPolicy):
    """One free logit per (context, action): θ has shape (S·A,), logits = θ.view(S, A)."""

    def __init__(self, n_contexts: int, n_actions: int):
        self.n_contexts = check_positive_int(n_contexts, "n_contexts")
        self.n_actions = check_positive_int(n_actions, "n_actions")
        self.n_params = n_contexts * n_actions

    def logits(self, theta: Tensor) -> Tensor:
        self._check_theta(theta)
        return theta.reshape(*theta.shape[:-1], self.n_contexts, self.n_actions)

    def _logits_jacobian(self, theta: Tensor) -> Tensor:
        eye = torch.eye(self.n_params, dtype=theta.dtype, device=theta.device)
        return eye.view(self.n_contexts, self.n_actions, self.n_params)

    def __repr__(self) -> str:
        return f"TabularSoftmax(S={self.n_contexts}, A={self.n_actions})"


class LinearSoftmax(SoftmaxPolicy):
    """Logits linear in features: logits(s, a) = φ(s, a)·θ, with φ of shape (S, A, P)."""

    def __init__(self, features: Tensor):
        check_tensor(features, "features", ndim=3, floating=True, nonempty=True)
        check_finite(features, "features")
        self.features = features
        self.n_contexts, self.n_actions, self.n_params = features.shape

    def logits(self, theta: Tensor) -> Tensor:
        self._check_theta(theta)
        check_same_device(theta=theta, features=self.features)
        return torch.einsum("sap,...p->...sa", self.features.to(theta.dtype), theta)

    def _logits_jacobian(self, theta: Tensor) -> Tensor:
        check_same_device(theta=theta, features=self.features)
        return self.features.to(theta.dtype)

    def __repr__(self) -> str:
        return f"LinearSoftmax(S={self.n_contexts}, A={self.n_actions}, P={self.n_params})"


# -- the shared bandits ---------------------------------------------------------------------
def context_bandit(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
                   noise_std: float = 0.0) -> Bandit:
    """Three contexts, four actions; the best action differs by context.

    Used from chapter 01 on. Rewards lie in [0, 1]; the uniform policy earns J ≈ 0.43,
    the best policy 1.0.
    """
    check_float_dtype(dtype)
    rho = torch.tensor([0.5, 0.3, 0.2], dtype=dtype, device=device)
    means = torch.tensor([[1.0, 0.6, 0.2, 0.0],
                          [0.0, 0.3, 1.0, 0.5],
                          [0.4, 1.0, 0.0, 0.1]], dtype=dtype, device=device)
    return Bandit(rho, means, noise_std, "context", ["a0", "a1", "a2", "a3"])


def offset_bandit(offset: float = 10.0, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Bandit:
    """:func:`context_bandit` with every reward raised by ``offset``: the same ∇J, far more
    variance for the plain score-function estimator (chapters 02-03)."""
    offset = check_number(offset, "offset")
    b = context_bandit(dtype=dtype, device=device).shifted(offset)
    return Bandit(b.rho, b.means, 0.0, f"offset{offset:g}", b.action_names)


def two_param_bandit(dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                     ) -> tuple[Bandit, LinearSoftmax]:
    """One context, three actions, a linear-softmax policy with two parameters.

    Returns ``(bandit, policy)``. The features make J(θ₁, θ₂) a landscape one can draw:
    logits = (θ₁, θ₂, −θ₁ − θ₂) and rewards (1, 0.6, 0): the optimum is at infinity along θ₁.
    """
    check_float_dtype(dtype)
    rho = torch.ones(1, dtype=dtype, device=device)
    means = torch.tensor([[1.0, 0.6, 0.0]], dtype=dtype, device=device)
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]], dtype=dtype, device=device)
    return Bandit(rho, means, 0.0, "two-param", ["a0", "a1", "a2"]), LinearSoftmax(feats)


def noisy_bandit(noise_std: float = 0.5, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Bandit:
    """:func:`context_bandit` with Gaussian reward noise of known standard deviation."""
    return context_bandit(dtype=dtype, device=device, noise_std=noise_std)


# -- bandits of chosen difficulty and group sampling (chapter 08) --------------------------
def difficulty_bandit(p_success: Tensor | Sequence[float], n_actions: int = 4,
                      dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
                      ) -> tuple[Bandit, TabularSoftmax, Tensor]:
    """Contexts of chosen difficulty: reward 1 for action 0, 0 for the other actions, and θ
    such that π_θ(action 0 | s) = p_s. Returns ``(bandit, policy, theta)`` with ρ uniform and
    a :class:`TabularSoftmax` policy (the wrong actions share one logit, 0).
    """
    check_float_dtype(dtype)
    try:
        p = torch.as_tensor(p_success, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"p_success: expected a sequence of probabilities, got "
                         f"{p_success!r}") from None
    check_tensor(p, "p_success", ndim=1, floating=True, nonempty=True)
    A = check_positive_int(n_actions, "n_actions")
    if A < 2:
        raise ValueError(f"n_actions: expected at least 2, got {A}")
    check_in_range(p, "p_success", 0.0, 1.0, low_open=True, high_open=True)
    S = p.shape[0]
    means = torch.zeros(S, A, dtype=dtype, device=device)
    means[:, 0] = 1.0
    rho = torch.full((S,), 1.0 / S, dtype=dtype, device=device)
    bandit = Bandit(rho, means, 0.0, "difficulty", [f"a{k}" for k in range(A)])
    logits = torch.zeros(S, A, dtype=dtype, device=device)
    logits[:, 0] = torch.log(p / (1 - p) * (A - 1))
    return bandit, TabularSoftmax(S, A), logits.reshape(-1)


def sample_groups(bandit: Bandit, probs: Tensor, n_groups: int, group_size: int,
                  generator: torch.Generator) -> BanditBatch:
    """n_groups contexts s ~ ρ, then G actions a ~ π(·|s) each: fields of shape (n_groups, G),
    ``s`` constant along a row (the group shares its prompt)."""
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    check_positive_int(n_groups, "n_groups")
    G = check_positive_int(group_size, "group_size")
    check_tensor(probs, "probs", floating=True)
    if tuple(probs.shape) != (bandit.n_contexts, bandit.n_actions):
        raise ValueError(f"probs: expected shape ({bandit.n_contexts}, {bandit.n_actions}) "
                         f"(one policy's table), got {tuple(probs.shape)}")
    one = bandit.sample(probs, n_groups, generator)        # contexts (and one action each)
    s = one.s[:, None].expand(n_groups, G)
    p = probs.detach()
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.to(torch.float64)
    a = torch.multinomial(p[one.s], G, replacement=True, generator=generator)
    r = bandit.means[s, a]
    if bandit.noise_std > 0:
        r = r + bandit.noise_std * torch.randn(r.shape, generator=generator, device=r.device,
                                               dtype=r.dtype)
    return BanditBatch(s.contiguous(), a, r)
