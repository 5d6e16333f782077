"""Critics on the enumerable tiny LM: exact V and Q over prefixes, learned critics V_φ, and
the exact bias and variance of the policy gradient with GAE(λ) advantages (chapter 10).

With prefixes as states, h_t = (x, y_<t), and γ = 1 (the LLM setting, verl's and TRL's
default), the value of a prefix and of a token are

    V(h_t) = E[ Σ_{t'≥t} r_t' | h_t ],      Q(h_t, y_t) = r_t + V(h_{t+1}),      A = Q − V,

with V = 0 once the response has ended (after EOS, or after position T). Because every
response of a :class:`~pgbook.worlds.seqlm.SeqSpace` can be listed, V is a conditional
expectation over the enumeration: the probability-weighted mean of the reward-to-go G_t
over the responses that share the prefix h_t (:func:`exact_values`).

A critic V̂ is any function of the prefix: the exact V, or a learned V_φ
(:class:`TabularCritic`, one value per prefix; :class:`MLPCritic`, a small shared-weight
network with the features of :class:`~pgbook.worlds.seqlm.MLPPolicy`), fitted by regression
on sampled returns (:func:`fit_critic`). Its GAE(λ) advantages Â_t(λ)
(:func:`pgbook.reward.critic.gae`) weight the token-level estimator

    ĝ = Σ_t m_t Â_t ∇log π_θ(y_t | h_t)        (one response; a batch of B averages B of them),

and :func:`gae_moments` gives its exact mean and covariance for any set of critics and λ:
λ = 1 is unbiased for every critic (Â_t = G_t − V̂(h_t), a baseline), λ < 1 is biased
through the critic's error V̂ − V (and unbiased for V̂ = V), and the variance usually falls
as λ does. The per-token scores s_t = ∇log π_θ(y_t|h_t) are computed once
(:func:`token_scores`), so every weighting costs one contraction.

Shapes: N enumerated pairs, T positions, P parameters of θ; critics' values (N, T) (or
(C, N, T) for C critics at once). Everything runs on the device and dtype of θ.
Factor of J(θ): reward (a critic changes the weight of ∇log π_θ, never p_θ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_finite_where,
    check_float_dtype,
    check_generator,
    check_mask,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..reward.advantages import reward_to_go
from ..reward.critic import gae
from ..worlds.seqlm import SeqPolicy, SeqReward, SeqSpace, Sequences, TabularPolicy
from .seqlm import _check_policy, _check_reward, exact_gradient, joint_probs
from .seqlm import _seqs as _checked_seqs

__all__ = [
    "ExactValues",
    "GAEMoments",
    "MLPCritic",
    "SeqCritic",
    "TabularCritic",
    "critic_error",
    "exact_values",
    "fit_critic",
    "gae_moments",
    "prefix_ids",
    "token_scores",
]


def _world(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None,
           *rewards: SeqReward) -> Sequences:
    """Check the world (a SeqPolicy, a finite θ, the SeqRewards given) and return ``seqs``
    (default: the enumeration) checked against the policy's space, before any torch.func
    transform."""
    _check_policy(policy, theta)
    for reward in rewards:
        _check_reward(reward)
    return _checked_seqs(policy, seqs)


def _check_space(space: SeqSpace) -> SeqSpace:
    if not isinstance(space, SeqSpace):
        raise ValueError(f"space: expected a SeqSpace, got {type(space).__name__}")
    return space


_TABLES: dict = {}


def _prefix_table(space: SeqSpace) -> TabularPolicy:
    """The prefix coding of ``space`` (a :class:`TabularPolicy`, built once per space)."""
    key = id(space)
    if key not in _TABLES or _TABLES[key][0] is not space:
        _TABLES[key] = (space, TabularPolicy(space))
    return _TABLES[key][1]


def prefix_ids(space: SeqSpace, x: Tensor, tokens: Tensor) -> Tensor:
    """The id of the prefix h_t = (x, y_<t) at every position, (*B, T) long in
    [0, X · n_prefixes): x · n_prefixes + code(y_<t), with the prefix code of
    :class:`~pgbook.worlds.seqlm.TabularPolicy` (n_prefixes = Σ_{t<T} V^t)."""
    _check_space(space).check(x, tokens)
    tab = _prefix_table(space)
    return x.unsqueeze(-1) * tab.n_prefixes + tab.prefix_codes(tokens)


# -- exact values -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExactValues:
    """Exact V(h_t), Q(h_t, y_t) and A = Q − V at every position of the enumeration, each
    (N, T), 0 where the mask is 0 (γ = 1)."""

    V: Tensor
    Q: Tensor
    A: Tensor


def _value_table(q: Tensor, G: Tensor, m: Tensor, ids: Tensor, n_ids: int) -> Tensor:
    """V per prefix id, (n_ids,): Σ q G / Σ q over the positions of each prefix (0 for a
    prefix no response reaches). Out-of-place ops only, so it runs under ``torch.func.vmap``
    over a batch of θ (the trainer of :mod:`pgbook.train.actor_critic` does)."""
    w = q.unsqueeze(-1) * m                               # (N, T): weight of each visit
    num = q.new_zeros(n_ids).index_add(0, ids.reshape(-1), (w * G).reshape(-1))
    den = q.new_zeros(n_ids).index_add(0, ids.reshape(-1), w.reshape(-1))
    pos = den > 0
    return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)), torch.zeros_like(den))


def _q_and_v(V: Tensor, r: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """(V, Q) masked, Q_t = r_t + V_{t+1} (V after the last position is 0)."""
    V = V * m
    V_next = torch.cat([V[..., 1:], torch.zeros_like(V[..., :1])], -1)
    return V, (r + V_next) * m


def exact_values(policy: SeqPolicy, theta: Tensor, reward: SeqReward,
                 seqs: Sequences | None = None) -> ExactValues:
    """V, Q and A = Q − V of ``policy`` at θ for ``reward``, exactly, with γ = 1:

        V(h_t) = Σ_{y ⊒ h_t} p_θ(y|x) G_t(y) / Σ_{y ⊒ h_t} p_θ(y|x),    G_t = Σ_{t'≥t} m_t' r_t',
        Q(h_t, y_t) = r_t + V(h_{t+1})   (V(h_{t+1}) = 0 after the last response token),

    the sums running over the enumerated responses y that begin with the prefix h_t (one
    scatter over prefix ids, no loop). Masked response tokens after EOS are not states.
    ``seqs`` must be the full enumeration (default). Returns :class:`ExactValues` of (N, T)
    tensors in θ's working dtype. Note that the padding after a response that is *cut* at T
    is no state either: V = 0 there and Q of its last token is its reward.
    """
    seqs = _world(policy, theta, seqs, reward)
    space = policy.space
    with torch.no_grad():
        q = joint_probs(policy, theta.detach(), seqs)
        total = q.new_zeros(space.X).index_add_(0, seqs.x, q)
        if not torch.allclose(total, space.rho.to(q), rtol=1e-4, atol=1e-6):
            raise ValueError("seqs: exact values need every response of every prompt (the full "
                             "enumeration, space.enumerate()); the given pairs do not sum to ρ")
        m = seqs.mask.to(q.dtype)
        r = reward.token_rewards(seqs.x, seqs.tokens, seqs.mask).to(q.dtype)
        ids = prefix_ids(space, seqs.x, seqs.tokens)
        table = _value_table(q, reward_to_go(r, m), m, ids, space.X * _prefix_table(space).n_prefixes)
        V, Q = _q_and_v(table[ids], r, m)
    return ExactValues(V, Q, Q - V)


# -- critics ------------------------------------------------------------------------------------
class SeqCritic:
    """A value function V_φ(h_t) on the enumerable LM: :meth:`values` maps (φ, x, tokens) to
    the value of the prefix before each position, (*B, T) (padding positions included: mask
    them). Subclasses define ``n_params`` and :meth:`values`."""

    space: SeqSpace
    n_params: int

    def values(self, phi: Tensor, x: Tensor, tokens: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check(self, phi: Tensor, x: Tensor, tokens: Tensor) -> None:
        check_tensor(phi, "phi", ndim=1, floating=True)
        if phi.shape[0] != self.n_params:
            raise ValueError(f"phi: expected shape ({self.n_params},) for {type(self).__name__}, "
                             f"got {tuple(phi.shape)}")
        self.space.check(x, tokens)
        check_same_device(phi=phi, x=x)
        check_finite(phi, "phi")

    def init(self, generator: torch.Generator | None = None, scale: float = 1.0,
             like: Tensor | None = None, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu") -> Tensor:
        """φ of shape (P_φ,): zeros (V_φ ≡ 0) without a generator, else N(0, scale²)."""
        if like is not None:
            check_tensor(like, "like", floating=True)
            dtype, device = like.dtype, like.device
        check_float_dtype(dtype)
        if generator is None:
            return torch.zeros(self.n_params, dtype=dtype, device=device)
        check_positive(scale, "scale", allow_zero=True)
        check_generator(generator, device)
        z = torch.randn(self.n_params, generator=generator, device=device, dtype=work_dtype(dtype))
        return (scale * z).to(dtype)


class TabularCritic(SeqCritic):
    """One free value per (prompt, prefix): V_φ(h_t) = φ[x, code(y_<t)], X · n_prefixes
    parameters. It can represent the exact V; fitted by least squares it is the mean return
    of the sampled responses that visit each prefix (unvisited prefixes keep their value)."""

    def __init__(self, space: SeqSpace):
        self.space = _check_space(space)
        self.n_params = space.X * _prefix_table(space).n_prefixes

    def values(self, phi: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        self._check(phi, x, tokens)
        return phi[prefix_ids(self.space, x, tokens)]

    def __repr__(self) -> str:
        return f"TabularCritic(P={self.n_params})"


class MLPCritic(SeqCritic):
    """A small shared-weight critic with the policy's features (:class:`MLPPolicy`'s):

        V_φ(h_t) = tanh(E_ctx[x] + E_prev[y_{t−1}] + E_pos[t]) · w + c,

    φ = (E_ctx (X, d), E_prev (V+1, d), E_pos (T, d), w (d,), c) flattened. It sees the
    prompt, the previous token and the position, not the whole prefix: it cannot represent
    a V that depends on more of the prefix (e.g. whether a pattern has already appeared)."""

    def __init__(self, space: SeqSpace, hidden: int = 8):
        self.space = _check_space(space)
        self.hidden = d = check_positive_int(hidden, "hidden")
        X, V, T = space.X, space.V, space.T
        shapes = [("E_ctx", (X, d)), ("E_prev", (V + 1, d)), ("E_pos", (T, d)), ("w", (d,)),
                  ("c", (1,))]
        self.blocks: dict[str, tuple[slice, tuple]] = {}
        start = 0
        for name, shape in shapes:
            n = math.prod(shape)
            self.blocks[name] = (slice(start, start + n), shape)
            start += n
        self.n_params = start

    def values(self, phi: Tensor, x: Tensor, tokens: Tensor) -> Tensor:
        self._check(phi, x, tokens)
        p = {k: phi[s].view(shape) for k, (s, shape) in self.blocks.items()}
        bos = torch.full_like(tokens[..., :1], self.space.V)
        prev = torch.cat([bos, tokens[..., :-1]], -1)
        emb = torch.nn.functional.embedding
        h = torch.tanh(emb(x, p["E_ctx"]).unsqueeze(-2) + emb(prev, p["E_prev"]) + p["E_pos"])
        return h @ p["w"] + p["c"]

    def __repr__(self) -> str:
        return f"MLPCritic(hidden={self.hidden}, P={self.n_params})"


def fit_critic(critic: SeqCritic, phi: Tensor, seqs: Sequences, targets: Tensor, *, steps: int,
               lr: float = 0.1, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Regression of V_φ on sampled returns: ``steps`` full-batch Adam steps on

        L(φ) = ½ Σ_{b,t} m_bt (V_φ(h_bt) − target_bt)² / Σ_{b,t} m_bt,

    from ``phi``; ``targets`` (B, T) the returns (the reward-to-go G_t of sampled responses
    for Monte-Carlo regression, or GAE's λ-returns), ``mask`` the response mask (default
    ``seqs.mask``). Returns ``(phi, losses)``: the fitted φ (detached) and the loss before
    each step, (steps,). Deterministic (no sampling inside).
    """
    if not isinstance(critic, SeqCritic):
        raise ValueError(f"critic: expected a SeqCritic, got {type(critic).__name__}")
    steps = check_positive_int(steps, "steps")
    lr = check_positive(lr, "lr")
    if not isinstance(seqs, Sequences):
        raise ValueError(f"seqs: expected a Sequences batch, got {type(seqs).__name__}")
    critic.values(phi, seqs.x[:1], seqs.tokens[:1])       # checks φ, and the ids' range
    critic.space.check(seqs.x, seqs.tokens, seqs.mask)
    m = seqs.mask if mask is None else mask
    check_tensor(targets, "targets", floating=True)
    check_shape(targets, "targets", tuple(seqs.tokens.shape))
    check_shape(m, "mask", tuple(seqs.tokens.shape))
    check_mask(m, "mask")
    check_same_device(phi=phi, targets=targets, mask=m)
    check_finite_where(targets, m, "targets")
    p = phi.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    mw = m.to(p.dtype)
    tgt = targets.detach().to(p.dtype)
    n = mw.sum()
    losses = []
    for _ in range(steps):
        loss = 0.5 * (mw * (critic.values(p, seqs.x, seqs.tokens) - tgt).pow(2)).sum() / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return p.detach(), torch.stack(losses)


