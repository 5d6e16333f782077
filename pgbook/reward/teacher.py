"""Teacher signals: a teacher model on the reward side of J(θ) (chapter 16).

On-policy distillation (OPD): the student π_θ samples a response y ~ π_θ(·|x), and a
teacher π_T scores every sampled token. The per-token reward is the teacher's log-ratio

    r_t = sg[ log π_T(y_t|h_t) − log π_θ(y_t|h_t) ],        h_t = (x, y_<t),

a stop-gradient number, like a verifier's reward: it changes the scalar that weights
∇log π_θ(y_t|h_t), never p_θ. Factor of J(θ): **reward**. Summed over a response it is
log π_T(y|x) − log π_θ(y|x), whose expectation under π_θ is −KL(π_θ‖π_T) of whole
responses. Two ways to turn it into a per-token advantage, both registered (kind
``"teacher"``, form ``"token"``, ``fn(logp, teacher_logp, mask) -> (B, T)``):

======================  ========================================================================
``reverse_kl``          A_t = r_t (discount 0): the Thinking Machines / Tinker recipe
                        (tinker-cookbook ``distillation/train_on_policy.py``,
                        ``incorporate_kl_penalty`` with ``kl_discount_factor = 0``, its default).
                        Its expected gradient is that of Σ_t KL(π_θ(·∣h_t)‖π_T(·∣h_t)) with the
                        prefixes h_t held where π_θ put them, *not* ∇KL of whole responses.
``reverse_kl_to_go``    A_t = Σ_{t'≥t} r_t' (discount 1, the reward-to-go of chapter 09): the
                        score-function estimator of −∇KL(π_θ‖π_T) of whole responses, unbiased.
======================  ========================================================================

:func:`teacher_advantages` takes any discount γ ∈ [0, 1] (Tinker's ``kl_discount_factor``).

Mixed with a verifier's group advantage (the GRPO-OPD hybrid), the teacher's term is added
*after* the group normalisation, per token (tinker-cookbook adds it to the group-centred
environment advantage in ``incorporate_kl_penalty``):

    Â_{i,t} = Â_i^GRPO + λ · g_i · A_t,                               (:func:`mix_teacher`)

with g_i ∈ {0, 1} a gate on response i's group (kind ``"teacher_gate"``, form ``"group"``,
``fn(rewards (N,), group_size) -> bool (N,)``): ``"always"``, ``"zero_variance"`` (only
groups whose G rewards are all equal, where Â^GRPO = 0 and GRPO has no signal, chapter 08)
or ``"all_fail"`` (only groups in which no response earned a reward above 0).

The advantage ``"zero"`` (Â = 0, form ``"group"``) drops the verifier: pure distillation,
where the teacher is the only signal.

Shapes: ``logp``, ``teacher_logp``, ``mask`` (B, T) (masked positions may hold anything,
−inf included); rewards (B,) in contiguous groups of G. Functions compute in float32 for
low-precision inputs (float64 for float64) and return the dtype of ``logp``; they run on
the inputs' device, and on the meta device for shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    check_finite,
    check_finite_where,
    check_mask,
    check_pair,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..registry import register, resolve
from .advantages import _grouped, reward_to_go

__all__ = [
    "discounted_reward_to_go",
    "mix_teacher",
    "opd_advantages",
    "teacher_advantages",
    "teacher_gate",
    "teacher_token_rewards",
]


def _masked_finite(x: Tensor, m: Tensor, name: str) -> Tensor:
    """``x`` with the masked-out positions set to 0, checked finite where the mask is 1."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    out = torch.where(m, x, zero)
    check_finite(out, name + " (on the response tokens)")
    return out


