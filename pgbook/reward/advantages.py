"""Group-relative advantages: the group's own rewards as the baseline (reward side).

For one prompt x the policy samples a *group* of G responses y_1 … y_G with rewards
R_1 … R_G. Instead of a learned critic V(x), the baseline comes from the group itself:

    grpo            Â_i = (R_i − μ_G) / (σ_G + ε)          (GRPO, Shao et al. 2024)
    grpo_mean       Â_i =  R_i − μ_G                        (Dr. GRPO, Liu et al. 2025)
    reinforce_pp_baseline
                    Â_i = (c_i − μ_tok) / (σ_tok + ε),  c_i = R_i − μ_G
                                                            (REINFORCE++-baseline, Hu et al. 2025)
    group_mean_batch_std_seq
                    Â_i = (R_i − μ_G) / (σ_seq + ε)         (a sequence-level simplification)
    rloo            Â_i =  R_i − (1/(G−1)) Σ_{j≠i} R_j      (RLOO, Kool et al. 2019)
                        =  G/(G−1) · (R_i − μ_G)
    plain           Â_i =  R_i                               (no baseline)

with μ_G the group mean and σ_G the group standard deviation (Bessel-corrected, dividing by
G − 1, as in TRL and verl; ``unbiased=False`` divides by G); μ_tok and σ_tok the mean and
standard deviation of the centred rewards over every valid *token* of the batch (a
response of L_i tokens counts L_i times), σ_seq that of the N centred rewards (each response
once). Factor of J(θ): reward (they change the scalar that weights ∇log p_θ(τ), never p_θ).

Convention: ``rewards`` is (N,) with N = (number of prompts) × G and the responses of one
prompt **contiguous**: rewards[k·G:(k+1)·G] is group k (what ``prompts.repeat_interleave(G)``
produces). For rewards in any order with a group id per response, use
:func:`group_by_index` or :func:`compute_advantages` with ``group_index``.

Zero-variance groups (all G rewards equal, e.g. every response correct) carry no signal:
their advantage is exactly 0 for every estimator with a baseline (never 0/0 = NaN);
:func:`zero_variance_groups` says which groups they are so they can be counted. A group of
one response is zero-variance, so its advantage is 0 (as in OpenRLHF); verl instead gives a
singleton the baseline 0 and the scale 1 (Â = R), and TRL needs G ≥ 2.

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

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    _no_values,
    check_finite,
    check_finite_where,
    check_mask,
    check_nonnegative_int,
    check_options,
    check_positive,
    check_positive_int,
    check_same_device,
    check_same_shape,
    check_shape,
    check_tensor,
    parameters,
    values_checked,
    work_dtype,
)
from ..registry import components, register, resolve


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
    _check_unbiased(unbiased)
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


def _check_unbiased(unbiased: bool) -> bool:
    if not isinstance(unbiased, bool):
        raise ValueError(f"unbiased: expected True or False, got {unbiased!r}")
    return unbiased


@register("advantage", "reinforce_pp_baseline", side="reward", form="batch",
          summary="Â = whiten over the batch's tokens of (R − mean_G) (REINFORCE++-baseline)",
          reference="Hu et al. 2025 (arXiv:2501.03262)")
def reinforce_pp_baseline_advantage(rewards: Tensor, group_size: int, *, mask: Tensor | None = None,
                                    std_eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    """REINFORCE++-baseline as its authors' code computes it, shape (N,):

        c_i   = R_i − μ_G                                  (the group-mean baseline)
        L_i   = Σ_t m_it                                   (response i's tokens)
        μ_tok = Σ_i L_i c_i / Σ_i L_i                      (mean over the batch's tokens)
        σ²_tok = Σ_i L_i (c_i − μ_tok)² / (Σ_i L_i − 1)    (÷ Σ_i L_i with unbiased=False)
        Â_i   = (c_i − μ_tok) / (σ_tok + ε)                 (0 for a row with no token)

    Every valid token of response i carries Â_i, so ``broadcast_to_tokens(Â, mask)`` is the
    token-level advantage. A long response counts once per token in μ_tok and σ_tok: that is
    the difference from ``group_mean_batch_std_seq`` (every response once, no re-centring).
    The group mean keeps the baseline of GRPO; one batch-wide scale replaces the per-group
    σ_G, so prompts are not reweighted by their own difficulty. Needs ``mask`` (N, T)
    (0/1, bool or float, not all zero).

    References and conventions (checked in tests/test_contract.py):

    * verl ``compute_reinforce_plus_plus_baseline_outcome_advantage`` (then
      ``masked_whiten``): Bessel-corrected token variance (``unbiased=True``, the default)
      and (c − μ_tok)·rsqrt(σ²_tok + 1e-8) instead of / (σ_tok + ε); a group of one response
      keeps its raw reward there (its baseline is 0).
    * OpenRLHF ``reinforce_baseline`` (``compute_advantages_and_returns``): the token
      variance divides by Σ L_i (``unbiased=False``) and uses rsqrt(max(σ²_tok, 1e-8)); a
      group of one is centred to 0.
    * pgbook: a group of one (or any zero-variance group) has c = 0, as in OpenRLHF and every
      other group estimator here; rows whose mask is all zero still count in their group's
      mean μ_G but carry no token, so they enter neither μ_tok nor σ_tok, and get Â = 0. If
      σ_tok = 0 (e.g. every group zero-variance, or a single token) every Â is 0 (no 0/0).
      With ``std_eps=0`` the result equals verl's (``unbiased=True``) or OpenRLHF's
      (``unbiased=False``) to ~1e-8/σ²_tok relative.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    _check_unbiased(unbiased)
    r = _grouped(rewards, group_size)
    if mask is None:
        raise ValueError("mask: reinforce_pp_baseline whitens over the batch's tokens and needs "
                         "the response mask (N, T)")
    check_tensor(mask, "mask", ndim=2)
    if mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask: expected shape ({rewards.shape[0]}, T) (one row per reward), "
                         f"got {tuple(mask.shape)}")
    check_same_device(rewards=rewards, mask=mask)
    check_mask(mask, "mask")
    c, _ = _centred(r)
    c = c.reshape(-1)                                             # (N,)
    L = (mask != 0).sum(-1).to(c.dtype)                            # (N,) tokens per response
    n_tok = L.sum()
    mu = (L * c).sum() / n_tok
    d = c - mu
    den = (n_tok - 1).clamp_min(1) if unbiased else n_tok
    sd = ((L * d * d).sum() / den).sqrt()
    adv = d / torch.where(sd > 0, sd + std_eps, torch.ones_like(sd))
    adv = torch.where((L > 0) & (sd > 0), adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype)


@register("advantage", "group_mean_batch_std_seq", side="reward", form="batch",
          summary="Â = (R − mean_G)/(std over the batch's N sequences + ε)")
def group_mean_batch_std_seq_advantage(rewards: Tensor, group_size: int, *,
                                       std_eps: float = 1e-6, unbiased: bool = True) -> Tensor:
    """Â_i = (R_i − μ_G) / (σ_seq + ε), shape (N,): the group mean as baseline, then one
    scale for the whole batch, σ_seq the standard deviation of the N centred rewards (each
    *response* counts once, whatever its length; ÷ (N − 1) unless ``unbiased=False``); the
    centred rewards are not re-centred. A sequence-level simplification of
    REINFORCE++-baseline (:func:`reinforce_pp_baseline_advantage`, which whitens over
    tokens): the two agree only when every response has the same length. All zeros if every
    group is zero-variance."""
    check_positive(std_eps, "std_eps", allow_zero=True)
    _check_unbiased(unbiased)
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
    ("grpo", "grpo_mean", "rloo", "plain", "reinforce_pp_baseline",
    "group_mean_batch_std_seq", or yours): the registry is the one list. Give either ``group_size`` (contiguous groups) or ``group_index`` (N,) (any
    order; regrouped with :func:`group_by_index` and scattered back). ``mask`` (N, T) is
    passed to estimators that take it (and ignored by the others, which read only the
    sequence rewards); ``**options`` (e.g. ``std_eps``, ``unbiased``) go to the estimator,
    and an option it does not take is an error.
    """
    table = {c.name: c for c in components("advantage")}  # the one list, yours included
    ok = sorted(n for n, c in table.items() if c.form in ("group", "batch"))
    if not isinstance(estimator, str) or estimator not in ok:
        if isinstance(estimator, str) and estimator in table:
            raise ValueError(f"estimator: {estimator!r} is not a group estimator (its form is "
                             f"{table[estimator].form!r}); expected one of {ok} (registered "
                             f"advantages of form 'group' or 'batch')")
        raise ValueError(f"estimator: expected one of {ok} (registered advantages of form "
                         f"'group' or 'batch'), got {estimator!r}")
    fn = resolve("advantage", estimator, what="estimator")
    check_options(fn, options, f"estimator {estimator!r}", skip=2)  # fn(rewards, G, **options)
    if mask is not None and "mask" in parameters(fn):
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
    check_mask(mask, "mask")
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
    token t's weight keeps the estimator unbiased. Zero on padding, where ``token_rewards``
    may hold anything (NaN included); the mask is 0/1 (bool, integer or float) and not all
    zero. Factor of J(θ): reward.
    """
    check_tensor(token_rewards, "token_rewards", floating=True)
    if token_rewards.dim() < 1:
        raise ValueError("token_rewards: expected shape (*B, T), got a scalar")
    check_shape(mask, "mask", tuple(token_rewards.shape))
    check_same_device(token_rewards=token_rewards, mask=mask)
    check_mask(mask, "mask")
    check_finite_where(token_rewards, mask, "token_rewards")
    m = mask.to(torch.bool)
    r = torch.where(m, token_rewards, torch.zeros_like(token_rewards))
    g = torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])
    return torch.where(m, g, torch.zeros_like(g))


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
    "group_mean_batch_std_seq_advantage",
    "grpo_advantage",
    "grpo_mean_advantage",
    "plain_advantage",
    "reinforce_pp_baseline_advantage",
    "reward_to_go",
    "rloo_advantage",
    "zero_variance_groups",
]


