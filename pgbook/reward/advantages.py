"""Group-relative advantages: the group's own rewards as the baseline (reward side).

For one prompt x the policy samples a *group* of G responses y_1 … y_G with rewards
R_1 … R_G. Instead of a learned critic V(x), the baseline comes from the group itself:

    grpo            Â_i = (R_i − μ_G) / (σ_G + ε)          (GRPO, Shao et al. 2024)
    grpo_mean       Â_i =  R_i − μ_G                        (Dr. GRPO, Liu et al. 2025)
    grpo_batch_std  Â_i = (R_i − μ_G) / (σ_batch + ε)       (REINFORCE++-baseline, Hu 2025)
    rloo            Â_i =  R_i − (1/(G−1)) Σ_{j≠i} R_j      (RLOO, Kool et al. 2019)
                        =  G/(G−1) · (R_i − μ_G)
    plain           Â_i =  R_i                               (no baseline)

with μ_G the group mean and σ_G the group standard deviation (Bessel-corrected, dividing by
G − 1, as in TRL and verl; ``unbiased=False`` divides by G; σ_batch is the standard
deviation of all N centred rewards R_i − μ_G). Factor of J(θ): reward (they change the scalar that weights
∇log p_θ(τ), never p_θ).

Convention: ``rewards`` is (N,) with N = (number of prompts) × G and the responses of one
prompt **contiguous**: rewards[k·G:(k+1)·G] is group k (what ``prompts.repeat_interleave(G)``
produces). For rewards in any order with a group id per response, use
:func:`group_by_index` or :func:`compute_advantages` with ``group_index``.

Zero-variance groups (all G rewards equal, e.g. every response correct) carry no signal:
their advantage is exactly 0 for every estimator with a baseline (never 0/0 = NaN);
:func:`zero_variance_groups` says which groups they are so they can be counted.

Registered estimators (kind ``"advantage"``, side ``"reward"``) share the signature
``fn(rewards (N,), group_size: int, *, std_eps: float = 1e-6, **options) -> (N,)``; they
compute in float32 for low-precision rewards and return the rewards' dtype, on the rewards'
device. Form ``"group"``: the advantages of a group depend on its own G rewards only (the
exact group tools of :mod:`pgbook.exact.groups` accept these); form ``"batch"``: they also
read the rest of the batch. An estimator that needs the response mask takes ``mask``
(N, T) as a keyword. :func:`compute_advantages` resolves any of them, yours included, by
name through :mod:`pgbook.registry`.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..registry import get, register, resolve


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Validate and view rewards (N,) as (N/G, G) in the working dtype."""
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_positive_int(group_size, "group_size")
    N = rewards.shape[0]
    if N == 0:
        raise ValueError("rewards: expected at least one reward, got an empty tensor")
    if N % group_size:
        raise ValueError(
            f"group_size: expected a divisor of the number of rewards N = {N} (responses of "
            f"one prompt are contiguous groups of G), got G = {group_size}"
        )
    check_finite(rewards, "rewards")
    return rewards.to(work_dtype(rewards.dtype)).view(N // group_size, group_size)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Which groups have all G rewards equal: bool (N/G,). Such groups get Â = 0 from every
    estimator with a baseline, so they contribute no gradient (DAPO's dynamic sampling
    filters them out). A group of size 1 is always zero-variance."""
    r = _grouped(rewards, group_size)
    return (r == r[:, :1]).all(dim=1)


def _centred(r: Tensor, exact_zeros: bool = True) -> tuple[Tensor, Tensor]:
    """(R − μ_G) with exact zeros in zero-variance groups (``exact_zeros=False``: left as
    computed, for a caller that zeroes them itself), and the zero-variance flags (M, 1)."""
    lo, hi = torch.aminmax(r, dim=1, keepdim=True)
    zero = lo == hi
    c = r - r.mean(dim=1, keepdim=True)
    return (torch.where(zero, 0.0, c) if exact_zeros else c), zero


def _std(c: Tensor, dim: int, unbiased: bool = True) -> Tensor:
    """Standard deviation of centred values along ``dim`` (keepdim), dividing by n − 1
    (``unbiased``) or n; 0 where there is a single value."""
    n = c.shape[dim]
    if n < 2:
        return torch.zeros_like(c.sum(dim=dim, keepdim=True))
    return (c.pow(2).sum(dim=dim, keepdim=True) / (n - 1 if unbiased else n)).sqrt()


@register("advantage", "grpo", side="reward", form="group",
          summary="Â = (R − mean_G)/(std_G + ε), per group",
          reference="Shao et al. 2024 (arXiv:2402.03300)")
def grpo_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6,
                   unbiased: bool = True) -> Tensor:
    """GRPO's z-score Â_i = (R_i − μ_G) / (σ_G + ε), shape (N,).

    σ_G is the group standard deviation, Bessel-corrected (÷ (G − 1), TRL's and verl's
    choice) unless ``unbiased=False`` (÷ G); zero-variance groups get Â = 0.
    Dividing by σ_G reweights prompts by difficulty: for 0/1 rewards with success rate p
    the expected gradient of a prompt is scaled by ≈ 1/√(p(1−p)) (chapter 08).
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    r = _grouped(rewards, group_size)
    c, zero = _centred(r, exact_zeros=False)
    # a zero-variance group divides by +inf: exactly 0 (never 0/0), with no pass of its own
    den = torch.where(zero, torch.inf, _std(c, 1, unbiased) + std_eps)
    return (c / den).reshape(-1).to(rewards.dtype)


@register("advantage", "grpo_mean", side="reward", form="group",
          summary="Â = R − mean_G (Dr. GRPO: no std)", reference="Liu et al. 2025 (arXiv:2503.20783)")
def grpo_mean_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6) -> Tensor:
    """Â_i = R_i − μ_G, shape (N,) (Dr. GRPO). The mean includes R_i itself, so the expected
    gradient is (G − 1)/G times the true one (chapter 08). ``std_eps`` is accepted (so every
    group estimator takes the same options) and unused."""
    check_positive(std_eps, "std_eps", allow_zero=True)
    c, _ = _centred(_grouped(rewards, group_size))
    return c.reshape(-1).to(rewards.dtype)


