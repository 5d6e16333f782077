"""Policy losses: how log π_θ enters the update (the trajectory side of J(θ)).

Every policy loss here returns a *per-element* loss (one entry per sample in a bandit, one
per token in a language model) whose autograd gradient, after aggregation (a mean over
samples, or one of :mod:`pgbook.aggregation`'s token reductions), is the estimator the book
derives. Losses are to be *minimised*: the loss is minus the surrogate objective.

    score_function        ℓ = −sg(A) log π_θ                      REINFORCE (chapter 02)
    importance_weighted   ℓ = −r_θ A,  r_θ = π_θ / π_old            off-policy (chapter 05)
    ppo_clip              ℓ = −min(r_θ A, clip(r_θ, 1−ε_low, 1+ε_high) A)   PPO (chapter 07)
    ppo_dual_clip         ppo_clip, with A < 0 terms capped at −c·A       (Ye et al. 2020)

Shapes: ``logp``, ``old_logp``, ``advantages`` share one shape, (N,) or (B, T).
Advantages are treated as constants (detached): they weight samples, they are not trained.
All functions run on the device and dtype of their inputs; log-probs and advantages must be
finite (mask padding first: :func:`pgbook.methods.policy_loss` does).

Overflow. A ratio is exp(log π_θ − log π_old) with the log-ratio clamped to [−20, 20] first
(:data:`pgbook._validate.LOG_RATIO_CLAMP`), as verl's ``compute_policy_loss_vanilla`` does: a
ratio is at most e²⁰ ≈ 4.9e8, never inf, and beyond the clamp its gradient is zero.

Registered policy losses (kind ``"policy_loss"``, form ``"token"``, trajectory side) share
the signature ``fn(logp, advantages, old_logp=None, **options) -> per-element loss``;
:func:`pgbook.methods.policy_loss` masks, aggregates and adds a KL term to any of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    LOG_RATIO_CLAMP,
    _is_meta,
    check_finite,
    check_finite_where,
    check_generator,
    check_mask,
    check_number,
    check_pair,
    check_positive,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..aggregation import seq_mean_token_sum
from ..registry import register

__all__ = [
    "clip_fraction",
    "importance_weighted_loss",
    "log_ratio",
    "ppo_clip_loss",
    "ppo_dual_clip_loss",
    "ratio",
    "score_function_loss",
    "token_pg_loss",
]


@register("policy_loss", "score_function", side="trajectory", form="token",
          summary="−sg(A)·log π: the log-derivative trick (REINFORCE)")
def score_function_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor | None = None) -> Tensor:
    """Per-element REINFORCE loss  ℓ_i = −sg(A_i) · log π_θ(a_i|s_i).

    Its gradient averaged over N samples is −ĝ with ĝ = (1/N) Σ_i A_i ∇log π_θ(a_i|s_i), the
    score-function estimator of ∇J. Factor of J(θ): trajectory (it differentiates log p_θ,
    not R). ``old_logp`` is accepted and ignored so all policy losses share one signature.
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(logp, "logp")
    check_finite(advantages, "advantages")
    return -(advantages.detach().to(logp.dtype) * logp)


def log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """log r = log π_θ − log π_old (old detached); shape of the inputs (not clamped)."""
    check_pair(logp, old_logp, "logp", "old_logp")
    check_finite(logp, "logp")
    check_finite(old_logp, "old_logp")
    return logp - old_logp.detach().to(logp.dtype)


def ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """Importance ratio r_θ = π_θ / π_old = exp(clamp(log π_θ − log π_old, −20, 20)), computed
    in log space; the clamp (verl's) keeps it finite (module docstring)."""
    lr = log_ratio(logp, old_logp)
    return torch.exp(lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def _check_clip(eps_low: float, eps_high: float | None) -> tuple[float, float]:
    """ε_low in (0, 1) and ε_high > 0 (default ε_low)."""
    check_positive(eps_low, "eps_low")
    if eps_low >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
    eps_high = eps_low if eps_high is None else check_positive(eps_high, "eps_high")
    return float(eps_low), eps_high


@register("policy_loss", "importance_weighted", side="trajectory", form="token",
          summary="−r_θ·A with r_θ = π_θ/π_old: the importance-sampled surrogate")
def importance_weighted_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor) -> Tensor:
    """ℓ = −r_θ · A, r_θ = π_θ/π_old. At θ = θ_old, ∇ℓ = −A ∇log π_θ: the policy gradient.

    Factor of J(θ): trajectory (samples come from π_old; the ratio re-weights them).
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(advantages, "advantages")
    return -(ratio(logp, old_logp) * advantages.detach().to(logp.dtype))


@register("policy_loss", "ppo_clip", side="trajectory", form="token",
          summary="−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A) (optionally dual-clipped)")
def ppo_clip_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float = 0.2,
                  eps_high: float | None = None, dual_clip: float | None = None) -> Tensor:
    """PPO's clipped surrogate, per element:

        ℓ = −min( r·A, clip(r, 1 − ε_low, 1 + ε_high)·A ),      r = π_θ / π_old.

    With ``dual_clip = c > 1`` (Ye et al. 2020), for A < 0 the loss is further capped at
    −c·A, so a huge ratio on a bad action cannot produce an unbounded update:
    ℓ = min(ℓ, −c·A) where A < 0.

    The gradient is zero wherever the clipped branch is active (r outside the range on the
    side where it would increase the surrogate). ``eps_high`` defaults to ``eps_low``
    (symmetric clip); ``eps_high > eps_low`` is DAPO's clip-higher.

    Convention: the dual clip is *off* unless asked for (PPO as Schulman et al. 2017 state
    it, and TRL's GRPO loss). verl's ``compute_policy_loss_vanilla`` always applies it with
    c = ``clip_ratio_c`` = 3: that loss is :func:`ppo_dual_clip_loss` (the registered
    ``"ppo_dual_clip"``), equal to verl's per-token loss.
    Factor of J(θ): trajectory (a trust region on the ratio).
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_finite(advantages, "advantages")
    eps_low, eps_high = _check_clip(eps_low, eps_high)
    adv = advantages.detach().to(logp.dtype)
    r = ratio(logp, old_logp)
    unclipped = r * adv
    clipped = torch.clamp(r, 1.0 - eps_low, 1.0 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    if dual_clip is not None:
        c = check_positive(dual_clip, "dual_clip")
        if c <= 1:
            raise ValueError(f"dual_clip: expected a number > 1, got {c}")
        loss = torch.where(adv < 0, torch.minimum(loss, -c * adv), loss)
    return loss


@register("policy_loss", "ppo_dual_clip", side="trajectory", form="token",
          summary="PPO clip with the dual clip: A < 0 terms capped at −c·A")
def ppo_dual_clip_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float = 0.2,
                       eps_high: float | None = None, dual_clip: float = 3.0) -> Tensor:
    """:func:`pgbook.trajectory.losses.ppo_clip_loss` with the dual clip on (Ye et al. 2020): for
    A < 0 the loss is at most −c·A, so one sample with a huge ratio on a bad action cannot
    dominate the update. With the default c = 3 this is verl's ``compute_policy_loss_vanilla``
    per token (verl applies the dual clip always; its log-ratio clamp is pgbook's too).
    Factor of J(θ): trajectory."""
    return ppo_clip_loss(logp, advantages, old_logp, eps_low=eps_low, eps_high=eps_high,
                         dual_clip=dual_clip)


def clip_fraction(logp: Tensor, old_logp: Tensor, advantages: Tensor, eps_low: float = 0.2,
                  eps_high: float | None = None) -> Tensor:
    """Boolean (same shape): where the PPO clip is active, i.e. where the gradient is zero:
    (A > 0 and r > 1 + ε_high) or (A < 0 and r < 1 − ε_low). Same checks as
    :func:`ppo_clip_loss` (shapes, devices, finite values, the clip range); ``advantages``
    real floating."""
    check_pair(logp, advantages, "logp", "advantages")
    check_tensor(advantages, "advantages", floating=True)
    check_finite(advantages, "advantages")
    eps_low, eps_high = _check_clip(eps_low, eps_high)
    r = ratio(logp, old_logp).detach()
    adv = advantages.detach()
    return ((adv > 0) & (r > 1 + eps_high)) | ((adv < 0) & (r < 1 - eps_low))


def token_pg_loss(token_logp: Tensor, weights: Tensor, mask: Tensor) -> Tensor:
    """The token-level REINFORCE surrogate (a scalar to minimise):

        loss = −(1/B) Σ_b Σ_t m_bt · sg(w_bt) · log π_θ(y_bt | h_bt),

    whose −∇ is ĝ = (1/B) Σ_b Σ_t m_bt w_bt ∇log π_θ(y_bt|h_bt): a sum over a response's
    tokens, a mean over responses (:func:`pgbook.aggregation.seq_mean_token_sum` of
    :func:`pgbook.trajectory.losses.score_function_loss`). Shapes (B, T); positions where the
    mask is 0 may hold anything (NaN, ±inf) in ``token_logp`` and ``weights``: they are
    replaced by 0 before the product. Factor: trajectory
    (∇ log p_θ(y|x) = Σ_t ∇ log π_θ(y_t|h_t)).
    """
    check_tensor(token_logp, "token_logp", ndim=2, floating=True)
    check_pair(token_logp, weights, "token_logp", "weights")
    check_mask(mask, "mask", tuple(token_logp.shape))
    check_same_device(token_logp=token_logp, mask=mask)
    check_finite_where(token_logp, mask, "token_logp")
    check_finite_where(weights, mask, "weights")
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=token_logp.dtype, device=token_logp.device)
    lp = torch.where(m, token_logp, zero)
    w = torch.where(m, weights.detach().to(token_logp.dtype), zero)
    return seq_mean_token_sum(score_function_loss(lp, w), mask)