# =============================================================================================
# The reward side after GRPO (chapter 13): ReMax, REINFORCE++, OPO, GPG and pass@k advantages
# =============================================================================================
def _check_rows(x: Tensor, name: str, rewards: Tensor) -> Tensor:
    """``x`` (N, T) with one row per reward, on the rewards' device."""
    check_tensor(x, name, ndim=2)
    if x.shape[0] != rewards.shape[0]:
        raise ValueError(f"{name}: expected {rewards.shape[0]} rows (one per reward), got shape "
                         f"{tuple(x.shape)}")
    check_same_device(rewards=rewards, **{name: x})
    return x


def _binary(rewards: Tensor, what: str) -> None:
    if not _is_meta(rewards) and bool(((rewards != 0) & (rewards != 1)).any()):
        raise ValueError(f"rewards: {what} needs 0/1 rewards (a verifier's pass/fail), got values "
                         f"other than 0 and 1")


def _check_k(k, group_size: int, at_most: int | None = None) -> int:
    k = check_positive_int(k, "k")
    top = group_size if at_most is None else at_most
    if k > top:
        raise ValueError(f"k: expected 1 ≤ k ≤ {top} (k of the group's G = {group_size} responses),"
                         f" got {k}")
    return k


def _lengths(mask: Tensor, rewards: Tensor) -> Tensor:
    """Response lengths L_i = Σ_t m_{i,t} (N,) in the rewards' working dtype."""
    _check_rows(mask, "mask", rewards)
    check_mask(mask, "mask", allow_all_zero=True)
    return mask.to(torch.bool).sum(-1).to(work_dtype(rewards.dtype))