@register("advantage", "grpo_batch_std", side="reward", form="batch",
          summary="Â = (R − mean_G)/(std_batch + ε) (REINFORCE++-baseline)",
          reference="Hu 2025 (arXiv:2501.03262)")
def grpo_batch_std_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6,
                             unbiased: bool = True) -> Tensor:
    """Â_i = (R_i − μ_G) / (σ_batch + ε), shape (N,): the group mean as baseline, then one
    scale for the whole batch (σ_batch: std of all N centred rewards, ÷ (N − 1) unless
    ``unbiased=False``), so
    prompts are *not* reweighted by their own difficulty. All zeros if every group is
    zero-variance."""
    check_positive(std_eps, "std_eps", allow_zero=True)
    c, _ = _centred(_grouped(rewards, group_size))
    sd = _std(c.reshape(-1), 0, unbiased)
    # sd = 0 only when every centred reward is 0: divide by 1 there (no 0/0)
    return (c / torch.where(sd > 0, sd + std_eps, torch.ones_like(sd))).reshape(-1).to(rewards.dtype)


@register("advantage", "rloo", side="reward", form="group",
          summary="Â = R − mean of the other G−1 rewards (leave-one-out)",
          reference="Kool et al. 2019; Ahmadian et al. 2024 (arXiv:2402.14740)")