# =============================================================================================
# Part III: the trajectory side after GRPO (chapter 14)
# =============================================================================================
# Losses that need the sequence structure take the response mask as a keyword ``mask`` (B, T)
# (policy_loss passes it to any loss that accepts it; None here means every position is a
# response token); Clip-Cov takes a ``generator`` for its random token choice (grpo_train
# passes its own). A loss may carry a ``clip_mask`` attribute, a function with its signature
# that returns where its gradient is exactly zero because of a clip: policy_loss reports its
# mean as ``clip_fraction``. Everything is computed in the work dtype (float32 for half
# precision) and returned in the dtype of ``logp``.
__all__ += [
    "cispo_loss",
    "clip_cov_loss",
    "clip_higher_loss",
    "gmpo_loss",
    "gspo_loss",
    "gspo_token_loss",
    "kl_cov_loss",
    "sapo_loss",
    "sequence_log_ratio",
]


def _prepare(logp: Tensor, advantages: Tensor, old_logp: Tensor, mask: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(log-ratio, advantages, mask as bool, logp) in the work dtype; masked positions of the
    log-ratio and advantages set to 0 (they may hold anything, NaN included)."""
    check_pair(logp, advantages, "logp", "advantages")
    check_pair(logp, old_logp, "logp", "old_logp")
    check_finite(advantages, "advantages")
    if mask is None:
        m = torch.ones(logp.shape, dtype=torch.bool, device=logp.device)
    else:
        check_tensor(mask, "mask")
        if tuple(mask.shape) != tuple(logp.shape):
            raise ValueError(f"mask: expected shape {tuple(logp.shape)} (that of logp), got "
                             f"{tuple(mask.shape)}")
        check_same_device(logp=logp, mask=mask)
        check_mask(mask, "mask", allow_all_zero=True)    # an empty batch: every loss is 0
        m = mask.to(torch.bool)
    check_finite_where(logp, m, "logp")
    wd = work_dtype(logp.dtype)
    zero = torch.zeros((), dtype=wd, device=logp.device)
    lp = torch.where(m, logp.to(wd), zero)
    old = torch.where(m, old_logp.detach().to(wd), zero)
    if not _is_meta(old) and not bool(torch.isfinite(old).all()):
        raise ValueError("old_logp: expected finite values on the response tokens")
    adv = torch.where(m, advantages.detach().to(wd), zero)
    return lp - old, adv, m, lp


def _check_eps(eps_low: float | None, eps_high: float | None, *, low_below_one: bool = True
               ) -> tuple[float, float]:
    check_positive(eps_low, "eps_low")
    if low_below_one and eps_low >= 1:
        raise ValueError(f"eps_low: expected a number in (0, 1), got {eps_low}")
    eps_high = eps_low if eps_high is None else check_positive(eps_high, "eps_high")
    return float(eps_low), float(eps_high)


def _lengths(m: Tensor, dtype: torch.dtype) -> Tensor:
    """|y_i| = Σ_t m_it, at least 1 (an empty row then has log-ratio 0), shape (...,)."""
    return m.sum(-1).to(dtype).clamp(min=1)


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor | None = None) -> Tensor:
    """GSPO's sequence log-ratio log s_i = (1/|y_i|) Σ_t m_it (log π_θ − log π_old)(y_it),
    shape (...,) from (..., T) inputs: the log of the geometric mean of the token ratios,
    (π_θ(y_i|x)/π_old(y_i|x))^{1/|y_i|}. Differentiable in ``logp`` (work dtype: float32
    for half precision). An empty row gives 0. Factor of J(θ): trajectory."""
    check_tensor(logp, "logp", floating=True)
    lr, _, m, _ = _prepare(logp, torch.zeros_like(logp), old_logp, mask)
    return lr.sum(-1) / _lengths(m, lr.dtype)


def _gspo(logp, advantages, old_logp, mask, eps_low, eps_high, token: bool):
    lr, adv, m, lp = _prepare(logp, advantages, old_logp, mask)
    el, eh = _check_eps(eps_low, eps_high)
    seq = lr.sum(-1, keepdim=True) / _lengths(m, lr.dtype).unsqueeze(-1)       # log s_i
    if token:   # s_it = sg[s_i] · π_θ(y_it)/sg[π_θ(y_it)]: value s_i, gradient s_i ∇log π_θ(y_it)
        s = torch.exp(seq.detach() + lp - lp.detach())
    else:       # s_i itself: gradient s_i (1/|y_i|) Σ_t ∇log π_θ(y_it) on every token's term
        s = torch.exp(seq).expand_as(lr)
    loss = -torch.minimum(s * adv, torch.clamp(s, 1.0 - el, 1.0 + eh) * adv)
    sv = s.detach()
    clipped = ((adv > 0) & (sv > 1 + eh)) | ((adv < 0) & (sv < 1 - el))
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return torch.where(m, loss, zero).to(logp.dtype), clipped & m


@register("policy_loss", "gspo", side="trajectory", form="token",
          summary="−min(s·A, clip(s, 1−ε_low, 1+ε_high)·A), s = (π_θ(y)/π_old(y))^{1/|y|} "
                  "per sequence (GSPO)",
          reference="Zheng et al. 2025 (GSPO, arXiv:2507.18071)")
def gspo_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, *, mask: Tensor | None = None,
              eps_low: float = 3e-4, eps_high: float | None = 4e-4) -> Tensor:
    """GSPO's sequence-level clipped surrogate (Zheng et al. 2025, arXiv:2507.18071), per token:

        ℓ_it = −min( s_i Â_it, clip(s_i, 1 − ε_low, 1 + ε_high) Â_it ),
        s_i  = exp( (1/|y_i|) Σ_t m_it log(π_θ(y_it|h_it)/π_old(y_it|h_it)) ),

    one ratio per response, the geometric mean of its token ratios, shared by all its tokens
    and clipped as a whole, with GSPO's small range (ε_low, ε_high) = (3e-4, 4e-4). Its
    gradient is Â_i s_i (1/|y_i|) Σ_t ∇log π_θ(y_it|h_it) while s_i is inside the range (on
    the side where the clip binds: zero for the whole response). Use it with the
    ``"seq_mean_token_mean"`` aggregation: the mean over responses of the per-response loss.

    Shapes: ``logp``, ``advantages``, ``old_logp``, ``mask`` (..., T), tokens last; returns
    (..., T) (0 off the mask). Factor of J(θ): trajectory (the ratio: how p_θ is compared
    with the sampling policy).

    Reference: this is TRL's ``GRPOTrainer._compute_loss`` with
    ``importance_sampling_level="sequence"`` and ``loss_type="grpo"`` exactly (TRL's
    ``epsilon``/``epsilon_high`` are our ``eps_low``/``eps_high``; its ``delta`` two-sided
    clip is not implemented). verl's ``compute_policy_loss_gspo`` is GSPO-token
    (:func:`gspo_token_loss`), equal to this in value and gradient whenever the advantage is
    the same on every token of a response (GRPO's).
    """
    return _gspo(logp, advantages, old_logp, mask, eps_low, eps_high, token=False)[0]


@register("policy_loss", "gspo_token", side="trajectory", form="token",
          summary="GSPO with per-token advantages: s_it = sg[s_i]·π_θ(y_t)/sg[π_θ(y_t)]",
          reference="Zheng et al. 2025 (GSPO-token, arXiv:2507.18071)")
def gspo_token_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, *,
                    mask: Tensor | None = None, eps_low: float = 3e-4,
                    eps_high: float | None = 4e-4) -> Tensor:
    """GSPO-token (Zheng et al. 2025, §4.3): the sequence ratio's value with a token's gradient,

        ℓ_it = −min( s_it Â_it, clip(s_it, 1 − ε_low, 1 + ε_high) Â_it ),
        s_it = sg[s_i] · π_θ(y_it|h_it) / sg[π_θ(y_it|h_it)],

    so every token of response i sees the value s_i (:func:`gspo_loss`) but its gradient is
    Â_it s_i ∇log π_θ(y_it|h_it): the advantage may differ from token to token (e.g. a
    multi-turn or process reward). With one advantage per response and the
    ``"seq_mean_token_mean"`` aggregation it equals :func:`gspo_loss` in value and gradient.
    Shapes (..., T). Factor of J(θ): trajectory.

    Reference: verl's ``compute_policy_loss_gspo`` (``verl/trainer/ppo/core_algos.py``),
    which always aggregates with "seq-mean-token-mean"; verl also caps log s_it at 10
    (s_it ≤ e¹⁰ ≈ 22026) for numerical safety, which pgbook does not (a clipped response
    far beyond that range has a zero gradient either way).
    """
    return _gspo(logp, advantages, old_logp, mask, eps_low, eps_high, token=True)[0]


gspo_loss.clip_mask = lambda logp, advantages, old_logp, *, mask=None, eps_low=3e-4, \
    eps_high=4e-4: _gspo(logp, advantages, old_logp, mask, eps_low, eps_high, False)[1]
gspo_token_loss.clip_mask = lambda logp, advantages, old_logp, *, mask=None, eps_low=3e-4, \
    eps_high=4e-4: _gspo(logp, advantages, old_logp, mask, eps_low, eps_high, True)[1]


def _gmpo(logp, advantages, old_logp, mask, eps_low, eps_high):
    lr, adv, m, _ = _prepare(logp, advantages, old_logp, mask)
    el, eh = _check_eps(eps_low, eps_high, low_below_one=False)
    sgn = torch.sign(adv)
    lr_c = torch.clamp(lr, -el, eh)
    # the pessimistic of the two, token by token, in log space: min(sgn·lr, sgn·lr_c)·sgn
    lr_min = sgn * torch.minimum(sgn * lr, sgn * lr_c)
    L = _lengths(m, lr.dtype)
    ratio_i = torch.exp(lr_min.sum(-1) / L)                       # geometric mean of clipped ratios
    adv_i = adv.sum(-1) / L                                       # the response's advantage
    loss = (-adv_i * ratio_i).unsqueeze(-1).expand_as(lr)
    clipped = (sgn * lr_c < sgn * lr).detach() & m
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return torch.where(m, loss, zero).to(logp.dtype), clipped


@register("policy_loss", "gmpo", side="trajectory", form="token",
          summary="−Â_i·(Π_t clip(r_t))^{1/|y|}: geometric mean of token ratios, clipped in log "
                  "space (GMPO)",
          reference="Zhao et al. 2025 (GMPO, arXiv:2507.20673)")
def gmpo_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, *, mask: Tensor | None = None,
              eps_low: float = 0.4, eps_high: float | None = 0.4) -> Tensor:
    """Geometric-Mean Policy Optimization (Zhao et al. 2025, arXiv:2507.20673), per response:

        ℓ_i = −Â_i · exp( (1/|y_i|) Σ_t m_it · sgn(Â_i)·min(sgn(Â_i)·u_it, sgn(Â_i)·clip(u_it, −ε_low, ε_high)) ),
        u_it = log π_θ(y_it|h_it) − log π_old(y_it|h_it),    Â_i = (1/|y_i|) Σ_t m_it Â_it,

    the geometric mean of the token ratios (each clipped in *log* space, pessimistically
    for the sign of the advantage: the default range (e^{−0.4}, e^{0.4}) is GMPO's), times
    the response's advantage. One outlier token ratio moves a geometric mean by a factor
    r^{1/|y|}, an arithmetic mean by r/|y|. Returned on every token of the response (0 off
    the mask): aggregate with ``"seq_mean_token_mean"`` to get the mean over responses.
    Note ``eps_low``/``eps_high`` bound the *log*-ratio here (as in verl), not the ratio.
    Shapes (..., T). Factor of J(θ): trajectory.

    Reference: verl's ``compute_policy_loss_geo_mean`` (``core_algos.py``), whose loss is
    ``torch.mean`` over responses of this ℓ_i. Differences: verl divides by |y_i| + 1e-8
    (pgbook by |y_i|, a relative difference of 1e-8/|y_i|), and its mean counts rows with
    an all-zero mask (loss 0) where pgbook's "seq_mean_token_mean" leaves them out.
    """
    return _gmpo(logp, advantages, old_logp, mask, eps_low, eps_high)[0]


gmpo_loss.clip_mask = lambda logp, advantages, old_logp, *, mask=None, eps_low=0.4, \
    eps_high=0.4: _gmpo(logp, advantages, old_logp, mask, eps_low, eps_high)[1]


@register("policy_loss", "cispo", side="trajectory", form="token",
          summary="−sg[clip(r, 1−ε_low, 1+ε_high)]·A·log π_θ: a clipped IS weight that never "
                  "drops a token's gradient (CISPO)",
          reference="MiniMax 2025 (MiniMax-M1, arXiv:2506.13585)")
def cispo_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float | None = None,
               eps_high: float = 4.0) -> Tensor:
    """CISPO (MiniMax-M1, arXiv:2506.13585), per token:

        ℓ_t = −sg[ clip(r_t, 1 − ε_low, 1 + ε_high) ] · Â_t · log π_θ(y_t|h_t),
        r_t = π_θ(y_t|h_t) / π_old(y_t|h_t).

    The importance weight is clipped and *detached*: it scales the token's REINFORCE term
    but no token's gradient is ever zero, whereas PPO's clip zeroes the gradient of a token
    whose ratio has left the range on the side the advantage pushes (a rare token with
    Â > 0 stops learning once r > 1 + ε). ``eps_low=None`` (the default, as in MiniMax-M1)
    puts no lower bound on the weight; ``eps_high`` = 4.0 caps it at 5 (TRL's recommended
    ε_max = 5.0, from ScaleRL). ``clip_fraction`` reports 0 (no gradient is cut). Shapes:
    any, shared by the inputs. Factor of J(θ): trajectory (a bounded importance weight).

    References: TRL's ``loss_type="cispo"`` computes −sg[min(r, ε_max)]·Â·log π with
    ``epsilon_high`` = ε_max = our 1 + ``eps_high`` (so TRL's 5.0 is our 4.0) and no lower
    bound; verl's ``compute_policy_loss_cispo`` clips to [1 − clip_ratio_low, 1 +
    clip_ratio_high] (pass both to match it) and first caps |log r| at 20.
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_pair(logp, old_logp, "logp", "old_logp")
    check_finite(logp, "logp")
    check_finite(old_logp, "old_logp")
    check_finite(advantages, "advantages")
    eh = check_positive(eps_high, "eps_high")
    lo = None if eps_low is None else 1.0 - check_positive(eps_low, "eps_low")
    wd = work_dtype(logp.dtype)
    lp = logp.to(wd)
    w = torch.clamp(torch.exp(lp.detach() - old_logp.detach().to(wd)), min=lo, max=1.0 + eh)
    return (-(w * advantages.detach().to(wd)) * lp).to(logp.dtype)


cispo_loss.clip_mask = lambda logp, *a, **k: torch.zeros(logp.shape, dtype=torch.bool,
                                                          device=logp.device)


@register("policy_loss", "sapo", side="trajectory", form="token",
          summary="−(4/τ)·σ(τ(r − 1))·A: a smooth gate instead of a hard clip (SAPO)",
          reference="Gao et al. 2025 (SAPO, arXiv:2511.20347)")
def sapo_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, tau_pos: float = 1.0,
              tau_neg: float = 1.05) -> Tensor:
    """Soft Adaptive Policy Optimization (arXiv:2511.20347), per token:

        ℓ_t = −f_τ(r_t) · Â_t,    f_τ(r) = (4/τ) σ(τ (r − 1)),    τ = τ_pos if Â_t > 0 else τ_neg,

    a sigmoid gate in place of PPO's clip: at r = 1 its slope is 1 (the policy gradient),
    and it flattens smoothly as r moves away, so a far-off token's gradient fades instead of
    being cut at a threshold; τ_neg > τ_pos makes it fade faster for negative advantages.
    ``clip_fraction`` reports 0. Shapes: any. Factor of J(θ): trajectory.

    References: verl's ``compute_policy_loss_sapo`` (which first caps |log r| at 20 and always
    aggregates with "seq-mean-token-mean") and TRL's ``loss_type="sapo"`` (TRL's
    ``sapo_temperature_pos``/``_neg`` are our ``tau_pos``/``tau_neg``; defaults 1.0/1.05 in
    both); use the ``"seq_mean_token_mean"`` aggregation, as they do.
    """
    check_pair(logp, advantages, "logp", "advantages")
    check_pair(logp, old_logp, "logp", "old_logp")
    check_finite(logp, "logp")
    check_finite(old_logp, "old_logp")
    check_finite(advantages, "advantages")
    tp = check_positive(tau_pos, "tau_pos")
    tn = check_positive(tau_neg, "tau_neg")
    wd = work_dtype(logp.dtype)
    adv = advantages.detach().to(wd)
    r = torch.exp(logp.to(wd) - old_logp.detach().to(wd))
    tau = torch.where(adv > 0, torch.full_like(adv, tp), torch.full_like(adv, tn))
    return (-(4.0 / tau) * torch.sigmoid(tau * (r - 1.0)) * adv).to(logp.dtype)


sapo_loss.clip_mask = cispo_loss.clip_mask


def _valid_cov(lp: Tensor, adv: Tensor, m: Tensor) -> Tensor:
    """(Â − mean Â)(log π − mean log π) on every position, means over the valid tokens
    (verl's masked means, which divide by count + 1e-8); detached."""
    n = m.sum().to(lp.dtype) + 1e-8
    mf = m.to(lp.dtype)
    a = adv.detach()
    lpd = lp.detach()
    return (a - (a * mf).sum() / n) * (lpd - (lpd * mf).sum() / n)


def _real_values(x: Tensor, what: str) -> bool:
    """False on the meta device (shape-only call); an error inside torch.func transforms."""
    if x.device.type == "meta":
        return False
    if _is_meta(x):
        raise ValueError(f"{what} chooses tokens by their values, which are not readable inside "
                         f"torch.func transforms (vmap/grad); call it outside them")
    return True


def _clip_cov(logp, advantages, old_logp, mask, generator, eps_low, eps_high, clip_cov_ratio,
              clip_cov_lb, clip_cov_ub):
    lr, adv, m, lp = _prepare(logp, advantages, old_logp, mask)
    el, eh = _check_eps(eps_low, eps_high)
    ratio_ = check_positive(clip_cov_ratio, "clip_cov_ratio")
    lb, ub = check_number(clip_cov_lb, "clip_cov_lb"), check_number(clip_cov_ub, "clip_cov_ub")
    if not lb < ub:
        raise ValueError(f"clip_cov_lb: expected it below clip_cov_ub = {ub}, got {lb}")
    r = torch.exp(lr)
    pg1 = -adv * r
    pg2 = -adv * torch.clamp(r, 1.0 - el, 1.0 + eh)
    by_origin = (pg2 > pg1) & m                    # the PPO clip is active: already no gradient
    detached = torch.zeros_like(m)
    if _real_values(lp, "clip_cov"):
        check_generator(generator, lp.device)
        cov = _valid_cov(lp, adv, m)
        candidates = (cov < ub) & (cov > lb) & m & ~by_origin
        n_clip = max(int(ratio_ * int(m.sum())), 1)
        idx = candidates.reshape(-1).nonzero().squeeze(-1)          # row-major, as verl's
        if idx.numel():
            perm = torch.randperm(idx.numel(), generator=generator, device=generator.device)
            chosen = idx[perm[:n_clip].to(idx.device)]
            detached = detached.reshape(-1).index_fill(0, chosen, True).reshape(m.shape)
    loss = torch.where(detached, torch.zeros_like(pg1), torch.maximum(pg1, pg2))
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    cut = (detached | by_origin) & (adv != 0)
    return torch.where(m, loss, zero).to(logp.dtype), cut


@register("policy_loss", "clip_cov", side="trajectory", form="token",
          summary="PPO clip, and the gradient of a random few high-Cov(log π, A) tokens "
                  "detached (Clip-Cov)",
          reference="Cui et al. 2025 (arXiv:2505.22617)")
def clip_cov_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, *,
                  mask: Tensor | None = None, generator: torch.Generator | None = None,
                  eps_low: float = 0.2, eps_high: float | None = None,
                  clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0,
                  clip_cov_ub: float = 5.0) -> Tensor:
    """Clip-Cov (Cui et al. 2025, arXiv:2505.22617): PPO's clipped loss, with the gradient of a
    few high-covariance tokens cut.

    A softmax policy's entropy changes, to first order, by −Cov_{y~π}(log π(y), Δz_y) under
    a logit step Δz; for a policy-gradient step Δz ∝ π·Â, so tokens that are both likely
    and advantaged (large (log π − mean)(Â − mean)) drive the entropy down. Clip-Cov
    computes, over the valid tokens of the batch,

        c_t = (Â_t − mean Â)(log π_θ(y_t) − mean log π_θ),

    and among the tokens with c_t in (``clip_cov_lb``, ``clip_cov_ub``) whose PPO clip is not
    already active, picks max(1, ⌊``clip_cov_ratio`` · #valid tokens⌋) uniformly at random
    (with ``generator``: deterministic) and multiplies their loss by 0; the rest is
    ``ppo_clip``'s −max(−r Â, −clip(r, 1−ε_low, 1+ε_high) Â). The random choice is over the
    whole batch: a (B, T) call is not the same as B calls on single rows. ``clip_fraction``
    reports the detached tokens together with those the PPO clip cuts. Shapes (..., T).
    Factor of J(θ): trajectory. Not usable inside ``torch.func`` transforms (it reads values);
    on the meta device (shapes only) no token is detached.

    Reference: verl's ``compute_policy_loss_clip_cov`` (``core_algos.py``; defaults
    ``clip_cov_ratio`` 2e-4, bounds (1, 5)): the same selection, with ``torch.randperm`` of
    the global generator where pgbook takes ``generator`` (seeded alike, the two pick the
    same tokens).
    """
    return _clip_cov(logp, advantages, old_logp, mask, generator, eps_low, eps_high,
                     clip_cov_ratio, clip_cov_lb, clip_cov_ub)[0]


clip_cov_loss.clip_mask = lambda logp, advantages, old_logp, *, mask=None, generator=None, \
    eps_low=0.2, eps_high=None, clip_cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0: \
    _clip_cov(logp, advantages, old_logp, mask, generator, eps_low, eps_high, clip_cov_ratio,
              clip_cov_lb, clip_cov_ub)[1]


@register("policy_loss", "kl_cov", side="trajectory", form="token",
          summary="−r·A, plus β·|log r| on the top-k Cov(log π, A) tokens (KL-Cov)",
          reference="Cui et al. 2025 (arXiv:2505.22617)")
def kl_cov_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, *,
                mask: Tensor | None = None, kl_cov_ratio: float = 2e-4,
                ppo_kl_coef: float = 1.0) -> Tensor:
    """KL-Cov (Cui et al. 2025, arXiv:2505.22617), per token:

        ℓ_t = −r_t Â_t + β · |log r_t| · 1[t ∈ top-k of c],   r_t = π_θ(y_t)/π_old(y_t),

    with c_t the covariance term of :func:`clip_cov_loss` over the valid tokens of the batch
    and k = max(1, ⌊``kl_cov_ratio`` · #valid tokens⌋): the importance-weighted surrogate
    (no clip) with a KL-like penalty that holds the k highest-covariance tokens near π_old,
    β = ``ppo_kl_coef`` (the paper's 1; verl's config default is 0.1). Deterministic (a
    top-k, no randomness); the k largest are chosen over the whole batch. ``clip_fraction``
    reports 0 (no gradient is cut). Shapes (..., T). Factor of J(θ): trajectory.

    Reference: verl's ``compute_policy_loss_kl_cov`` (``core_algos.py``), the same formula
    and selection (``torch.topk``); verl's masked means add 1e-8 to the token count, and so
    does pgbook's covariance.
    """
    lr, adv, m, lp = _prepare(logp, advantages, old_logp, mask)
    ratio_ = check_positive(kl_cov_ratio, "kl_cov_ratio")
    coef = check_positive(ppo_kl_coef, "ppo_kl_coef", allow_zero=True)
    loss = -adv * torch.exp(lr)
    if _real_values(lp, "kl_cov"):
        cov = _valid_cov(lp, adv, m)
        valid = m.reshape(-1).nonzero().squeeze(-1)
        k = max(1, int(valid.numel() * ratio_))
        top = valid[torch.topk(cov.reshape(-1)[valid], min(k, valid.numel())).indices]
        chosen = torch.zeros(m.numel(), dtype=torch.bool, device=m.device).index_fill(
            0, top, True).reshape(m.shape)
        loss = torch.where(chosen, loss + coef * lr.abs(), loss)
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return torch.where(m, loss, zero).to(logp.dtype)