def _check_counts(x: Tensor, name: str) -> Tensor:
    """``x`` a non-empty real tensor (integer or floating) of counts: a bool or complex
    tensor is refused (its values are checked to be whole numbers by the caller)."""
    check_tensor(x, name, nonempty=True)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name}: expected a real tensor of counts (integer or floating "
                         f"dtype), got dtype {x.dtype}")
    return x


def _fractional(x: Tensor) -> Tensor:
    """A 0-d bool tensor: whether ``x`` holds an entry that is not a whole number."""
    return (x != x.round()).any() if x.is_floating_point() else torch.zeros((), dtype=torch.bool,
                                                                            device=x.device)


def _not_whole(x: Tensor, name: str, what: str) -> ValueError:
    """The error for a count ``x`` holding an entry that is not a whole number."""
    bad = x[x != x.round()]
    return ValueError(f"{name}: expected whole numbers ({what}), got {bad.numel()} other "
                      f"value(s) (e.g. {bad.flatten()[0].item():g})")


def comb_ratio(a: Tensor, b: Tensor, k: int) -> Tensor:
    """C(a, k) / C(b, k) for integer-valued tensors a ≤ b (b ≥ k), elementwise; 0 where a < k.

    Computed as Π_{j<k} (a − j)/(b − j) (no factorials, exact for the small counts of a
    group). Shapes broadcast; dtype of ``a`` (floating); non-empty. ``a`` and ``b`` are counts:
    they must hold whole numbers (``b`` of an integer dtype, or floats)."""
    check_tensor(a, "a", floating=True)
    _check_counts(a, "a")
    _check_counts(b, "b")
    check_same_device(a=a, b=b)
    k = check_nonnegative_int(k, "k")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"a and b: expected shapes that broadcast together, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}") from None
    check_finite(a, "a")
    check_finite(b, "b")
    if not _no_values(a) and not _no_values(b):
        above, below, frac, frac_a = torch.stack([(a > b).any(), (b < k).any(), _fractional(b),
                                                  _fractional(a)]).tolist()  # one read-back
        if above:
            raise ValueError("a: expected a ≤ b (C(a, k)/C(b, k) with a subset count a), got "
                             "an entry above b")
        if below:
            raise ValueError(f"b: expected b ≥ k = {k} (C(b, k) > 0), got min "
                             f"{float(b.min()):g}")
        if frac:
            raise _not_whole(b, "b", "a count")
        if frac_a:
            raise _not_whole(a, "a", "a count")
    j = torch.arange(k, device=a.device, dtype=a.dtype)
    num = (a.unsqueeze(-1) - j).clamp_min(0)
    return (num / (b.unsqueeze(-1) - j).to(a.dtype)).prod(-1)