def critic_error(policy: SeqPolicy, theta: Tensor, reward: SeqReward, values: Tensor,
                 seqs: Sequences | None = None) -> Tensor:
    """Root mean square error of a critic against the exact V over the prefixes the policy
    visits, weighted as they are visited:

        sqrt( E[ Σ_t m_t (V̂(h_t) − V(h_t))² ] / E[ Σ_t m_t ] ),

    ``values`` V̂ on the enumeration, (N, T) or (C, N, T) (→ shape (C,)). Exact."""
    seqs = _world(policy, theta, seqs, reward)
    ex = exact_values(policy, theta, reward, seqs)
    v = _check_values(values, seqs, "values").to(ex.V.dtype)
    with torch.no_grad():
        q = joint_probs(policy, theta.detach(), seqs)
        m = seqs.mask.to(q.dtype)
        sq = ((v - ex.V) * m).pow(2).sum(-1)              # (..., N)
        return (sq @ q / (m.sum(-1) @ q)).sqrt()


def _check_values(values: Tensor, seqs: Sequences, name: str) -> Tensor:
    check_tensor(values, name, floating=True)
    NT = tuple(seqs.tokens.shape)
    if values.dim() not in (2, 3) or tuple(values.shape[-2:]) != NT:
        raise ValueError(f"{name}: expected shape {NT} or (C, *{NT}) (critic values on the "
                         f"enumeration), got {tuple(values.shape)}")
    check_finite(values, name)
    return values