def teacher_token_rewards(logp: Tensor, teacher_logp: Tensor, mask: Tensor) -> Tensor:
    """The teacher's per-token reward r_t = m_t · sg[log π_T(y_t|h_t) − log π_θ(y_t|h_t)],
    shape (B, T).

    ``logp`` (B, T) the student's log-probs of the sampled tokens (the sampling policy's,
    detached here), ``teacher_logp`` (B, T) the teacher's on the same tokens, ``mask``
    (B, T) 0/1 or bool (the response tokens; elsewhere both may hold −inf or NaN). Summed
    over a response, Σ_t r_t = log π_T(y|x) − log π_θ(y|x): its mean under π_θ is
    −KL(π_θ‖π_T) of whole responses. A number, not a loss. Factor of J(θ): reward.
    """
    check_pair(logp, teacher_logp, "logp", "teacher_logp")
    check_tensor(teacher_logp, "teacher_logp", floating=True)
    check_mask(mask, "mask", tuple(logp.shape))
    check_same_device(logp=logp, mask=mask)
    m = mask.to(torch.bool)
    work = work_dtype(logp.dtype)
    lp = _masked_finite(logp.detach().to(work), m, "logp")
    lt = _masked_finite(teacher_logp.detach().to(work), m, "teacher_logp")
    return (lt - lp).to(logp.dtype)


def discounted_reward_to_go(token_rewards: Tensor, mask: Tensor, discount: float) -> Tensor:
    """A_t = m_t Σ_{k ≥ 0} γ^k m_{t+k} r_{t+k}, shape (*B, T): the discounted sum of the
    rewards still to come (Tinker's ``discounted_future_sum_vectorized``).

    γ = ``discount`` ∈ [0, 1]: γ = 0 gives A_t = r_t, γ = 1 the reward-to-go of
    :func:`pgbook.reward.advantages.reward_to_go`. For 0 < γ < 1 one (T, T) matrix product
    (no loop over tokens). Zero on padding. Factor of J(θ): reward.
    """
    check_tensor(token_rewards, "token_rewards", floating=True)
    if token_rewards.dim() < 1:
        raise ValueError(f"token_rewards: expected shape (*B, T), got {tuple(token_rewards.shape)}")
    check_mask(mask, "mask", tuple(token_rewards.shape))
    check_same_device(token_rewards=token_rewards, mask=mask)
    check_finite_where(token_rewards, mask, "token_rewards")
    gamma = check_positive(discount, "discount", allow_zero=True)
    if gamma > 1:
        raise ValueError(f"discount: expected a number in [0, 1], got {gamma}")
    m = mask.to(torch.bool)                  # the mask selects; it is no factor (no gradient)
    if gamma == 1:
        return reward_to_go(token_rewards, mask)
    r = torch.where(m, token_rewards, torch.zeros((), dtype=token_rewards.dtype,
                                                  device=token_rewards.device))
    if gamma == 0:
        return r
    T = r.shape[-1]
    work = work_dtype(r.dtype)
    idx = torch.arange(T, device=r.device)
    lag = idx[:, None] - idx[None, :]                            # s − t, rows s, columns t
    powers = torch.where(lag >= 0, torch.tensor(gamma, dtype=work, device=r.device)
                         ** lag.clamp(min=0).to(work), torch.zeros((), dtype=work, device=r.device))
    return torch.where(m, r.to(work) @ powers, torch.zeros((), dtype=work, device=r.device)
                       ).to(r.dtype)


def teacher_advantages(logp: Tensor, teacher_logp: Tensor, mask: Tensor, *,
                       discount: float = 0.0) -> Tensor:
    """The teacher's per-token advantage A_t = Σ_{k≥0} γ^k r_{t+k}, r_t from
    :func:`teacher_token_rewards`, shape (B, T), dtype of ``logp``.

    ``discount`` γ = 0 (default): A_t = r_t, the Thinking Machines / Tinker recipe;
    γ = 1: the reward-to-go, the unbiased token-level estimator of −∇KL(π_θ‖π_T) of whole
    responses (chapter 16 checks both exactly). Factor of J(θ): reward.
    """
    r = teacher_token_rewards(logp, teacher_logp, mask)
    return discounted_reward_to_go(r, mask, discount)


@register("teacher", "reverse_kl", side="reward", form="token",
          summary="A_t = sg[log π_T − log π_θ](y_t): the teacher's per-token reverse KL "
                  "(discount 0)",
          reference="Agarwal et al. 2023 (arXiv:2306.13649); Thinking Machines, on-policy "
                    "distillation (2025)")
def reverse_kl_signal(logp: Tensor, teacher_logp: Tensor, mask: Tensor) -> Tensor:
    """A_t = r_t = sg[log π_T(y_t|h_t) − log π_θ(y_t|h_t)] (discount 0), (B, T): what the
    Thinking Machines / Tinker on-policy distillation adds to each token's advantage
    (``kl_penalty_coef · (teacher − sampled log-probs)`` with ``kl_discount_factor = 0``).
    Factor of J(θ): reward."""
    return teacher_advantages(logp, teacher_logp, mask, discount=0.0)