def pass_at_k_estimate(n: Tensor, c: Tensor, k: int) -> Tensor:
    """ρ(n, c, k) = 1 − C(n − c, k)/C(n, k): the unbiased estimate of pass@k from n samples of
    which c are correct (Chen et al. 2021, the Codex paper), elementwise; needs n ≥ k.

    ``n`` (floating) and ``c`` (integer or floating, 0 ≤ c ≤ n) of one shape, non-empty,
    both whole numbers (counts)."""
    check_tensor(n, "n", floating=True, nonempty=True)
    _check_counts(c, "c")
    check_same_device(n=n, c=c)
    check_same_shape(n, c, "n", "c")
    k = check_nonnegative_int(k, "k")
    check_finite(n, "n")
    check_finite(c, "c")
    if not _no_values(n) and not _no_values(c):
        outside, below, frac, frac_c = torch.stack([((c < 0) | (c > n)).any(), (n < k).any(),
                                                    _fractional(n), _fractional(c)]).tolist()
        if outside:
            raise ValueError("c: expected 0 ≤ c ≤ n correct samples, got an entry outside")
        if below:
            raise ValueError(f"n: expected n ≥ k = {k} samples, got min {float(n.min()):g}")
        if frac:
            raise _not_whole(n, "n", "a count of samples")
        if frac_c:
            raise _not_whole(c, "c", "a count of correct samples")
    with values_checked():      # n − c ≤ n, n ≥ k and n whole: checked above
        return 1 - comb_ratio(n - c, n, k)


@register("advantage", "remax", side="reward", form="group",
          summary="Â = R − R(greedy response to the same prompt)",
          reference="Li et al. 2023 (ReMax, arXiv:2310.10505)")
