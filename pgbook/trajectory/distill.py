"""Distillation losses: a divergence to a teacher, differentiated through π_θ (chapter 16).

A teacher signal on the reward side (:mod:`pgbook.reward.teacher`) is a stop-gradient number
that weights ∇log π_θ(y_t|h_t), inside J(θ)'s frame. The losses here are different: they
differentiate a divergence between the student's and the teacher's *next-token
distributions* over the whole vocabulary, at the positions of a batch of sequences, with
respect to θ. Nothing in them is a reward, and the sequences are treated as given (no score
function for how θ changes which prefixes are reached): they act on the **trajectory side**,
and once the verifier's reward is dropped they leave the two-axis frame altogether (the
divergence replaces R; the boundary case of GKD and MiniLLM in chapter 16).

With s = log π_θ(·|h_t) and u = log π_T(·|h_t) over a vocabulary of V tokens:

    generalized JSD_β   β KL(π_T ‖ M) + (1 − β) KL(π_θ ‖ M),   M = (1 − β) π_θ + β π_T
    β = 0               KL(π_T ‖ π_θ)    (forward: mode covering)
    β = 1               KL(π_θ ‖ π_T)    (reverse: mode seeking)

as in GKD (Agarwal et al. 2023, arXiv:2306.13649) and TRL's ``GKDTrainer``
(``trl/experimental/gkd/gkd_trainer.py``, ``generalized_jsd_loss``, whose β convention
pgbook follows: β = 0 is the forward KL, β = 1 the reverse KL). Registered per-token
divergences (kind ``"distill_loss"``, form ``"logits"``, side ``"trajectory"``):
``fn(student_logits (…, V), teacher_logits (…, V)) -> (…)``: ``"forward_kl"``,
``"reverse_kl"``, ``"jsd"`` (β = 0.5).

On sequences *sampled from π_θ*, the expected gradient of Σ_t D(π_θ(·|h_t), π_T(·|h_t)) is
the gradient of the per-token divergences with the prefixes held where π_θ put them; for
the reverse KL it equals, exactly, the expected gradient of the teacher's per-token reward
with discount 0 (:func:`pgbook.reward.teacher.teacher_advantages`), and it misses the
future-token term of ∇KL(π_θ‖π_T) of whole responses. :func:`minillm_loss` adds that term
back (MiniLLM's single-step decomposition, Gu et al. 2023, arXiv:2306.08543). On sequences
sampled from the *teacher* (supervised KD, GKD's fixed-data end) the forward-KL token sum
has exactly the gradient of KL(π_T‖π_θ) of whole responses: the off-policy limit.

Alignment: ``logits[..., t, :]`` is the distribution of ``tokens[..., t]`` (shift a causal
LM's logits first, as for :func:`pgbook.trajectory.tokens.token_logprobs`). Computed in
float32 for low-precision logits (float64 for float64), returned in the student logits'
dtype; the teacher's logits are detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_flag,
    check_mask,
    check_positive,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..registry import register, resolve
from .tokens import token_logprobs

__all__ = [
    "distill_loss",
    "forward_kl",
    "generalized_jsd_loss",
    "jsd",
    "minillm_loss",
    "reverse_kl",
    "token_divergence",
]


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    check_tensor(student_logits, "student_logits", floating=True)
    check_tensor(teacher_logits, "teacher_logits", floating=True)
    if student_logits.dim() < 1:
        raise ValueError(f"student_logits: expected shape (…, V), got "
                         f"{tuple(student_logits.shape)}")
    if student_logits.shape[-1] == 0:
        raise ValueError(f"student_logits: expected a vocabulary of at least one token (V ≥ 1 "
                         f"in shape (…, V)), got shape {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"teacher_logits: expected shape {tuple(student_logits.shape)} (that "
                         f"of student_logits: the same positions and vocabulary), got "
                         f"{tuple(teacher_logits.shape)}")
    check_same_device(student_logits=student_logits, teacher_logits=teacher_logits)
    check_finite(student_logits, "student_logits")
    check_finite(teacher_logits, "teacher_logits")


def token_divergence(student_logits: Tensor, teacher_logits: Tensor, *, beta: float = 0.5,
                     temperature: float = 1.0) -> Tensor:
    """The generalized JSD_β between π_θ(·|h_t) and π_T(·|h_t) at every position, (…,) =
    ``student_logits.shape[:-1]``, dtype of the student's logits.

    β = 0: KL(π_T‖π_θ) (forward), β = 1: KL(π_θ‖π_T) (reverse), 0 < β < 1:
    β KL(π_T‖M) + (1 − β) KL(π_θ‖M) with M = (1 − β) π_θ + β π_T (TRL's ``GKDTrainer``
    convention). Both logits are divided by ``temperature`` first. Differentiable in the
    student's logits; the teacher's are detached. Values must be finite (mask padding
    positions by selecting them out, or pass logits that are finite there). Factor of
    J(θ): trajectory (a divergence differentiated through π_θ; no reward).
    """
    _check_logits(student_logits, teacher_logits)
    b = check_positive(beta, "beta", allow_zero=True)
    if b > 1:
        raise ValueError(f"beta: expected a number in [0, 1], got {b}")
    tau = check_positive(temperature, "temperature")
    work = work_dtype(student_logits.dtype)
    s = torch.log_softmax(student_logits.to(work) / tau, -1)
    u = torch.log_softmax(teacher_logits.detach().to(work) / tau, -1)
    if tau < 1:     # finite logits divided by a tiny temperature can overflow to ±inf
        for name, x, lx in (("student_logits", student_logits, s),
                            ("teacher_logits", teacher_logits, u)):
            if not _is_meta(x) and x.numel() and not bool(torch.isfinite(lx).all()):
                raise ValueError(f"temperature: expected a temperature at which {name} / "
                                 f"temperature stays finite in {work}, got {temperature!r} "
                                 f"(the division overflows)")
    if b == 0:
        out = (u.exp() * (u - s)).sum(-1)
    elif b == 1:
        out = (s.exp() * (s - u)).sum(-1)
    else:
        bt = torch.tensor(b, dtype=work, device=s.device)
        mix = torch.logsumexp(torch.stack([s + torch.log1p(-bt), u + torch.log(bt)]), 0)
        out = bt * (u.exp() * (u - mix)).sum(-1) + (1 - bt) * (s.exp() * (s - mix)).sum(-1)
    return out.to(student_logits.dtype)


@register("distill_loss", "forward_kl", side="trajectory", form="logits",
          summary="KL(π_T(·|h_t) ‖ π_θ(·|h_t)) per token, full vocabulary (mode covering)",
          reference="Hinton et al. 2015; Agarwal et al. 2023 (arXiv:2306.13649), β = 0")
def forward_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(π_T(·|h_t) ‖ π_θ(·|h_t)) at every position, (…,): supervised KD's per-token loss
    (GKD's β = 0; verl's GKD recipe computes it on the teacher's top-k support only).
    Factor of J(θ): trajectory."""
    return token_divergence(student_logits, teacher_logits, beta=0.0)