@register("teacher", "reverse_kl_to_go", side="reward", form="token",
          summary="A_t = Σ_{t'≥t} sg[log π_T − log π_θ](y_t'): reward-to-go of the teacher's "
                  "log-ratio (exact −∇KL)")
def reverse_kl_to_go_signal(logp: Tensor, teacher_logp: Tensor, mask: Tensor) -> Tensor:
    """A_t = Σ_{t'≥t} r_t' (discount 1), (B, T): with the score function, an unbiased
    estimate of −∇KL(π_θ‖π_T) of whole responses (Tinker with ``kl_discount_factor = 1``;
    MiniLLM's policy-gradient term, Gu et al. 2023, arXiv:2306.08543). Factor of J(θ):
    reward."""
    return teacher_advantages(logp, teacher_logp, mask, discount=1.0)


# -- gates: which responses receive the teacher's term -------------------------------------------
@register("teacher_gate", "always", side="reward", form="group",
          summary="every response gets the teacher's term")
def gate_always(rewards: Tensor, group_size: int) -> Tensor:
    """g_i = 1 for every response, bool (N,)."""
    r = _grouped(rewards, group_size)
    return torch.ones(r.shape, dtype=torch.bool, device=r.device).reshape(-1)


@register("teacher_gate", "zero_variance", side="reward", form="group",
          summary="only groups whose G rewards are all equal (no GRPO signal)")
def gate_zero_variance(rewards: Tensor, group_size: int) -> Tensor:
    """g_i = 1 when every reward of response i's group is equal (Â^GRPO = 0 there: the
    group carries no verifier signal, chapter 08), bool (N,)."""
    r = _grouped(rewards, group_size)
    return (r == r[:, :1]).all(1, keepdim=True).expand_as(r).reshape(-1)


@register("teacher_gate", "all_fail", side="reward", form="group",
          summary="only groups in which no response earned a reward above 0")
def gate_all_fail(rewards: Tensor, group_size: int) -> Tensor:
    """g_i = 1 when no response of response i's group has a reward above 0 (for a 0/1
    verifier: all G responses wrong), bool (N,). An all-right group gets no teacher term:
    there the verifier has nothing to fix and the student may already pass its teacher."""
    r = _grouped(rewards, group_size)
    return (r <= 0).all(1, keepdim=True).expand_as(r).reshape(-1)


def teacher_gate(rewards: Tensor, group_size: int, gate: str = "always") -> Tensor:
    """The registered gate ``gate`` ("always", "zero_variance", "all_fail", or yours) on
    rewards (N,) in contiguous groups of G: bool (N,), on the rewards' device."""
    fn = resolve("teacher_gate", gate, "group", what="gate")
    g = fn(rewards, group_size)
    check_tensor(g, f"gate {gate!r}")
    if tuple(g.shape) != tuple(rewards.shape):
        raise ValueError(f"gate {gate!r}: expected a result of shape {tuple(rewards.shape)}, "
                         f"got {tuple(g.shape)}")
    return g.to(torch.bool)


