"""The boundary of the frame: DPO, a method that does not estimate ∇J(θ) (chapter 17).

Every method on the map estimates the gradient of J(θ) = E_{τ~p_θ}[R(τ)] (or of J minus a
KL) as Σ_i ∇log p_θ(τ_i) · sg(w_i): samples from p_θ (the trajectory factor) weighted by
a stop-gradient number built from a reward (the reward factor). Direct Preference
Optimisation (Rafailov et al. 2023, arXiv:2305.18290) leaves both factors:

* **no sampling from p_θ**: its pairs (x, y_w, y_l) are a fixed dataset, drawn once from
  some other policy μ (often the reference) and labelled by a preference;
* **no reward**: the number that weighs ∇log π_θ(y_w) − ∇log π_θ(y_l) is
  σ(r̂_θ(y_l) − r̂_θ(y_w)), a function of the policy's own *implied reward*
  r̂_θ(x, y) = β log π_θ(y|x)/π_ref(y|x), not of any R.

It is derived from the same objective as RLHF, J(θ) − β KL(π_θ‖π_ref), whose maximiser
π*(y|x) ∝ π_ref(y|x) e^{R(x,y)/β} ties the reward to the policy, R = r̂_{π*} + β log Z(x):
DPO fits that implied reward to the preferences by Bradley–Terry maximum likelihood. When
π_θ can represent π* and μ covers every response, both end at π*; elsewhere they differ
(chapter 17 computes both gradients exactly on the enumerable LM).

Shapes: sequence log-probabilities (n,) (sums of token log-probs over a response, as TRL
sums them), one entry per preference pair. Runs on the device and dtype of the inputs
(bfloat16 inputs are computed in float32 and returned in bfloat16).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import (
    _no_values,
    check_pair,
    check_positive,
    check_same_device,
    check_tensor,
    to_work,
)
from .trajectory.importance import check_log_probs

__all__ = ["dpo_loss", "implied_reward"]


def _check_logprobs(x: Tensor, name: str) -> None:
    """``x`` a non-empty floating tensor of finite log-probabilities (≤ 0)."""
    check_tensor(x, name, floating=True, nonempty=True)
    check_log_probs(x, name)


def _check_no_overflow(x: Tensor, what: str, beta: float) -> None:
    """``x``, computed from finite checked inputs, must be finite: else it overflowed."""
    if not _no_values(x) and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{what} overflows {x.dtype} (β = {beta:g}): the log-probabilities "
                         f"are too far apart for this β and dtype")


def implied_reward(logp: Tensor, ref_logp: Tensor, beta: float) -> Tensor:
    """DPO's implied reward r̂_θ(x, y) = β (log π_θ(y|x) − log π_ref(y|x)), shape of ``logp``.

    ``logp``, ``ref_logp``: sequence log-probabilities (any shape, the same, non-empty), finite
    and ≤ 0; β > 0. A result that overflows the dtype raises.
    Not detached: unlike a reward on the map, it is a function of θ (differentiate it and
    you differentiate the policy). Outside the frame of J(θ): it replaces R by the policy.
    """
    check_pair(logp, ref_logp, "logp", "ref_logp")
    check_tensor(logp, "logp", floating=True)
    check_tensor(ref_logp, "ref_logp", floating=True)
    check_same_device(logp=logp, ref_logp=ref_logp)
    _check_logprobs(logp, "logp")
    _check_logprobs(ref_logp, "ref_logp")
    beta = check_positive(beta, "beta")
    out = beta * (logp - ref_logp.to(logp.dtype))
    _check_no_overflow(out, "implied_reward: β (logp − ref_logp)", beta)
    return out


def dpo_loss(chosen_logp: Tensor, rejected_logp: Tensor, ref_chosen_logp: Tensor,
             ref_rejected_logp: Tensor, *, beta: float = 0.1) -> Tensor:
    """DPO's loss per preference pair, (n,): with Δ = (log π_θ(y_w) − log π_ref(y_w)) −
    (log π_θ(y_l) − log π_ref(y_l)),

        ℓ = −log σ(β Δ),        −∇ℓ = β σ(−β Δ) [∇log π_θ(y_w|x) − ∇log π_θ(y_l|x)].

    ``chosen_logp``/``rejected_logp``: the policy's sequence log-probabilities (finite, ≤ 0,
    n ≥ 1) of the preferred (y_w) and the other (y_l) response, (n,), differentiable; the reference's
    ``ref_*`` (n,) are detached inside. Average the result for a batch loss (TRL takes the
    mean). This is TRL's ``DPOTrainer`` with ``loss_type="sigmoid"`` (its
    ``per_sequence_loss``, the log-probs summed over the completion tokens) term for term.

    Side of J(θ): neither; outside the frame. The pairs are a dataset (no ∇ through how they
    were drawn, no sampling from π_θ), and the weight σ(−βΔ) is computed from the policy
    itself, not from a reward (module docstring).
    """
    for name, x in (("chosen_logp", chosen_logp), ("rejected_logp", rejected_logp),
                    ("ref_chosen_logp", ref_chosen_logp),
                    ("ref_rejected_logp", ref_rejected_logp)):
        check_tensor(x, name, ndim=1, floating=True)
        _check_logprobs(x, name)
    check_pair(chosen_logp, rejected_logp, "chosen_logp", "rejected_logp")
    check_pair(chosen_logp, ref_chosen_logp, "chosen_logp", "ref_chosen_logp")
    check_pair(chosen_logp, ref_rejected_logp, "chosen_logp", "ref_rejected_logp")
    check_same_device(chosen_logp=chosen_logp, rejected_logp=rejected_logp,
                      ref_chosen_logp=ref_chosen_logp, ref_rejected_logp=ref_rejected_logp)
    beta = check_positive(beta, "beta")
    w, lose = to_work(chosen_logp), to_work(rejected_logp)
    delta = (w - ref_chosen_logp.detach().to(w.dtype)) - (lose - ref_rejected_logp.detach().to(
        w.dtype))
    _check_no_overflow(beta * delta, "dpo_loss: β Δ (the margin of the log-ratios)", beta)
    return (-torch.nn.functional.logsigmoid(beta * delta)).to(chosen_logp.dtype)