def remax_advantage(rewards: Tensor, group_size: int, *, reward_baselines: Tensor,
                    std_eps: float = 1e-6) -> Tensor:
    """ReMax: Â_i = R_i − R(x_i, ȳ_i), shape (N,), with ȳ_i the greedy response to prompt x_i.

    ``reward_baselines`` holds R(x, ȳ): (N,) one per response, or (N/G,) one per group
    (repeated over its G responses). The greedy response is decoded once per prompt, before
    the update, so its reward does not depend on the sampled y_i: the estimator is unbiased
    for ∇J (chapter 03's rule), and a response that *is* the greedy one gets Â = 0 (much like
    a zero-variance group). Equals verl's ``compute_remax_outcome_advantage`` for an outcome
    reward on every response token (its returns are R_i there; with holes in the mask verl
    also leaves R_i on the masked positions inside the response, which never enter the loss,
    where :func:`broadcast_to_tokens` writes 0). ``std_eps`` is accepted and unused.
    Factor of J(θ): reward.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    r = _grouped(rewards, group_size)
    check_tensor(reward_baselines, "reward_baselines", ndim=1, floating=True)
    check_same_device(rewards=rewards, reward_baselines=reward_baselines)
    n_groups = r.shape[0]
    if reward_baselines.shape[0] == n_groups * group_size:
        b = reward_baselines.to(r.dtype).view(n_groups, group_size)
    elif reward_baselines.shape[0] == n_groups:
        b = reward_baselines.to(r.dtype)[:, None].expand_as(r)
    else:
        raise ValueError(f"reward_baselines: expected shape ({n_groups * group_size},) (one per "
                         f"response) or ({n_groups},) (one per group), got "
                         f"{tuple(reward_baselines.shape)}")
    check_finite(reward_baselines, "reward_baselines")
    return (r - b).reshape(-1).to(rewards.dtype)


def _returns(r: Tensor, m: Tensor, gamma: float) -> Tensor:
    """verl's token returns G_t = r_t + γ m_{t+1} G_{t+1} without a loop over tokens: the
    running return restarts at every masked position, so G_t sums γ^{t'−t} r_{t'} over the
    t' ≥ t with no masked position in (t, t']. r, m: (N, T) float."""
    T = r.shape[-1]
    idx = torch.arange(T, device=r.device)
    if gamma == 1.0:                                        # O(NT): reversed cumulative sums
        tail = torch.cat([torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1]),
                          torch.zeros_like(r[:, :1])], -1)                 # Σ_{t'≥t} r_t'
        masked_at = torch.where(m == 0, idx.expand(m.shape), torch.full_like(idx, T))
        first_masked = torch.flip(torch.cummin(torch.flip(masked_at, [-1]), -1).values, [-1])
        after = torch.cat([first_masked[:, 1:], torch.full_like(first_masked[:, :1], T)], -1)
        return tail[:, :T] - tail.gather(-1, after)         # stop at the next masked position
    seg = torch.cumsum(1 - m, -1)                           # masked positions so far
    d = (idx[None, :] - idx[:, None]).to(r.dtype)           # t' − t
    disc = torch.where(d >= 0, gamma ** d.clamp_min(0), torch.zeros_like(d))   # (T, T)
    reach = (seg[:, :, None] == seg[:, None, :]).to(r.dtype)                  # (N, T, T)
    return torch.einsum("tu,ntu,nu->nt", disc, reach, r)


@register("advantage", "reinforce_plus_plus", side="reward", form="batch",
          summary="token returns (KL in the reward), whitened over the batch's tokens",
          reference="Hu 2025 (REINFORCE++, arXiv:2501.03262)")
def reinforce_plus_plus_advantage(rewards: Tensor, group_size: int, *, mask: Tensor,
                                  token_rewards: Tensor | None = None, gamma: float = 1.0,
                                  var_eps: float = 1e-8) -> Tensor:
    """REINFORCE++: token-level returns, whitened over every response token of the batch,
    shape (N, T) (zero where the mask is zero).

        r_{i,t} = R_i·[t = last token of i] + token_rewards_{i,t}     (e.g. −β·k1_{i,t})
        G_{i,t} = r_{i,t} + γ m_{i,t+1} G_{i,t+1}
        Â_{i,t} = m_{i,t} (G_{i,t} − mean) / √(var + var_eps)

    mean and var (Bessel-corrected, over tokens) run over all masked tokens of the batch: one
    baseline and one scale for every prompt, no critic and no group. With the KL to the
    reference as per-token rewards (``token_rewards = −β (log π_old − log π_ref)``, verl's
    ``apply_kl_penalty``) each token is charged only the KL of the tokens from t on.
    ``rewards`` (N,), ``mask`` (N, T) 0/1; ``group_size`` only validates N (the estimator
    ignores groups). Equals verl's ``compute_reinforce_plus_plus_outcome_advantage`` on
    ``token_level_rewards = R at the last token + token_rewards``, up to verl's 1e-8 in the
    mean's denominator (a relative 1e-8/Σm). Through :func:`pgbook.methods.method_loss` or
    ``grpo_train`` (which put the KL in the *sequence* reward) the summed KL sits on the last
    token, so every token is charged the whole response's KL: the past-token part has zero
    mean given the prefix, so the expected update is the same and only the variance differs.
    Needs at least 2 masked tokens. Factor of J(θ): reward.
    """
    r = _grouped(rewards, group_size).reshape(-1)
    L = _lengths(mask, rewards)
    gamma = check_positive(gamma, "gamma", allow_zero=True)
    if gamma > 1:
        raise ValueError(f"gamma: expected a discount in [0, 1], got {gamma}")
    var_eps = check_positive(var_eps, "var_eps", allow_zero=True)
    m = mask.to(torch.bool).to(r.dtype)
    if not _is_meta(mask):
        if int(m.sum()) < 2:
            raise ValueError(f"mask: whitening needs at least 2 response tokens, got {int(m.sum())}")
        if bool((L == 0).any()):
            raise ValueError("mask: every response needs at least one token (its reward sits on "
                             "its last token); got an empty row")
    T = mask.shape[1]
    # the last *masked* position of each row carries R (for a contiguous mask, position L − 1)
    pos = torch.arange(T, device=mask.device)
    last = torch.where(m > 0, pos.expand_as(m), torch.full_like(m, -1, dtype=torch.long)).amax(-1)
    tok = torch.zeros_like(m).scatter(-1, last.clamp_min(0)[:, None], r[:, None])
    if token_rewards is not None:
        check_tensor(token_rewards, "token_rewards", floating=True)
        check_shape(token_rewards, "token_rewards", tuple(mask.shape))
        check_same_device(rewards=rewards, token_rewards=token_rewards)
        check_finite(token_rewards, "token_rewards")
        tok = tok + token_rewards.to(r.dtype) * m
    ret = _returns(tok, m, gamma)
    n = m.sum()
    mean = (ret * m).sum() / n
    var = (((ret - mean) * m) ** 2).sum() / (n - 1)
    return ((ret - mean) * torch.rsqrt(var + var_eps) * m).to(rewards.dtype)


@register("advantage", "opo", side="reward", form="group",
          summary="Â = R − Σ_j L_j R_j / Σ_j L_j (length-weighted group baseline)",
          reference="Hao et al. 2025 (OPO, arXiv:2505.23585)")
def opo_advantage(rewards: Tensor, group_size: int, *, mask: Tensor,
                  std_eps: float = 1e-6) -> Tensor:
    """OPO's baseline: Â_i = R_i − b_G, b_G = Σ_j L_j R_j / Σ_j L_j over the group, (N,).

    L_j = Σ_t m_{j,t} is response j's length (``mask`` (N, T)). It is chapter 03's
    variance-optimal baseline b* = E[R ‖∇log p‖²]/E[‖∇log p‖²] under OPO's approximation
    ‖∇log p_θ(y)‖² ∝ |y| (each token adds a roughly independent score), estimated from the
    group (which includes y_i itself, like GRPO's mean). Groups of one response get b = 0
    and groups whose rewards are all equal get Â = 0 exactly. Equals verl's
    ``compute_opo_outcome_advantage``. ``std_eps`` is accepted and unused. A group whose
    responses have no tokens at all raises ValueError. Factor of J(θ): reward.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    r = _grouped(rewards, group_size)
    L = _lengths(mask, rewards).view_as(r)
    tot = L.sum(1, keepdim=True)
    if not _is_meta(mask) and bool((tot == 0).any()):
        raise ValueError("mask: a group has no response tokens at all, so its length-weighted "
                         "baseline is 0/0")
    b = (L * r).sum(1, keepdim=True) / tot
    if group_size == 1:
        b = torch.zeros_like(b)
    zero = (r == r[:, :1]).all(dim=1, keepdim=True) & (group_size > 1)
    adv = torch.where(zero, torch.zeros_like(r), r - b)
    return adv.reshape(-1).to(rewards.dtype)


GPG_ALPHA = ("nonzero_rewards", "valid_groups")


@register("advantage", "gpg", side="reward", form="batch",
          summary="Â = α (R − mean_G), α = B / #(responses that can carry signal)",
          reference="Chu et al. 2025 (GPG, arXiv:2504.02546)")
def gpg_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6,
                  alpha: str = "nonzero_rewards", f_norm: float = 1.0) -> Tensor:
    """GPG: Â_i = α (R_i − μ_G) / F_norm, shape (N,), with one α for the whole batch.

    Zero-variance groups contribute nothing to a batch's mean gradient, so the gradient of
    the informative ones is diluted by the fraction of useless responses; α undoes it:

    * ``alpha="nonzero_rewards"`` (default): α = B / max(#{i: R_i ≠ 0}, 1), as verl's
      ``compute_gpg_outcome_advantage`` computes it (this function equals it, up to verl's
      α being a float32 number, B divided by an integer count: a relative 1e-8);
    * ``alpha="valid_groups"``: α = #groups / #(groups whose rewards are not all equal)
      (α = 1 when there is none), as the authors' trainer computes ``inverse_alpha``
      (it also resamples until enough groups are valid, which is not reproduced here).

    The two differ: for 0/1 rewards verl's α counts *correct* responses, so it is large when
    the batch is mostly wrong, even if every group carries signal. Groups of one response
    get μ = 0 (verl's convention). ``f_norm`` is verl's constant divisor. ``std_eps`` is
    accepted and unused. Factor of J(θ): reward (a batch-dependent scale of the weights).
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    f_norm = check_positive(f_norm, "f_norm")
    if alpha not in GPG_ALPHA:
        raise ValueError(f"alpha: expected one of {GPG_ALPHA}, got {alpha!r}")
    r = _grouped(rewards, group_size)
    c, zero = _centred(r)
    if group_size == 1:
        c = r
    if alpha == "nonzero_rewards":
        a = r.numel() / (r != 0).sum().clamp_min(1).to(r.dtype)
    else:
        valid = (~zero).sum().to(r.dtype)
        a = torch.where(valid > 0, r.shape[0] / valid.clamp_min(1), torch.ones_like(valid))
    return (a * c / f_norm).reshape(-1).to(rewards.dtype)


@register("advantage", "grpo_passk", side="reward", form="group",
          summary="only the group's best response: Â = (R_max − R_second)/(σ_G + ε)",
          reference="Tang et al. 2025 (arXiv:2503.19595); verl grpo_passk")
def grpo_passk_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6,
                         norm_by_std: bool = True) -> Tensor:
    """verl's ``grpo_passk``: Â_i = max(0, R_i − max_{j≠i} R_j) / (σ_G + ε), shape (N,).

    Only a group's unique best response gets a non-zero advantage, R_max − R_second (ties:
    all zero). max_{j≠i} R_j is a leave-one-out baseline that does not depend on y_i, so
    Σ_i Â_i ∇log p(y_i) (without σ_G) is an unbiased estimate of ∇E[max(R_1, …, R_G)]: the
    gradient of **pass@G** (for 0/1 rewards), for k = G only. With 0/1 rewards only groups
    with exactly one success count, and σ_G = 1/√G there, so dividing by it is a constant
    factor √G. Equals verl's ``compute_grpo_passk_outcome_advantage`` (``norm_by_std`` is its
    ``norm_adv_by_std_in_grpo``; σ_G Bessel-corrected). Needs G ≥ 2. Factor of J(θ): reward.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    check_positive_int(group_size, "group_size")
    if group_size < 2:
        raise ValueError(f"group_size: pass@k advantages need at least 2 responses per group, "
                         f"got {group_size}")
    if not isinstance(norm_by_std, bool):
        raise ValueError(f"norm_by_std: expected True or False, got {norm_by_std!r}")
    r = _grouped(rewards, group_size)
    top2 = torch.topk(r, 2, dim=1).values                       # (n, 2)
    is_max = r == top2[:, :1]
    others_max = torch.where(is_max, top2[:, 1:], top2[:, :1])  # max over j ≠ i
    adv = (r - others_max).clamp_min(0)
    if norm_by_std:                   # a zero-variance group has Â = 0: no 0/0 even with ε = 0
        sd = _std(r - r.mean(1, keepdim=True), 1) + std_eps
        adv = torch.where(sd > 0, adv / torch.where(sd > 0, sd, torch.ones_like(sd)),
                          torch.zeros_like(adv))
    return adv.reshape(-1).to(rewards.dtype)