# -- the exact moments of the GAE policy gradient -------------------------------------------------
def token_scores(policy: SeqPolicy, theta: Tensor, seqs: Sequences | None = None) -> Tensor:
    """s_t = m_t ∇_θ log π_θ(y_t | h_t) at every position of ``seqs``, (N, T, P), 0 on the
    padding: the trajectory side of the token-level estimator, computed once (one Jacobian)
    so that any weighting w costs one contraction Σ_t w_t s_t."""
    seqs = _world(policy, theta, seqs)     # θ's values are checked before the transform

    def one(t, x, tok, mk):                      # one response: (T,) masked token log-probs
        out = policy.token_logprobs(t, x, tok)
        return out * mk.to(out.dtype)

    # a Jacobian per response (vmap over responses): far cheaper than one over the batch
    return torch.func.vmap(torch.func.jacrev(one), in_dims=(None, 0, 0, 0))(
        theta.detach(), seqs.x, seqs.tokens, seqs.mask)


@dataclass(frozen=True)
class GAEMoments:
    """Exact moments of the one-response GAE estimator for C critics × K values of λ.

    ``lams`` (K,); ``grad`` ∇J (P,); ``mean`` E[ĝ] (C, K, P); ``total_variance`` tr Cov[ĝ]
    (C, K); ``cov`` Cov[ĝ] (C, K, P, P) when asked for, else None. A batch of B independent
    responses has covariance Cov / B."""

    lams: Tensor
    grad: Tensor
    mean: Tensor
    total_variance: Tensor
    cov: Tensor | None = None

    @property
    def bias(self) -> Tensor:
        """E[ĝ] − ∇J, (C, K, P)."""
        return self.mean - self.grad

    @property
    def relative_bias(self) -> Tensor:
        """‖E[ĝ] − ∇J‖ / ‖∇J‖, (C, K)."""
        return self.bias.norm(dim=-1) / self.grad.norm()

    def mse(self, n_samples: int = 1) -> Tensor:
        """E‖ĝ_B − ∇J‖² = ‖bias‖² + tr Cov / B for a B-response average, (C, K)."""
        check_positive_int(n_samples, "n_samples")
        return self.bias.pow(2).sum(-1) + self.total_variance / n_samples

    def cosine(self) -> Tensor:
        """cos(E[ĝ], ∇J), (C, K)."""
        return torch.nn.functional.cosine_similarity(self.mean, self.grad.expand_as(self.mean),
                                                     dim=-1)