@register("distill_loss", "reverse_kl", side="trajectory", form="logits",
          summary="KL(π_θ(·|h_t) ‖ π_T(·|h_t)) per token, full vocabulary (mode seeking)",
          reference="Agarwal et al. 2023 (arXiv:2306.13649), β = 1")
def reverse_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(π_θ(·|h_t) ‖ π_T(·|h_t)) at every position, (…,) (GKD's β = 1). On sequences
    sampled from π_θ its expected gradient equals that of the teacher's per-token reward
    with discount 0, with the whole vocabulary in place of the sampled token (less
    variance, the same expectation). Factor of J(θ): trajectory."""
    return token_divergence(student_logits, teacher_logits, beta=1.0)


@register("distill_loss", "jsd", side="trajectory", form="logits",
          summary="generalized JSD_0.5 per token (GKD's default)",
          reference="Agarwal et al. 2023 (arXiv:2306.13649)")
def jsd(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """The generalized JSD with β = 0.5 at every position, (…,) (TRL's ``GKDConfig``
    default). Factor of J(θ): trajectory."""
    return token_divergence(student_logits, teacher_logits, beta=0.5)


def _token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    check_mask(mask, "mask", tuple(per_token.shape))
    check_same_device(student_logits=per_token, mask=mask)
    m = mask.to(torch.bool)
    work = work_dtype(per_token.dtype)
    x = torch.where(m, per_token.to(work), torch.zeros((), dtype=work, device=per_token.device))
    return (x.sum() / m.sum().clamp(min=1).to(work)).to(per_token.dtype)


def generalized_jsd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, *,
                         beta: float = 0.5, temperature: float = 1.0) -> Tensor:
    """GKD's loss: the generalized JSD_β per token, averaged over the tokens where ``mask``
    is 1 (a scalar to minimise).

    ``student_logits``, ``teacher_logits`` (B, T, V), ``mask`` (B, T) 0/1 or bool (not all
    zero). Equals TRL's ``GKDTrainer.generalized_jsd_loss`` with ``labels`` marking the
    same tokens and ``reduction="batchmean"`` (Σ over the masked tokens and the vocabulary,
    divided by the number of masked tokens). Factor of J(θ): trajectory.
    """
    check_tensor(student_logits, "student_logits", ndim=3, floating=True)
    check_tensor(mask, "mask")
    if tuple(mask.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(f"mask: expected shape {tuple(student_logits.shape[:2])} (one per "
                         f"position of the logits), got {tuple(mask.shape)}")
    check_same_device(student_logits=student_logits, mask=mask)
    per_token = token_divergence(student_logits, teacher_logits, beta=beta,
                                 temperature=temperature)
    return _token_mean(per_token, mask)


def distill_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                 divergence: str = "reverse_kl") -> Tensor:
    """A registered per-token divergence (kind ``"distill_loss"``: "forward_kl",
    "reverse_kl", "jsd", or yours) averaged over the masked tokens: a scalar. Factor of
    J(θ): trajectory."""
    fn = resolve("distill_loss", divergence, "logits", what="divergence")
    check_tensor(student_logits, "student_logits", ndim=3, floating=True)
    check_tensor(mask, "mask")
    if tuple(mask.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(f"mask: expected shape {tuple(student_logits.shape[:2])} (one per "
                         f"position of the logits), got {tuple(mask.shape)}")
    check_same_device(student_logits=student_logits, mask=mask)
    return _token_mean(fn(student_logits, teacher_logits), mask)


def minillm_loss(student_logits: Tensor, teacher_logits: Tensor, tokens: Tensor, mask: Tensor,
                 *, length_normalized: bool = False, reduction: str = "mean") -> Tensor:
    """The reverse KL of whole responses, KL(π_θ‖π_T), as a loss on samples y ~ π_θ, by
    MiniLLM's single-step decomposition (Gu et al. 2023, arXiv:2306.08543, eq. 6):

        L = (1/B) Σ_i Σ_t m_it [ KL(π_θ(·|h_it) ‖ π_T(·|h_it)) + sg(F_it) · log π_θ(y_it|h_it) ],
        F_it = Σ_{t'>t} m_it' (log π_θ − log π_T)(y_it'),

    whose expected gradient is exactly ∇KL(π_θ‖π_T) of whole responses: the first term is
    the gradient with the prefixes held fixed (over the whole vocabulary), the second the
    score-function term through which token t changes the prefixes that follow it.
    ``length_normalized``: F_it divided by the number of response tokens after t
    (MiniLLM's length normalisation against short responses; then no longer an exact
    gradient).

    Shapes: ``student_logits``, ``teacher_logits`` (B, T, V) aligned with ``tokens`` (B, T)
    (``logits[:, t]`` is the distribution of ``tokens[:, t]``), ``mask`` (B, T). Returns a
    scalar in the student logits' dtype (``reduction="none"``: each response's sum over its
    tokens, (B,)). Where pgbook differs from MiniLLM's code (LMOps
    ``minillm/minillm/losses.py``): that code weights each token by the reward-to-go
    *including* token t (Σ_{t'≥t}), divides by the remaining length, whitens and clips like
    PPO, samples from a teacher-student mixture with importance weights, and adds the
    single-step term as a token mean; pgbook keeps the decomposition of the paper, on pure
    student samples, which is exact in expectation. Factor of J(θ): trajectory (the first
    term differentiates the divergence; the second is a score function weighted by a
    divergence, which stands where the reward was: the divergence replaces R).
    """
    _check_logits(student_logits, teacher_logits)
    check_tensor(student_logits, "student_logits", ndim=3, floating=True)
    check_tensor(tokens, "tokens", ndim=2)
    if tuple(tokens.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(f"tokens: expected shape {tuple(student_logits.shape[:2])}, got "
                         f"{tuple(tokens.shape)}")
    check_mask(mask, "mask", tuple(tokens.shape))
    check_same_device(student_logits=student_logits, tokens=tokens, mask=mask)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    check_flag(length_normalized, "length_normalized")
    m = mask.to(torch.bool)
    work = work_dtype(student_logits.dtype)
    zero = torch.zeros((), dtype=work, device=student_logits.device)
    kl_t = token_divergence(student_logits, teacher_logits, beta=1.0).to(work)
    logp = token_logprobs(student_logits, tokens).to(work)
    with torch.no_grad():
        lt = token_logprobs(teacher_logits.detach(), tokens).to(work)
        ell = torch.where(m, logp.detach() - lt, zero)
        future = ell.flip(-1).cumsum(-1).flip(-1) - ell                   # Σ_{t'>t} ℓ_t'
        if length_normalized:
            mf = m.to(work)
            n_after = mf.flip(-1).cumsum(-1).flip(-1) - mf
            future = future / n_after.clamp(min=1)
    per_tok = torch.where(m, kl_t + future * logp, zero)
    if reduction == "none":
        return per_tok.sum(-1).to(student_logits.dtype)
    n_seq = m.any(-1).sum().clamp(min=1).to(work)
    return (per_tok.sum() / n_seq).to(student_logits.dtype)