def rloo_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6) -> Tensor:
    """Â_i = R_i − (1/(G−1)) Σ_{j≠i} R_j = G/(G−1) · (R_i − μ_G), shape (N,).

    The baseline excludes the sample itself, so it is independent of a_i and the estimator
    is unbiased (chapter 08). Needs G ≥ 2. ``std_eps`` is accepted and unused.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    check_positive_int(group_size, "group_size")
    if group_size < 2:
        raise ValueError(f"group_size: RLOO needs at least 2 responses per group, got {group_size}")
    c, zero = _centred(_grouped(rewards, group_size), exact_zeros=False)
    scale = (~zero).to(c.dtype) * (group_size / (group_size - 1))  # (M, 1): one pass over c
    return (c * scale).reshape(-1).to(rewards.dtype)


@register("advantage", "plain", side="reward", form="group",
          summary="Â = R (no baseline; LLM path)")
def plain_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6) -> Tensor:
    """Â_i = R_i (no baseline), shape (N,); validated like the others (finite, G | N)."""
    check_positive(std_eps, "std_eps", allow_zero=True)
    _grouped(rewards, group_size)
    return rewards.clone()


def group_by_index(group_index: Tensor) -> tuple[Tensor, int]:
    """Regroup responses given a group id per response.

    ``group_index`` (N,) integer. Returns ``(order, G)``: ``order`` (N,) long is a stable
    permutation such that ``x[order]`` lists the groups contiguously (sorted by id), and G
    the common group size. Undo with ``y_back = torch.empty_like(y); y_back[order] = y``.
    Raises ValueError when the groups do not all have the same size.
    """
    check_tensor(group_index, "group_index", ndim=1)
    if group_index.is_floating_point() or group_index.dtype == torch.bool:
        raise ValueError(f"group_index: expected an integer tensor, got dtype {group_index.dtype}")
    N = group_index.shape[0]
    if N == 0:
        raise ValueError("group_index: expected at least one entry, got an empty tensor")
    order = torch.sort(group_index, stable=True).indices
    if _is_meta(group_index):
        raise ValueError("group_index: group sizes are data-dependent; not available on meta")
    _, counts = torch.unique_consecutive(group_index[order], return_counts=True)
    if bool((counts != counts[0]).any()):
        raise ValueError(
            f"group_index: expected groups of equal size, got sizes from {int(counts.min())} "
            f"to {int(counts.max())}"
        )
    return order, int(counts[0])


def compute_advantages(rewards: Tensor, estimator: str = "grpo", *, group_size: int | None = None,
                       group_index: Tensor | None = None, mask: Tensor | None = None,
                       **options) -> Tensor:
    """Advantages by a named estimator, in the rewards' original order: (N,), or (N, T) for a
    token-level estimator.

    ``estimator`` is any advantage registered with form ``"group"`` or ``"batch"``
    ("grpo", "grpo_mean", "rloo", "plain", "grpo_batch_std", or yours): the registry is the
    one list. Give either ``group_size`` (contiguous groups) or ``group_index`` (N,) (any
    order; regrouped with :func:`group_by_index` and scattered back). ``mask`` (N, T) is
    passed to estimators that take it (and ignored by the others, which read only the
    sequence rewards); ``**options`` (e.g. ``std_eps``, ``unbiased``) go to the estimator,
    and an option it does not take is an error.
    """
    fn = resolve("advantage", estimator, what="estimator")
    comp_form = get("advantage", estimator).form
    if comp_form not in ("group", "batch"):
        raise ValueError(f"estimator: {estimator!r} is not a group estimator (its form is "
                         f"{comp_form!r}; compute_advantages takes forms 'group' and 'batch')")
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in options if k not in params)
    if unknown:
        raise ValueError(f"estimator {estimator!r} takes no option {unknown}")
    if mask is not None and "mask" in params:
        options["mask"] = mask
    if (group_size is None) == (group_index is None):
        raise ValueError("expected exactly one of group_size and group_index")
    if group_size is not None:
        return fn(rewards, group_size, **options)
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_same_device(rewards=rewards, group_index=group_index)
    if group_index.shape != rewards.shape:
        raise ValueError(f"group_index: expected shape {tuple(rewards.shape)}, "
                         f"got {tuple(group_index.shape)}")
    order, G = group_by_index(group_index)
    if "mask" in options:
        options["mask"] = options["mask"][order]
    adv = fn(rewards[order], G, **options)
    out = torch.empty_like(adv)
    out[order] = adv
    return out


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """Â_{i,t} = Â_i · m_{i,t}: every response token gets its response's advantage, (N, T).

    ``advantages`` (N,), ``mask`` (N, T) 0/1 or bool; zeros where the mask is 0; dtype of
    ``advantages``, on their device. Factor of J(θ): reward (the sequence's scalar weight,
    copied to each of its log π(y_t|h_t) terms).
    """
    check_tensor(advantages, "advantages", ndim=1, floating=True)
    check_tensor(mask, "mask", ndim=2)
    if mask.shape[0] != advantages.shape[0]:
        raise ValueError(f"mask: expected {advantages.shape[0]} rows (one per advantage), "
                         f"got shape {tuple(mask.shape)}")
    check_same_device(advantages=advantages, mask=mask)
    check_finite(advantages, "advantages")
    a = advantages.unsqueeze(1)
    if torch.promote_types(a.dtype, mask.dtype) == a.dtype:   # bool, integer or ≤ precision
        return a * mask                                        # one pass: Â·1 = Â, Â·0 = 0
    return (a * mask).to(a.dtype)


# -- token-level returns -----------------------------------------------------------------------
@register("advantage", "reward_to_go", side="reward", form="token",
          summary="w_t = Σ_{t'≥t} r_t' (only rewards that follow token t)")
def reward_to_go(token_rewards: Tensor, mask: Tensor) -> Tensor:
    """G_t = m_t Σ_{t' ≥ t} m_t' r_t', shape (*B, T): the reward still to come at token t.

    Causality: the action y_t cannot affect rewards paid before it, so dropping them from
    token t's weight keeps the estimator unbiased. Zero on padding. Factor of J(θ): reward.
    """
    check_tensor(token_rewards, "token_rewards", floating=True)
    check_shape(mask, "mask", tuple(token_rewards.shape))
    m = mask.to(token_rewards.dtype)
    r = token_rewards * m
    return m * torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])


def advantage_stats(rewards: Tensor, group_size: int) -> dict:
    """Group diagnostics as 0-dim tensors: ``zero_variance_fraction`` (share of groups with
    all rewards equal), ``zero_variance_groups`` (their number), ``group_std_mean``
    (mean σ_G), ``reward_mean``."""
    r = _grouped(rewards, group_size)
    c, zero = _centred(r)
    return {
        "zero_variance_groups": zero.sum(),
        "zero_variance_fraction": zero.to(r.dtype).mean(),
        "group_std_mean": _std(c, 1).mean(),
        "reward_mean": r.mean(),
    }


__all__ = [
    "advantage_stats",
    "broadcast_to_tokens",
    "compute_advantages",
    "group_by_index",
    "grpo_advantage",
    "grpo_batch_std_advantage",
    "grpo_mean_advantage",
    "plain_advantage",
    "reward_to_go",
    "rloo_advantage",
    "zero_variance_groups",
]