kl_cov_loss.clip_mask = cispo_loss.clip_mask


@register("policy_loss", "clip_higher", side="trajectory", form="token",
          summary="PPO clip with ε_high > ε_low (0.2, 0.28): DAPO's clip-higher",
          reference="Yu et al. 2025 (DAPO, arXiv:2503.14476)")
def clip_higher_loss(logp: Tensor, advantages: Tensor, old_logp: Tensor, eps_low: float = 0.2,
                     eps_high: float | None = 0.28, dual_clip: float | None = None) -> Tensor:
    """:func:`ppo_clip_loss` with DAPO's decoupled range as its default (Yu et al. 2025,
    arXiv:2503.14476): ε_low = 0.2, ε_high = 0.28. The upper clip caps how far one batch can
    raise a token's probability, π_θ ≤ (1 + ε_high) π_old: a token at π_old = 0.01 may reach
    0.0128, one at 0.9 is not limited at all (it cannot pass 1); raising ε_high lets
    unlikely tokens with a positive advantage grow more per batch. Factor of J(θ):
    trajectory. verl: ``clip_ratio_low``/``clip_ratio_high``; TRL: ``epsilon``/
    ``epsilon_high``."""
    return ppo_clip_loss(logp, advantages, old_logp, eps_low=eps_low, eps_high=eps_high,
                         dual_clip=dual_clip)