def gae_moments(policy: SeqPolicy, theta: Tensor, reward: SeqReward, values: Tensor,
                lams: float | Sequence[float] | Tensor,
                seqs: Sequences | None = None, *, full_cov: bool = False,
                scores: Tensor | None = None) -> GAEMoments:
    """Exact mean and covariance of ĝ = Σ_t m_t Â_t(λ) ∇log π_θ(y_t|h_t) under x ~ ρ,
    y ~ π_θ(·|x), for each critic and each λ, with γ = 1:

        Â(λ) = gae(r, V̂, m, γ = 1, λ)         (:func:`pgbook.reward.critic.gae`, no whitening)
        E[ĝ] = Σ_n q_n g_n,    Cov[ĝ] = Σ_n q_n g_n g_nᵀ − E[ĝ] E[ĝ]ᵀ,    q_n = ρ(x_n) p_θ(y_n|x_n).

    ``values``: the critics' V̂ on the enumeration, (N, T) or (C, N, T) (the exact V from
    :func:`exact_values`, a learned critic's ``values(φ, seqs.x, seqs.tokens)``, ...);
    ``lams``: a float or a sequence of K values in [0, 1]. ``scores`` (N, T, P) may be passed
    to reuse :func:`token_scores`. ``full_cov=True`` also returns the (C, K, P, P)
    covariances. Returns :class:`GAEMoments` (C = 1 for a single (N, T) critic).
    """
    seqs = _world(policy, theta, seqs, reward)
    v = _check_values(values, seqs, "values")
    check_same_device(values=values, theta=theta)
    v = v.unsqueeze(0) if v.dim() == 2 else v
    if isinstance(lams, (str, bool)):
        raise ValueError(f"lams: expected a number or a sequence of numbers in [0, 1], got "
                         f"{lams!r}")
    lam_list = [check_number(lams, "lams")] if isinstance(lams, (int, float)) else \
        [check_number(x, "lams") for x in lams]
    if not isinstance(full_cov, bool):
        raise ValueError(f"full_cov: expected True or False, got {full_cov!r}")
    if not lam_list:
        raise ValueError("lams: expected at least one value of λ, got none")
    for lam in lam_list:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lams: expected values in [0, 1], got {lam}")
    S = token_scores(policy, theta, seqs) if scores is None else scores
    check_shape(S, "scores", (*seqs.tokens.shape, policy.n_params))
    with torch.no_grad():
        q = joint_probs(policy, theta.detach(), seqs).to(S.dtype)
        r = reward.token_rewards(seqs.x, seqs.tokens, seqs.mask).to(S.dtype)
        m = seqs.mask.to(S.dtype)
        C = v.shape[0]
        A = torch.stack([torch.stack([gae(r, v[c].to(S.dtype), m, 1.0, lam)[0] for lam in lam_list])
                         for c in range(C)])                          # (C, K, N, T)
        g = torch.einsum("cknt,ntp->cknp", A, S)                     # per-response estimates
        mean = torch.einsum("n,cknp->ckp", q, g)
        second = torch.einsum("n,cknp->ck", q, g.pow(2))
        total = second - mean.pow(2).sum(-1)
        cov = None
        if full_cov:
            cov = torch.einsum("n,cknp,cknr->ckpr", q, g, g) - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    grad = exact_gradient(policy, theta, reward, seqs).to(S.dtype)
    return GAEMoments(torch.tensor(lam_list, dtype=S.dtype, device=S.device), grad, mean,
                      total.clamp_min(0), cov)
