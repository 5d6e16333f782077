"""Reward shaping after the rollout, and token-level credit (chapter 13).

Two kinds of registered pieces, both applied between the verifier and the loss:

**Overlong responses** (kind ``"shaping"``, form ``"rollout"``). A response cut at the
generation budget L_max has no final answer, so a verifier scores it as wrong, even when
its reasoning was on track: the reward gets noisier and longer answers are discouraged.
DAPO (Yu et al. 2025, arXiv:2503.14476) lists three treatments:

    overlong_punish   R_i ← R_punish (0: "wrong") for a truncated response     reward side
    overlong_mask     truncated responses leave the loss (their mask rows → 0)  trajectory side
    overlong_soft     R_i ← R_i + P(L_i), DAPO's soft overlong penalty:          reward side

        P(L) = 0                              if L ≤ L_max − L_cache
             = ((L_max − L_cache) − L)/L_cache if L_max − L_cache < L ≤ L_max
             = −1                             if L > L_max

Masking changes which samples enter the estimator (the trajectory side of the map), the
other two change the reward. The masked responses still count in the group's baseline (as
TRL's ``mask_truncated_completions`` does). Signature: ``fn(rewards (B,), mask (B, T), *,
truncated (B,) bool, max_tokens: int, **options) -> (rewards (B,), mask (B, T))``.

**Token-level credit** (kind ``"token_credit"``, form ``"entropy"``): a stop-gradient weight
per token that multiplies the broadcast advantage Â_i, from the sampling policy's entropy
H_{i,t} at that position (a reward-side change: it reweights ∇log π(y_t|h_t), it does not
change p_θ):

    top_entropy        Â_{i,t}·1[H_{i,t} ≥ q_{1−ρ}]   only the batch's top-ρ entropy tokens
                       ("forking tokens", Wang et al. 2025, arXiv:2506.01939; ρ = 0.2)
    low_entropy        Â_{i,t}·1[H_{i,t} < q_{1−ρ}]   the complement (the paper's ablation)
    entropy_weighted   Â_{i,t}·w_{i,t}, w = n_t H_{i,t} / Σ_k H_{k,t}   (GTPO-style)

Signature: ``fn(advantages_tok (B, T), entropy (B, T), mask (B, T), *, group_size: int,
**options) -> (B, T)``. Everything runs on the device and dtype of the inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_mask,
    check_number,
    check_positive,
    check_positive_int,
    check_same_device,
    check_shape,
    check_tensor,
    work_dtype,
)
from ..registry import register

__all__ = [
    "entropy_weighted_advantages",
    "high_entropy_mask",
    "low_entropy_advantages",
    "overlong_mask",
    "overlong_punish",
    "overlong_soft",
    "response_lengths",
    "soft_overlong_penalty",
    "top_entropy_advantages",
    "truncated_responses",
]


# -- overlong responses -----------------------------------------------------------------------
def soft_overlong_penalty(lengths: Tensor, max_tokens: int, cache: int) -> Tensor:
    """DAPO's soft overlong penalty P(L) (eq. 13 of Yu et al. 2025), elementwise:

        P(L) = 0 for L ≤ L_max − L_cache;  ((L_max − L_cache) − L)/L_cache in the buffer
               L_max − L_cache < L ≤ L_max;  −1 for L > L_max.

    ``lengths`` (any shape, integer or floating) → penalties of the same shape, floating
    (the lengths' dtype, float32 for integer lengths). ``max_tokens`` = L_max ≥ 1 and
    ``cache`` = L_cache with 0 ≤ L_cache ≤ L_max (0: no buffer, only −1 beyond L_max).
    Equals TRL's ``get_soft_overlong_punishment(max_completion_len, soft_punish_cache)``.
    Factor of J(θ): reward.
    """
    check_tensor(lengths, "lengths")
    if lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"lengths: expected integer or floating lengths, got dtype "
                         f"{lengths.dtype}")
    L_max = check_positive_int(max_tokens, "max_tokens")
    if isinstance(cache, bool) or not isinstance(cache, int) or not 0 <= cache <= L_max:
        raise ValueError(f"cache: expected an integer in [0, max_tokens = {L_max}], got {cache!r}")
    x = lengths if lengths.is_floating_point() else lengths.to(torch.float32)
    check_finite(x, "lengths")
    if not _is_meta(x) and bool((x < 0).any()):
        raise ValueError("lengths: expected non-negative lengths, got a negative one")
    start = L_max - cache
    ramp = (start - x) / cache if cache > 0 else torch.zeros_like(x)
    return torch.where(x <= start, torch.zeros_like(x),
                       torch.where(x <= L_max, ramp, -torch.ones_like(x)))


def response_lengths(mask: Tensor) -> Tensor:
    """L_i = Σ_t m_{i,t}, (B,) long, from a 0/1 (or bool) response mask (B, T)."""
    check_tensor(mask, "mask", ndim=2)
    check_mask(mask, "mask", allow_all_zero=True)
    return mask.to(torch.bool).sum(-1)


def truncated_responses(tokens: Tensor, mask: Tensor, eos_id: int) -> Tensor:
    """Which responses were cut by the budget: no EOS among their masked tokens, (B,) bool.

    ``tokens`` and ``mask`` (B, T) (the response part, or prompt + response with the mask 0
    on the prompt); ``eos_id`` the end-of-sequence id."""
    check_tensor(tokens, "tokens", ndim=2)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens: expected integer token ids, got dtype {tokens.dtype}")
    check_shape(mask, "mask", tuple(tokens.shape))
    check_same_device(tokens=tokens, mask=mask)
    check_mask(mask, "mask", allow_all_zero=True)
    if isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0:
        raise ValueError(f"eos_id: expected a non-negative integer token id, got {eos_id!r}")
    return ~((tokens == eos_id) & mask.to(torch.bool)).any(-1)


def _check_rollout(rewards: Tensor, mask: Tensor, truncated: Tensor, max_tokens: int):
    check_tensor(rewards, "rewards", ndim=1, floating=True)
    check_tensor(mask, "mask", ndim=2)
    if mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask: expected {rewards.shape[0]} rows (one per reward), got shape "
                         f"{tuple(mask.shape)}")
    check_tensor(truncated, "truncated", ndim=1)
    if truncated.dtype != torch.bool:
        raise ValueError(f"truncated: expected a bool tensor, got dtype {truncated.dtype}")
    if truncated.shape != rewards.shape:
        raise ValueError(f"truncated: expected shape {tuple(rewards.shape)}, got "
                         f"{tuple(truncated.shape)}")
    check_same_device(rewards=rewards, mask=mask, truncated=truncated)
    check_mask(mask, "mask", allow_all_zero=True)
    check_finite(rewards, "rewards")
    return check_positive_int(max_tokens, "max_tokens")


@register("shaping", "overlong_punish", side="reward", form="rollout",
          summary="a truncated response scores as wrong (R ← 0)")
def overlong_punish(rewards: Tensor, mask: Tensor, *, truncated: Tensor, max_tokens: int,
                    value: float = 0.0) -> tuple[Tensor, Tensor]:
    """R_i ← ``value`` (default 0, the reward of a wrong answer) for every truncated
    response; the mask is returned unchanged. Shapes: rewards (B,), mask (B, T),
    truncated (B,) bool. Factor of J(θ): reward."""
    _check_rollout(rewards, mask, truncated, max_tokens)
    v = check_number(value, "value")
    return torch.where(truncated, torch.full_like(rewards, v), rewards), mask


@register("shaping", "overlong_mask", side="trajectory", form="rollout",
          summary="truncated responses leave the loss (overlong filtering)")
def overlong_mask(rewards: Tensor, mask: Tensor, *, truncated: Tensor,
                  max_tokens: int) -> tuple[Tensor, Tensor]:
    """Overlong filtering: the mask rows of truncated responses are set to 0, so they do not
    enter the loss; their rewards are kept and still count in their group's baseline (TRL's
    ``mask_truncated_completions``). Shapes as :func:`overlong_punish`. Factor of J(θ):
    trajectory (it changes which samples enter the estimator). If every response is
    truncated the returned mask is all zero and the loss has no token: the trainer skips
    nothing for you, so check :func:`pgbook._validate.check_mask` before aggregating."""
    _check_rollout(rewards, mask, truncated, max_tokens)
    keep = (~truncated).to(mask.dtype)[:, None]
    return rewards, mask * keep if mask.dtype != torch.bool else mask & (~truncated)[:, None]


@register("shaping", "overlong_soft", side="reward", form="rollout",
          summary="R + DAPO's soft overlong penalty in the last L_cache tokens")
def overlong_soft(rewards: Tensor, mask: Tensor, *, truncated: Tensor, max_tokens: int,
                  cache: int | None = None) -> tuple[Tensor, Tensor]:
    """R_i ← R_i + P(L_i) with :func:`soft_overlong_penalty` (L_i = Σ_t m_{i,t}, L_max =
    ``max_tokens``, L_cache = ``cache``, default ⌊L_max/4⌋ like DAPO's 4096 of 16384 + 4096).
    A truncated response has L = L_max and gets −1 on top of its (usually zero) reward.
    ``truncated`` is validated and otherwise unused: the penalty reads only the length.
    Factor of J(θ): reward."""
    L_max = _check_rollout(rewards, mask, truncated, max_tokens)
    c = L_max // 4 if cache is None else cache
    pen = soft_overlong_penalty(response_lengths(mask), L_max, c)
    return rewards + pen.to(rewards.dtype), mask


# -- token-level credit from the entropy ------------------------------------------------------
def _check_credit(adv: Tensor, entropy: Tensor, mask: Tensor, group_size: int) -> Tensor:
    check_tensor(adv, "advantages_tok", ndim=2, floating=True)
    G = check_positive_int(group_size, "group_size")
    if adv.shape[0] % G:
        raise ValueError(f"group_size: expected a divisor of the number of responses B = "
                         f"{adv.shape[0]}, got {G}")
    check_tensor(entropy, "entropy", floating=True)
    check_shape(entropy, "entropy", tuple(adv.shape))
    check_mask(mask, "mask", tuple(adv.shape))
    check_same_device(advantages_tok=adv, entropy=entropy, mask=mask)
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=entropy.dtype, device=entropy.device)
    h = torch.where(m, entropy, zero)           # padding may hold anything, NaN included
    check_finite(h, "entropy")
    if not _is_meta(h) and bool((h < 0).any()):
        raise ValueError("entropy: expected non-negative entropies, got a negative one")
    check_finite(torch.where(m, adv, torch.zeros((), dtype=adv.dtype, device=adv.device)),
                 "advantages_tok")
    return m


def high_entropy_mask(entropy: Tensor, mask: Tensor, top_fraction: float = 0.2) -> Tensor:
    """1[H_{i,t} ≥ q] on response tokens, (B, T) bool, q the (1 − ``top_fraction``)-quantile
    (linear interpolation, :func:`torch.quantile`) of the entropies of all masked tokens of
    the batch: the "forking tokens" of Wang et al. (2025). ``top_fraction`` ∈ (0, 1].
    Equals TRL's ``GRPOTrainer.get_high_entropy_mask(entropies, mask, 1 − top_fraction)`` on
    one process (``top_entropy_quantile = top_fraction``)."""
    check_tensor(entropy, "entropy", ndim=2, floating=True)
    check_mask(mask, "mask", tuple(entropy.shape))
    check_same_device(entropy=entropy, mask=mask)
    rho = check_positive(top_fraction, "top_fraction")
    if rho > 1:
        raise ValueError(f"top_fraction: expected a fraction in (0, 1], got {rho}")
    m = mask.to(torch.bool)
    if _is_meta(entropy):
        return m.clone()
    vals = entropy[m].to(work_dtype(entropy.dtype))
    check_finite(vals, "entropy")
    if bool((vals < 0).any()):
        raise ValueError("entropy: expected non-negative entropies, got a negative one")
    q = torch.quantile(vals, 1.0 - rho)
    return (entropy.to(vals.dtype) >= q) & m


@register("token_credit", "top_entropy", side="reward", form="entropy",
          summary="only the batch's top-ρ entropy tokens keep their advantage (80/20)")
def top_entropy_advantages(advantages_tok: Tensor, entropy: Tensor, mask: Tensor, *,
                           group_size: int, top_fraction: float = 0.2) -> Tensor:
    """Â_{i,t} · 1[H_{i,t} ≥ q_{1−ρ}]: the policy gradient flows only through the top-ρ
    (default 20 %) entropy tokens of the batch (Wang et al. 2025, "Beyond the 80/20 rule",
    arXiv:2506.01939; TRL's ``top_entropy_quantile``). Shapes (B, T); ``group_size`` (a
    divisor of B) is accepted for the common signature. Factor of J(θ): reward (a 0/1 weight per token)."""
    _check_credit(advantages_tok, entropy, mask, group_size)
    keep = high_entropy_mask(entropy, mask, top_fraction)
    return torch.where(keep, advantages_tok, torch.zeros_like(advantages_tok))


@register("token_credit", "low_entropy", side="reward", form="entropy",
          summary="only the tokens below the top-ρ entropy threshold (the 80/20 ablation)")
def low_entropy_advantages(advantages_tok: Tensor, entropy: Tensor, mask: Tensor, *,
                           group_size: int, top_fraction: float = 0.2) -> Tensor:
    """Â_{i,t} · 1[H_{i,t} < q_{1−ρ}] on response tokens: the complement of
    :func:`top_entropy_advantages` (the ablation of Wang et al. 2025 that trains on the
    low-entropy 80 %). Shapes (B, T). Factor of J(θ): reward."""
    m = _check_credit(advantages_tok, entropy, mask, group_size)
    keep = m & ~high_entropy_mask(entropy, mask, top_fraction)
    return torch.where(keep, advantages_tok, torch.zeros_like(advantages_tok))


@register("token_credit", "entropy_weighted", side="reward", form="entropy",
          summary="Â_i · n_t H_{i,t}/Σ_k H_{k,t} within the group (GTPO-style)")
def entropy_weighted_advantages(advantages_tok: Tensor, entropy: Tensor, mask: Tensor, *,
                                group_size: int, strength: float = 1.0) -> Tensor:
    """Entropy-weighted token advantages, GTPO-style: Â_{i,t} · w_{i,t}, (B, T), with

        w_{i,t} = (1 − s) + s · n_t H_{i,t} / Σ_{k ∈ group(i), m_{k,t} = 1} H_{k,t}

    where n_t counts the group's responses that are still running at position t (so the
    weights average to 1 over them) and s = ``strength`` ∈ [0, 1]; w = 1 where the group's
    entropies at t are all zero. High-entropy tokens of a response get more of its
    advantage, confident ones less. GTPO (Tan et al. 2025, arXiv:2508.04349) redistributes
    rewards with the same ratio H_{i,t}/Σ_k H_{k,t}; its exact token rewards (which treat
    correct and wrong responses differently and mix in the outcome reward with their own
    coefficients) are not reproduced: here one ratio multiplies every response's advantage.
    Responses in contiguous groups of ``group_size``. Factor of J(θ): reward.
    """
    m = _check_credit(advantages_tok, entropy, mask, group_size)
    G = group_size
    s = check_positive(strength, "strength", allow_zero=True)
    if s > 1:
        raise ValueError(f"strength: expected a number in [0, 1], got {s}")
    B, T = advantages_tok.shape
    work = work_dtype(entropy.dtype)
    h = torch.where(m, entropy.to(work), torch.zeros((), dtype=work, device=entropy.device))
    hg = h.view(B // G, G, T)
    mg = m.view(B // G, G, T).to(work)
    tot = hg.sum(1, keepdim=True)
    n_t = mg.sum(1, keepdim=True)
    ratio = torch.where(tot > 0, n_t * hg / torch.where(tot > 0, tot, torch.ones_like(tot)),
                        torch.ones_like(hg))
    w = ((1 - s) + s * ratio).view(B, T)
    out = advantages_tok.to(work) * w
    return torch.where(m, out, torch.zeros_like(out)).to(advantages_tok.dtype)
