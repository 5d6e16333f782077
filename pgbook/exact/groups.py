"""Exact statistics of group estimators on bandits (chapter 08).

A group estimator draws one context s ~ ρ, then G actions a_1 … a_G ~ π_θ(·|s) with rewards
r_i = r(s, a_i), and estimates ∇J with

    ĝ = (1/G) Σ_i Â_i ∇_θ log π_θ(a_i|s),       Â = advantage(r_1 … r_G)   (reward side),

Â any registered advantage of form ``"group"`` ("grpo", "grpo_mean", "rloo", "plain" from
:mod:`pgbook.reward.advantages`, or yours; an unknown option raises). With deterministic
rewards, finitely many actions and a small G, the distribution of the group is finite:
either all A^G ordered tuples, or (since Â and ĝ only depend on *how many* times each action
was drawn) the C(G + A − 1, A − 1) count vectors n with multinomial probability
G!/Π n_a! · Π π(a|s)^{n_a}. :func:`exact_group_moments` sums over them to give the exact
mean and covariance of ĝ: the group-estimator counterpart of
:func:`pgbook.exact.bandits.exact_estimator_moments`.

For 0/1 rewards every such estimator's expected gradient in a context is a multiple of
that context's true gradient ∇p_s (p_s = P(success | s)): E[ĝ | s] = w(p_s, G) ∇p_s, with
the *per-context weight* of :func:`binary_group_weight` (w = (G − 1)/G for the group mean,
1 for RLOO, a U-shaped function of p for GRPO's std normalisation).

Everything is computed on the device and dtype of θ and the bandit; the sizes are meant for
exact enumeration (A^G up to about 10⁵ for ``"sequences"``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validate import (
    check_in_range,
    check_index,
    check_option,
    check_options,
    check_positive_int,
    check_same_device,
    check_tensor,
    to_work,
)
from ..registry import resolve
from ..worlds.bandits import Bandit, BanditBatch, SoftmaxPolicy
from .bandits import check_world

__all__ = [
    "binary_group_weight",
    "binomial_zero_variance",
    "context_gradients",
    "context_weights",
    "counts_to_sequences",
    "exact_group_moments",
    "group_counts",
    "group_estimates",
    "group_sequences",
    "grpo_large_group_weight",
    "n_group_outcomes",
    "zero_variance_probability",
]


def _estimator(name: str, options: dict):
    """The group advantage ``name`` as ``f(rewards (N,), G) -> (N,)``, with ``options``.

    Any advantage registered with form ``"group"`` works: its advantages must depend on the
    group's own G rewards only (the exact tools evaluate it on every possible group at once,
    so an estimator that reads the rest of the batch, form ``"batch"``, would be wrong here).
    """
    fn = resolve("advantage", name, "group", what="estimator")
    check_options(fn, options, f"estimator {name!r}", skip=2)  # fn(rewards, G, **options)
    return lambda r, G: fn(r, G, **options)


# -- the finite set of group outcomes -------------------------------------------------------
def group_sequences(n_actions: int, group_size: int,
                    device: torch.device | str | None = None) -> Tensor:
    """Every ordered group (a_1 … a_G) ∈ {0..A−1}^G, shape (A^G, G) long, lexicographic."""
    A = check_positive_int(n_actions, "n_actions")
    G = check_positive_int(group_size, "group_size")
    if A ** G > 2_000_000:
        raise ValueError(f"A^G = {A}^{G} = {A ** G} groups is too many to enumerate; use counts")
    digits = torch.arange(A ** G, device=device)[:, None] // (A ** torch.arange(G - 1, -1, -1,
                                                                             device=device))
    return digits % A


def group_counts(n_actions: int, group_size: int,
                 device: torch.device | str | None = None) -> Tensor:
    """Every count vector n ∈ N^A with Σ_a n_a = G, shape (C(G+A−1, A−1), A) long."""
    A = check_positive_int(n_actions, "n_actions")
    G = check_positive_int(group_size, "group_size")
    # stars and bars: choose A − 1 bar positions among G + A − 1 slots
    bars = torch.combinations(torch.arange(G + A - 1, device=device), A - 1) if A > 1 else \
        torch.zeros(1, 0, dtype=torch.long, device=device)
    edges = torch.cat([torch.full((bars.shape[0], 1), -1, device=device, dtype=torch.long), bars,
                       torch.full((bars.shape[0], 1), G + A - 1, device=device,
                                  dtype=torch.long)], 1)
    return edges.diff(dim=1) - 1


def counts_to_sequences(counts: Tensor) -> Tensor:
    """The sorted group (a_1 ≤ … ≤ a_G) with the given counts, (M, A) → (M, G); every row
    must hold non-negative integer counts with the same sum G."""
    check_tensor(counts, "counts", ndim=2, nonempty=True)
    check_index(counts, "counts", 2 ** 31)  # integer counts ≥ 0
    sums = counts.sum(1)
    if bool((sums != sums[0]).any()):
        raise ValueError(f"counts: expected rows with one sum G (a group size), got sums from "
                         f"{int(sums.min())} to {int(sums.max())}")
    G = int(counts[0].sum()) if counts.numel() else 0
    cum = counts.cumsum(1)                                          # (M, A)
    j = torch.arange(G, device=counts.device)
    return (cum[:, None, :] <= j[None, :, None]).sum(-1)            # (M, G)


def _log_multinomial(counts: Tensor, probs: Tensor) -> Tensor:
    """log P(n | π(·|s)) for every context and count vector: (S, A), (M, A) → (S, M)."""
    n = counts.to(probs.dtype)
    G = n[0].sum()
    log_coef = torch.lgamma(G + 1) - torch.lgamma(n + 1).sum(-1)     # (M,)
    return log_coef[None, :] + torch.xlogy(n[None, :, :], probs[:, None, :]).sum(-1)


def _outcomes(probs: Tensor, group_size: int, method: str) -> tuple[Tensor, Tensor]:
    """(actions (M, G), prob (S, M)) over the enumerated group outcomes."""
    _S, A = probs.shape
    if method == "sequences":
        acts = group_sequences(A, group_size, probs.device)
        logp = torch.log(probs)                                        # (S, A)
        prob = torch.exp(logp[:, acts].sum(-1))                         # (S, M)
        prob = torch.where(torch.isnan(prob), torch.zeros_like(prob), prob)
        return acts, prob
    if method == "counts":
        counts = group_counts(A, group_size, probs.device)
        return counts_to_sequences(counts), torch.exp(_log_multinomial(counts, probs))
    check_option(method, "enumerate", ("counts", "sequences"))
    raise AssertionError  # pragma: no cover


def exact_group_moments(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, group_size: int,
                        estimator: str = "grpo", *, enumerate: str = "counts", **options) -> dict:
    """Exact moments of the one-group estimator ĝ = (1/G) Σ_i Â_i ∇log π_θ(a_i|s).

    Returns a dict of tensors (dtype/device of θ):
      ``mean`` (P,)              E[ĝ] = Σ_s ρ(s) E[ĝ | s]
      ``cov`` (P, P)             Cov[ĝ] (s random too); an average of M groups has Cov/M
      ``context_mean`` (S, P)    E[ĝ | s]
      ``context_var`` (S,)       tr Cov[ĝ | s]
      ``zero_variance`` (S,)     P(all G rewards equal | s)

    ``estimator``: a registered group advantage (form ``"group"``: "grpo", "grpo_mean",
    "rloo", "plain", or yours), called with ``**options`` (e.g. ``std_eps``, ``unbiased``
    for "grpo"); ``enumerate`` = ``"counts"`` (multinomial count vectors)
    or ``"sequences"`` (all A^G ordered groups; the two must agree). Rewards must be
    deterministic (``noise_std = 0``).
    """
    check_world(bandit, policy, theta)
    check_option(enumerate, "enumerate", ("counts", "sequences"))
    if bandit.noise_std > 0:
        raise ValueError(f"bandit: exact group enumeration needs deterministic rewards, got "
                         f"noise_std = {bandit.noise_std}")
    G = check_positive_int(group_size, "group_size")
    adv_fn = _estimator(estimator, options)
    with torch.no_grad():
        theta = theta.detach()
        probs = policy.probs(theta)                                     # (S, A)
        acts, prob = _outcomes(probs, G, enumerate)                     # (M, G), (S, M)
        _S, A = probs.shape
        r = bandit.means.to(probs.dtype)[:, acts]                       # (S, M, G)
        adv = adv_fn(r.reshape(-1), G).view(r.shape)                     # (S, M, G)
        onehot = torch.nn.functional.one_hot(acts, A).to(probs.dtype)  # (M, G, A)
        coef = torch.einsum("smg,mga->sma", adv, onehot) / G           # (S, M, A)
        sc = policy.scores(theta)                                 # (S, A, P)
        g = torch.einsum("sma,sap->smp", coef, sc)                      # (S, M, P)
        cmean = torch.einsum("sm,smp->sp", prob, g)                     # (S, P)
        csecond = torch.einsum("sm,smp,smq->spq", prob, g, g)           # (S, P, P)
        rho = bandit.rho.to(probs.dtype)
        mean = rho @ cmean
        cov = torch.einsum("s,spq->pq", rho, csecond) - torch.outer(mean, mean)
        cvar = torch.diagonal(csecond, dim1=-2, dim2=-1).sum(-1) - cmean.pow(2).sum(-1)
        return {"mean": mean, "cov": cov, "context_mean": cmean, "context_var": cvar,
                "zero_variance": zero_variance_probability(bandit, probs, G)}


def context_gradients(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor) -> Tensor:
    """∇_θ J_s(θ) = ∇_θ Σ_a π_θ(a|s) r(s, a) for each context, shape (S, P); the exact
    gradient is ∇J = Σ_s ρ(s) ∇J_s."""
    check_world(bandit, policy, theta)
    check_tensor(theta, "theta", ndim=1, floating=True)
    with torch.no_grad():
        probs = policy.probs(theta.detach())
        adv = bandit.advantages(probs)                                  # (S, A)
        # ∇J_s = Σ_a π(a|s) (r(s, a) − V(s)) ∇log π(a|s)  (the baseline term has zero mean)
        return torch.einsum("sa,sap->sp", probs * adv, policy.scores(theta))


def context_weights(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, group_size: int,
                    estimator: str = "grpo", **kw) -> Tensor:
    """How much the estimator scales each context's true gradient, shape (S,):

        w_s = ⟨E[ĝ | s], ∇J_s⟩ / ‖∇J_s‖²

    (the projection coefficient; E[ĝ | s] = w_s ∇J_s exactly for 0/1 rewards, see
    :func:`binary_group_weight`). Contexts with ∇J_s = 0 get NaN-free 0."""
    mom = exact_group_moments(bandit, policy, theta, group_size, estimator, **kw)
    gs = context_gradients(bandit, policy, theta)
    den = gs.pow(2).sum(-1)
    num = (mom["context_mean"] * gs).sum(-1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(den))


def zero_variance_probability(bandit: Bandit, probs: Tensor, group_size: int) -> Tensor:
    """P(all G rewards of a group are equal | s), shape (S,).

    With reward classes v (actions grouped by equal reward), P = Σ_v P(r = v | s)^G; for 0/1
    rewards with success probability p this is p^G + (1 − p)^G.
    """
    G = check_positive_int(group_size, "group_size")
    if not isinstance(bandit, Bandit):
        raise ValueError(f"bandit: expected a Bandit, got {type(bandit).__name__}")
    check_tensor(probs, "probs", ndim=2, floating=True)
    bandit._check_probs(probs)
    eq = (bandit.means[:, :, None] == bandit.means[:, None, :]).to(probs.dtype)  # (S, A, A)
    mass = torch.einsum("sab,sb->sa", eq, probs)          # P(r = r(s, a) | s)
    # Σ_a π(a) P_a^{G−1} = Σ_v Σ_{a∈v} π(a) P_v^{G−1} = Σ_v P_v^G
    return (probs * mass.pow(G - 1)).sum(-1)


def binary_group_weight(p: Tensor, group_size: int, estimator: str = "grpo", **options) -> Tensor:
    """Per-context weight w(p, G) of a group estimator for 0/1 rewards, same shape as ``p``.

    With K ~ Binomial(G, p) successes, Â⁺(K), Â⁻(K) the advantages of a success and of a
    failure in such a group (computed by the library's estimator), and
    E[∇log π(a) | success] = ∇p/p, E[∇log π(a) | failure] = −∇p/(1 − p):

        E[ĝ | s] = w(p, G) ∇p,   w(p, G) = (1/G) E_K[ K Â⁺(K)/p − (G − K) Â⁻(K)/(1 − p) ].

    grpo_mean: (G − 1)/G; rloo and plain: 1; grpo: ≈ (G−1)/G / √(p(1−p)) for large G.
    ``p`` must lie in (0, 1).
    """
    check_tensor(p, "p", floating=True)
    G = check_positive_int(group_size, "group_size")
    check_in_range(p, "p", 0.0, 1.0, low_open=True, high_open=True)
    adv_fn = _estimator(estimator, options)
    work = torch.promote_types(p.dtype, torch.float32)
    pw = p.to(work)
    K = torch.arange(G + 1, device=p.device, dtype=work)                 # (G+1,)
    groups = (torch.arange(G, device=p.device, dtype=work)[None, :] < K[:, None]).to(work)
    adv = adv_fn(groups.reshape(-1), G).view(G + 1, G)                  # successes first
    a_pos = torch.where(K > 0, adv[:, 0], torch.zeros_like(K))
    a_neg = torch.where(K < G, adv[:, -1], torch.zeros_like(K))
    log_pmf = (torch.lgamma(torch.tensor(G + 1.0, dtype=work, device=p.device))
               - torch.lgamma(K + 1) - torch.lgamma(G - K + 1))
    x = pw[..., None]
    pmf = torch.exp(log_pmf + torch.xlogy(K, x) + torch.xlogy(G - K, 1 - x))
    w = (pmf * (K * a_pos / x - (G - K) * a_neg / (1 - x))).sum(-1) / G
    return w.to(p.dtype)


# -- sampling groups -----------------------------------------------------------------------
def group_estimates(bandit: Bandit, policy: SoftmaxPolicy, theta: Tensor, batch: BanditBatch,
                    estimator: str = "grpo", **options) -> Tensor:
    """ĝ of each sampled group, shape (n_groups, P): (1/G) Σ_i Â_i ∇log π_θ(a_i|s), with Â
    from the library's estimator on each row of ``batch.r`` (fields (n_groups, G), as
    :func:`pgbook.worlds.bandits.sample_groups` draws them)."""
    check_world(bandit, policy, theta)
    if not isinstance(batch, BanditBatch):
        raise ValueError(f"batch: expected a BanditBatch, got {type(batch).__name__}")
    if batch.r.dim() != 2:
        raise ValueError(f"batch: expected fields of shape (n_groups, G), got "
                         f"{tuple(batch.r.shape)}")
    check_index(batch.s, "batch.s", policy.n_contexts)
    check_index(batch.a, "batch.a", policy.n_actions)
    check_same_device(theta=theta, batch=batch.s)
    n, G = batch.r.shape
    adv = _estimator(estimator, options)(batch.r.reshape(-1), G).view(n, G)
    with torch.no_grad():
        sc = policy.scores(to_work(theta.detach()))                    # (S, A, P)
        coef = torch.einsum("ng,nga->na", adv.to(sc.dtype), torch.nn.functional.one_hot(
            batch.a, policy.n_actions).to(sc.dtype)) / G                     # (n, A)
        return torch.einsum("na,nap->np", coef, sc[batch.s[:, 0]]).to(theta.dtype)


def binomial_zero_variance(p: Tensor, group_size: int) -> Tensor:
    """p^G + (1 − p)^G: the probability that a group of G 0/1 rewards is all equal."""
    check_tensor(p, "p", floating=True)
    G = check_positive_int(group_size, "group_size")
    check_in_range(p, "p", 0.0, 1.0)
    return p.pow(G) + (1 - p).pow(G)


def grpo_large_group_weight(p: Tensor) -> Tensor:
    """The G → ∞ limit of w_grpo(p, G): 1/√(p(1 − p)), so that GRPO follows the gradient of
    Σ_s 2·arcsin√p_s instead of Σ_s p_s (d/dp 2 arcsin√p = 1/√(p(1−p)))."""
    check_tensor(p, "p", floating=True)
    check_in_range(p, "p", 0.0, 1.0, low_open=True, high_open=True)
    return 1.0 / torch.sqrt(p * (1 - p))


def n_group_outcomes(n_actions: int, group_size: int) -> tuple[int, int]:
    """(A^G ordered groups, C(G + A − 1, A − 1) count vectors)."""
    check_positive_int(n_actions, "n_actions")
    check_positive_int(group_size, "group_size")
    return n_actions ** group_size, math.comb(group_size + n_actions - 1, n_actions - 1)