@register("advantage", "passk_analytic", side="reward", form="group",
          summary="Chen et al.'s analytic pass@k advantages (0/1 rewards)",
          reference="Chen et al. 2025 (arXiv:2508.10751)")
def passk_analytic_advantage(rewards: Tensor, group_size: int, *, k: int,
                             std_eps: float = 1e-6) -> Tensor:
    """Pass@k training with analytic advantages (Chen et al. 2025), shape (N,), 0/1 rewards.

    Split the group's G = n responses, c of them correct, into every subset of k; a subset
    scores 1 if it holds a correct response (its pass@k). Then the mean subset score is
    R̄ = 1 − C(n−c, k)/C(n, k), σ = √(R̄(1 − R̄)), and the average z-score of the subsets that
    contain response i is

        Â_pos = (1 − R̄)/(σ + ε),    Â_neg = (1 − R̄ − C(n−c−1, k−1)/C(n−1, k−1))/(σ + ε).

    The advantages sum to zero over the group; k = 1 gives GRPO's z-score with the
    population standard deviation (÷ n). Like GRPO's, R̄ includes the response itself and σ
    reweights prompts, so the expected update is *not* a multiple of ∇pass@k (chapter 13).
    Equals the authors' ``passk_adv.calc_adv`` (RUCAIBox/Passk_Training). Needs 1 ≤ k ≤ G.
    Factor of J(θ): reward.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    r = _grouped(rewards, group_size)
    k = _check_k(k, group_size)
    _binary(r, "passk_analytic")
    n = torch.full_like(r[:, :1], float(group_size))
    c = r.sum(1, keepdim=True)
    with values_checked():      # counts of checked 0/1 rewards, n = G ≥ k
        mean = 1 - comb_ratio(n - c, n, k)
        sd = (mean * (1 - mean)).clamp_min(0).sqrt() + std_eps
        safe = torch.where(sd > 0, sd, torch.ones_like(sd))  # σ = 0: every subset scores alike
        pos = (1 - mean) / safe
        neg = (1 - mean - comb_ratio(n - c - 1, n - 1, k - 1)) / safe
    adv = torch.where(sd > 0, torch.where(r > 0, pos, neg), torch.zeros_like(r))
    return adv.reshape(-1).to(rewards.dtype)


PKPO_BASELINES = ("none", "loo")


@register("advantage", "pkpo", side="reward", form="group",
          summary="unbiased pass@k rewards: k·(1 if correct else ρ(G−1, c, k−1)) [− LOO]",
          reference="Walder & Karkhanis 2025 (PKPO, arXiv:2505.15201)")
def pkpo_advantage(rewards: Tensor, group_size: int, *, k: int, baseline: str = "loo",
                   std_eps: float = 1e-6) -> Tensor:
    """Pass@k Policy Optimization's transformed rewards, shape (N,), 0/1 rewards.

    For a group of n = G responses with c correct, Walder & Karkhanis (2025) show that
    Σ_i r_i ∇log p(y_i) with r_i = k/n for a correct response and (k/n)·ρ(n−1, c, k−1) for
    a wrong one (ρ(n, c, k) = 1 − C(n−c, k)/C(n, k)) is an unbiased estimate of ∇pass@k.
    In the group-mean convention of this module, (1/G) Σ_i Â_i ∇log p(y_i), that is

        Â_i = k · (1 if correct else ρ(n − 1, c, k − 1))       (``baseline="none"``)

    so that E[(1/G) Σ_i Â_i ∇log p(y_i)] = ∇pass@k = k (1 − p)^{k−1} ∇p per prompt. With
    ``baseline="loo"`` (default) each Â_i also has k·ρ(n − 1, c_{−i}, k) subtracted: the
    unbiased pass@k estimate of the *other* n − 1 responses, which does not depend on y_i, so
    the estimator stays unbiased with much less variance (k = 1 gives RLOO; needs G ≥ k + 1;
    the paper derives its own variance-reducing baselines, not reproduced term by term).
    Factor of J(θ): reward.
    """
    check_positive(std_eps, "std_eps", allow_zero=True)
    if baseline not in PKPO_BASELINES:
        raise ValueError(f"baseline: expected one of {PKPO_BASELINES}, got {baseline!r}")
    r = _grouped(rewards, group_size)
    loo = baseline == "loo"
    k = _check_k(k, group_size, group_size - 1 if loo else None)
    _binary(r, "pkpo")
    n = torch.full_like(r[:, :1], float(group_size))
    c = r.sum(1, keepdim=True)
    # a wrong response's group has c ≤ n − 1 correct ones (c = n: no wrong response to weigh)
    with values_checked():      # counts of checked 0/1 rewards, n = G > k (k ≤ G − 1 with loo)
        wrong = pass_at_k_estimate(n - 1, torch.minimum(c, n - 1), k - 1) if k > 1 else \
            torch.zeros_like(c)
        adv = k * torch.where(r > 0, torch.ones_like(r), wrong)
        if loo:
            left = c - r
            adv = adv - k * pass_at_k_estimate((n - 1).expand_as(left), left, k)
    return adv.reshape(-1).to(rewards.dtype)


__all__ += [
    "GPG_ALPHA",
    "PKPO_BASELINES",
    "comb_ratio",
    "gpg_advantage",
    "grpo_passk_advantage",
    "opo_advantage",
    "pass_at_k_estimate",
    "passk_analytic_advantage",
    "pkpo_advantage",
    "reinforce_plus_plus_advantage",
    "remax_advantage",
]