def mix_teacher(advantages_tok: Tensor, teacher_adv: Tensor, mask: Tensor, *, coef: float,
                gate: Tensor | None = None) -> Tensor:
    """Â_{i,t} = m_{i,t} (Â_{i,t} + λ · g_i · A_{i,t}), shape (B, T), dtype of
    ``advantages_tok``.

    ``advantages_tok`` (B, T) the verifier's token advantages (e.g. the group z-score
    broadcast to tokens), ``teacher_adv`` (B, T) the teacher's (:func:`teacher_advantages`),
    ``mask`` (B, T), ``coef`` λ ≥ 0, ``gate`` bool (B,) (None: every response). The
    teacher's term is added after the group normalisation, so the verifier's scale does not
    depend on it. Factor of J(θ): reward (both terms are stop-gradient weights).
    """
    check_tensor(advantages_tok, "advantages_tok", ndim=2, floating=True)
    check_pair(advantages_tok, teacher_adv, "advantages_tok", "teacher_adv")
    check_tensor(teacher_adv, "teacher_adv", floating=True)
    check_mask(mask, "mask", tuple(advantages_tok.shape))
    check_same_device(advantages_tok=advantages_tok, mask=mask)
    lam = check_positive(coef, "coef", allow_zero=True)
    m = mask.to(torch.bool)
    work = work_dtype(advantages_tok.dtype)
    a = _masked_finite(advantages_tok.detach().to(work), m, "advantages_tok")
    t = _masked_finite(teacher_adv.detach().to(work), m, "teacher_adv")
    if gate is not None:
        check_tensor(gate, "gate", ndim=1)
        if gate.shape[0] != advantages_tok.shape[0]:
            raise ValueError(f"gate: expected shape ({advantages_tok.shape[0]},) (one per "
                             f"response), got {tuple(gate.shape)}")
        check_same_device(advantages_tok=advantages_tok, gate=gate)
        check_mask(gate, "gate", allow_all_zero=True)        # 0/1 or bool; may gate out all
        t = t * gate.to(work)[:, None]
    return torch.where(m, a + lam * t, torch.zeros((), dtype=work, device=a.device)).to(
        advantages_tok.dtype)


def opd_advantages(advantages: Tensor, logp: Tensor, teacher_logp: Tensor, mask: Tensor,
                   rewards: Tensor | None = None, group_size: int | None = None, *,
                   coef: float = 1.0, signal: str = "reverse_kl",
                   gate: str = "always") -> Tensor:
    """The GRPO-OPD token advantages in one call: Â_{i,t} = Â_i + λ g_i A_t, (B, T).

    ``advantages`` (B,) (broadcast to the response tokens) or (B, T) the verifier's
    advantages (zeros for pure distillation); ``logp``/``teacher_logp``/``mask`` (B, T);
    ``signal`` a registered ``"teacher"`` piece ("reverse_kl", "reverse_kl_to_go", or yours);
    ``gate`` a registered ``"teacher_gate"``: any gate but "always" needs the sequence
    ``rewards`` (B,) and ``group_size``. Factor of J(θ): reward.
    """
    check_tensor(advantages, "advantages", floating=True)
    check_tensor(logp, "logp", ndim=2, floating=True)
    fn = resolve("teacher", signal, "token", what="signal")
    if advantages.dim() == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages: expected shape ({logp.shape[0]},) or "
                             f"{tuple(logp.shape)}, got {tuple(advantages.shape)}")
        adv_tok = advantages.to(logp.dtype)[:, None].expand(logp.shape)
    elif tuple(advantages.shape) == tuple(logp.shape):
        adv_tok = advantages.to(logp.dtype)
    else:
        raise ValueError(f"advantages: expected shape ({logp.shape[0]},) or "
                         f"{tuple(logp.shape)}, got {tuple(advantages.shape)}")
    g = None
    if gate != "always" or rewards is not None:
        if rewards is None or group_size is None:
            raise ValueError(f"rewards, group_size: gate {gate!r} needs the sequence rewards "
                             f"and the group size")
        check_positive_int(group_size, "group_size")
        check_tensor(rewards, "rewards", ndim=1)
        if tuple(rewards.shape) != (logp.shape[0],):
            raise ValueError(f"rewards: expected shape ({logp.shape[0]},), got "
                             f"{tuple(rewards.shape)}")
        g = teacher_gate(rewards, group_size, gate)
    ta = fn(logp, teacher_logp, mask)
    return mix_teacher(adv_tok, ta, mask, coef=coef, gate=g)


# -- pure distillation: no verifier term ---------------------------------------------------------
@register("advantage", "zero", side="reward", form="group",
          summary="Â = 0: no verifier term (pure distillation: the teacher is the only signal)")
def zero_advantage(rewards: Tensor, group_size: int, *, std_eps: float = 1e-6) -> Tensor:
    """Â_i = 0 for every response, shape (N,): the verifier's reward is not used (validated
    like the other estimators; ``std_eps`` accepted and unused). With a teacher signal this
    is pure on-policy distillation. Factor of J(θ): reward."""
    check_positive(std_eps, "std_eps", allow_zero=True)
    _grouped(rewards, group_size)
    return torch.zeros_like(rewards)
