"""How per-token loss terms are summed into one number: a reward-side choice.

A language-model policy loss has one term ℓ_{i,t} per response i and token t (mask
m_{i,t} = 1 on response tokens, L_i = Σ_t m_{i,t} the length of response i, B responses,
T padded positions). The gradient is Σ_{i,t} c_{i,t} ∇ℓ_{i,t} for weights c that the
aggregation chooses:

    token_mean            Σ_{i,t} m ℓ / Σ_{i,t} m           c = 1/Σ_j L_j      (DAPO)
    seq_mean_token_mean   (1/B) Σ_i (1/L_i) Σ_t m ℓ          c = 1/(B L_i)      (GRPO)
    seq_mean_token_sum    (1/B) Σ_i Σ_t m ℓ                  c = 1/B
    constant              Σ_{i,t} m ℓ / (B · L_max)         c = 1/(B L_max)    (Dr. GRPO)

Because ℓ_{i,t} = −Â_i r_{i,t} (…) carries the advantage, the weight c multiplies Â_i: the
aggregation changes *how much each response's reward counts*, not p_θ. With
``seq_mean_token_mean`` a token of a short response weighs more than one of a long
response (1/L_i), so a correct answer is pushed to be shorter and a wrong one, whose
negative advantage is diluted over more tokens, drifts longer (Dr. GRPO's length bias).
``token_mean`` weighs every token alike within the batch; ``constant`` weighs every token
alike with a normaliser that depends on no sample at all (its gradient is an unbiased
sum-over-tokens estimator scaled by a constant). Factor of J(θ): reward, hence
``side="reward"`` for kind ``"aggregation"``.

Sequences whose mask is all zero (padding rows) are left out of the ``seq_mean_*`` means
(B counts sequences with at least one token there); ``constant`` divides by all B rows.
A mask that is zero everywhere raises ValueError. Registered functions share the signature
``fn(per_token_loss (B, T), mask (B, T), max_tokens=None) -> scalar``; they compute in
float32 for low-precision losses and return the loss's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import (
    _is_meta,
    check_finite_where,
    check_mask,
    check_positive_int,
    check_same_device,
    check_tensor,
)
from .registry import register, resolve


def _prepare(per_token_loss: Tensor, mask: Tensor, max_tokens: int | None
             ) -> tuple[Tensor, Tensor]:
    check_tensor(per_token_loss, "per_token_loss", ndim=2, floating=True)
    if max_tokens is not None:      # ignored by all but "constant", but never a wrong value
        check_positive_int(max_tokens, "max_tokens")
    check_tensor(mask, "mask")
    check_mask(mask, "mask", tuple(per_token_loss.shape))
    check_same_device(per_token_loss=per_token_loss, mask=mask)
    check_finite_where(per_token_loss, mask, "per_token_loss")
    work = torch.promote_types(per_token_loss.dtype, torch.float32)
    m = mask if mask.dtype == torch.bool else mask.to(torch.bool)
    x = per_token_loss if per_token_loss.dtype == work else per_token_loss.to(work)
    # masked positions contribute exactly 0 even if the loss holds NaN/inf there (padding)
    return torch.where(m, x, 0.0), m.to(work)


def _seq_count(m: Tensor) -> tuple[Tensor, Tensor]:
    lengths = m.sum(-1)
    nonempty = lengths > 0
    return lengths, nonempty


@register("aggregation", "token_mean", side="reward", form="token",
          summary="Σ over all tokens / total tokens (DAPO)")
def token_mean(per_token_loss: Tensor, mask: Tensor, max_tokens: int | None = None) -> Tensor:
    """Σ_{i,t} m ℓ / Σ_{i,t} m: every token of the batch weighs the same (DAPO)."""
    loss, m = _prepare(per_token_loss, mask, max_tokens)
    return (loss.sum() / m.sum()).to(per_token_loss.dtype)


@register("aggregation", "seq_mean_token_mean", side="reward", form="token",
          summary="mean over sequences of per-sequence token means (GRPO)")
def seq_mean_token_mean(per_token_loss: Tensor, mask: Tensor, max_tokens: int | None = None) -> Tensor:
    """(1/B') Σ_i (1/L_i) Σ_t m ℓ over the B' non-empty sequences (GRPO, DeepSeekMath)."""
    loss, m = _prepare(per_token_loss, mask, max_tokens)
    lengths, nonempty = _seq_count(m)
    per_seq = loss.sum(-1) / torch.where(nonempty, lengths, torch.ones_like(lengths))
    return (per_seq.sum() / nonempty.sum()).to(per_token_loss.dtype)


@register("aggregation", "seq_mean_token_sum", side="reward", form="token",
          summary="mean over sequences of per-sequence token sums")
def seq_mean_token_sum(per_token_loss: Tensor, mask: Tensor, max_tokens: int | None = None) -> Tensor:
    """(1/B') Σ_i Σ_t m ℓ over the B' non-empty sequences: the REINFORCE sum over tokens."""
    loss, m = _prepare(per_token_loss, mask, max_tokens)
    _, nonempty = _seq_count(m)
    return (loss.sum() / nonempty.sum()).to(per_token_loss.dtype)


@register("aggregation", "constant", side="reward", form="token",
          summary="Σ over all tokens / (B · max_tokens) (Dr. GRPO)")
def constant(per_token_loss: Tensor, mask: Tensor, max_tokens: int | None = None) -> Tensor:
    """Σ_{i,t} m ℓ / (B · L_max) with L_max = ``max_tokens`` (default T, the padded length):
    a normaliser that depends on no sample (Dr. GRPO). ``max_tokens`` must be at least the
    longest response in the batch."""
    loss, m = _prepare(per_token_loss, mask, max_tokens)
    B, T = per_token_loss.shape
    L = T if max_tokens is None else check_positive_int(max_tokens, "max_tokens")
    if max_tokens is not None and not _is_meta(m):
        longest = int(m.sum(-1).max())
        if longest > L:
            raise ValueError(f"max_tokens: expected at least the longest response ({longest} "
                             f"tokens), got {L}")
    return (loss.sum() / (B * L)).to(per_token_loss.dtype)


def aggregate(per_token_loss: Tensor, mask: Tensor, mode: str,
              max_tokens: int | None = None) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar with a named aggregation (see the module
    docstring for the formulas and why each one changes the gradient's weights).

    ``mode``: a registered aggregation: ``"token_mean"``, ``"seq_mean_token_mean"``,
    ``"seq_mean_token_sum"``, ``"constant"`` or yours (:mod:`pgbook.registry`, form
    ``"token"``); ``max_tokens`` is L_max for ``"constant"`` (ignored by the others).
    """
    fn = resolve("aggregation", mode, "token", what="mode")
    if max_tokens is not None:
        check_positive_int(max_tokens, "max_tokens")
    return fn(per_token_loss, mask, max_tokens)


def token_weights(mask: Tensor, mode: str, max_tokens: int | None = None,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """The weight c_{i,t} each token's loss gets under ``mode``, (B, T) in ``dtype`` on the
    mask's device: the gradient of :func:`aggregate` with respect to the per-token loss
    (zeros where the mask is 0)."""
    check_tensor(mask, "mask", ndim=2)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    x = torch.zeros(mask.shape, dtype=dtype, device=mask.device, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(aggregate(x, mask, mode, max_tokens), x)
    return g


__all__ = [
    "aggregate",
    "constant",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "token_mean",
    "token_weights",
]
