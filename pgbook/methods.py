"""Methods: the composed policy loss, and every named method of the book (the map).

One training step of every method in the book is the same pipeline of registered pieces
(:mod:`pgbook.registry`, in the style of verl's ``core_algos``):

    rewards R (N,)  ──[kl in reward?]──▶  R − β Σ_t sg[k1]                 reward side
                    ──[advantage]──────▶  Â (N,)  ──broadcast──▶ Â_{i,t}    reward side
    logp, old_logp ──[policy_loss]─────▶  ℓ_{i,t} (e.g. PPO clip)           trajectory side
                    ──[kl in loss?]────▶  ℓ_{i,t} + β k(logp, ref_logp)     trajectory side
                    ──[aggregation]────▶  scalar loss                       reward side

:func:`policy_loss` is the trajectory half plus the aggregation (it takes token-level
advantages you computed); :func:`method_loss` runs the whole pipeline for a named method,
resolving its pieces from the registry (:func:`method_config`). Losses are minimised.

The second half of this file *is* the map: every named method as a composition of pieces,
with its parent (the method whose failure it fixes), the failure, its chapter and paper.
A method's side is computed from the pieces in which it differs from its parent
(:meth:`pgbook.registry.Method.sides`), so the map in chapter 00 is drawn from this code.

Shapes: N = B responses (contiguous groups of G per prompt, see
:mod:`pgbook.reward.advantages`), T tokens; ``logp``, ``old_logp``, ``ref_logp``, ``mask``,
``advantages_tok`` are (B, T). Everything runs on the device and dtype of ``logp``.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from . import aggregation as _agg
from . import kl as _kl
from ._validate import check_positive, check_same_device, check_tensor
from .registry import get, method, register_label, register_method, resolve
from .reward import advantages as _adv
from .reward import baselines as _baselines  # noqa: F401  (registers the Part I baselines)
from .trajectory import losses as _losses
from .worlds import tasks as _tasks  # noqa: F401  (registers the verifiable rewards)

__all__ = ["method_config", "method_loss", "policy_loss"]

# The bandit world's "mean over samples" is, for responses of several tokens, the mean
# over every token of the batch (a bandit sample is a one-token response).
_AGG_ALIASES = {"sample_mean": "token_mean"}


def _check_bt(x: Tensor, name: str, ref: Tensor) -> None:
    check_tensor(x, name)
    if x.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (that of logp), "
                         f"got {tuple(x.shape)}")


def _options_for(fn, name: str, given: dict) -> dict:
    """The options in ``given`` (None = not given) for ``fn``; an option ``fn`` does not take
    is an error, never silently dropped."""
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(k for k in given if k not in params and not takes_any)
    if unknown:
        accepted = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY
                          or (p.default is not p.empty and k not in ("old_logp",)))
        raise ValueError(f"{name} takes no option {unknown} (its options: {accepted})")
    return given


def policy_loss(logp: Tensor, old_logp: Tensor | None, advantages_tok: Tensor, mask: Tensor, *,
                loss: str = "ppo_clip", aggregation: str = "seq_mean_token_mean",
                eps_low: float | None = None, eps_high: float | None = None,
                ref_logp: Tensor | None = None, kl: str = "none", beta: float = 0.0,
                max_tokens: int | None = None, **loss_options) -> tuple[Tensor, dict]:
    """The per-token policy loss, plus an optional KL term, aggregated to a scalar.

        L = aggregate( ℓ_loss(logp, Â, old_logp) + β · k_kl(logp, ref_logp),  mask,  aggregation )

    Args:
        logp: (B, T) log π_θ(y_t|h_t), differentiable
            (e.g. :func:`pgbook.trajectory.tokens.token_logprobs`).
        old_logp: (B, T) log π_old(y_t|h_t) of the sampling policy (detached inside), or
            ``None`` for on-policy (π_old = sg[π_θ]: ratio 1, PPO-clip = REINFORCE).
        advantages_tok: (B, T) Â_{i,t} (detached inside), e.g. from
            :func:`pgbook.reward.advantages.broadcast_to_tokens`.
        mask: (B, T) 0/1 or bool; only positions with mask 1 enter the loss (padding, prompt
            and tool tokens may hold any value, NaN included, without reaching the gradient).
        loss: a registered ``policy_loss`` ("ppo_clip", "importance_weighted",
            "score_function", "ppo_dual_clip", or yours). ``eps_low``/``eps_high`` (the clip
            range [1 − ε_low, 1 + ε_high]; default: the loss's own) and ``**loss_options``
            (e.g. ``dual_clip``) go to it; an option it does not take is an error.
        aggregation: a registered aggregation: "token_mean", "seq_mean_token_mean",
            "seq_mean_token_sum", "constant" (``max_tokens`` = L_max), or yours; see
            :mod:`pgbook.aggregation`.
        ref_logp, kl, beta: KL to a reference *in the loss*: ``kl`` in "k1_loss", "k2_loss",
            "k3_loss" (or "none"). KL in the reward ("k1_in_reward") is applied to the
            rewards before the advantages: use :func:`pgbook.kl.kl_in_reward` or
            :func:`method_loss`.

    Returns ``(loss, metrics)``: the scalar loss (dtype of ``logp``) and a dict of detached
    0-dim tensors, all token means over the mask: ``pg_loss`` (the policy term alone,
    aggregated like the loss), ``kl`` (the KL term's estimate, when a reference is given),
    ``clip_fraction`` (PPO clip active: the share of tokens whose gradient is zero),
    ``ratio_mean``, ``ratio_max``, ``approx_kl_old`` (k3 estimate between π_θ and π_old),
    ``tokens``.
    """
    check_tensor(logp, "logp", ndim=2, floating=True)
    _check_bt(advantages_tok, "advantages_tok", logp)
    _check_bt(mask, "mask", logp)
    check_same_device(logp=logp, advantages_tok=advantages_tok, mask=mask)
    if old_logp is None:
        old_logp = logp.detach()
    _check_bt(old_logp, "old_logp", logp)
    check_same_device(logp=logp, old_logp=old_logp)
    beta = check_positive(beta, "beta", allow_zero=True)
    loss_fn = resolve("policy_loss", loss, "token", what="loss")
    aggregation = _AGG_ALIASES.get(aggregation, aggregation)
    agg_fn = resolve("aggregation", aggregation, "token", what="aggregation")
    if kl != "none":
        kl_comp = get("kl", kl)
        if kl_comp.form != "token":
            raise ValueError(f"kl: {kl!r} is not a KL term of the loss (expected 'none' or one "
                             f"of 'k1_loss', 'k2_loss', 'k3_loss'); KL in the reward is applied "
                             f"to the rewards with pgbook.kl.kl_in_reward or method_loss")
    elif beta > 0:
        raise ValueError(f"beta: expected 0 when kl='none', got {beta} (choose kl='k3_loss', ...)")
    options = _options_for(loss_fn, f"loss {loss!r}",
                           {"eps_low": eps_low, "eps_high": eps_high, **loss_options})

    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # masked positions are replaced by harmless values *before* any exp/ratio, so that a
    # padded −inf or NaN can produce neither a NaN loss nor a NaN gradient
    lp = torch.where(m, logp, zero)
    old = torch.where(m, old_logp.detach().to(logp.dtype), zero)
    adv = torch.where(m, advantages_tok.detach().to(logp.dtype), zero)

    per_token = loss_fn(lp, adv, old, **options)
    pg = agg_fn(per_token, m, max_tokens)
    loss_value = pg
    metrics: dict = {}
    if kl != "none" and (beta > 0 or ref_logp is not None):
        if ref_logp is None:
            raise ValueError(f"ref_logp: kl={kl!r} with beta > 0 needs the reference log-probs")
        _check_bt(ref_logp, "ref_logp", logp)
        check_same_device(logp=logp, ref_logp=ref_logp)
        ref = torch.where(m, ref_logp.detach().to(logp.dtype), zero)
        k = get("kl", kl).fn(lp, ref)
        loss_value = agg_fn(per_token + beta * k, m, max_tokens)
        metrics["kl"] = _agg.token_mean(k.detach(), m)

    with torch.no_grad():
        r = _losses.ratio(lp.detach(), old)
        params = inspect.signature(loss_fn).parameters
        if "eps_low" in params:  # the clip range the loss used (its defaults where not given)
            el = options.get("eps_low", params["eps_low"].default)
            eh = options.get("eps_high", params["eps_high"].default if "eps_high" in params
                             else None)
            clipped = _losses.clip_fraction(lp.detach(), old, adv, el, el if eh is None else eh)
        else:                    # a loss without a clip never zeroes a token's gradient
            clipped = torch.zeros_like(m)
        metrics.update(
            pg_loss=pg.detach(),
            clip_fraction=_agg.token_mean(clipped.to(logp.dtype), m),
            ratio_mean=_agg.token_mean(r, m),
            ratio_max=torch.where(m, r, torch.full_like(r, -torch.inf)).max(),
            approx_kl_old=_agg.token_mean(_kl.kl_estimate(lp.detach(), old, "k3"), m),
            tokens=m.sum(),
        )
    return loss_value, metrics


def method_config(name: str) -> dict:
    """The pieces of a registered method as used by the LLM loss: ``{"advantage",
    "policy_loss", "aggregation", "kl"}`` (resolved through its parents; the bandit
    aggregation "sample_mean" reads as "token_mean")."""
    parts = dict(method(name).resolved_parts())
    cfg = {k: parts.get(k) for k in ("advantage", "policy_loss", "aggregation", "kl")}
    cfg["aggregation"] = _AGG_ALIASES.get(cfg["aggregation"], cfg["aggregation"])
    cfg["kl"] = cfg["kl"] or "none"
    return cfg


def method_loss(name: str, logp: Tensor, old_logp: Tensor | None, rewards: Tensor, mask: Tensor,
                group_size: int, *, ref_logp: Tensor | None = None, beta: float = 0.0,
                eps_low: float | None = None, eps_high: float | None = None,
                max_tokens: int | None = None, std_eps: float | None = None,
                **loss_options) -> tuple[Tensor, dict]:
    """The loss of a named method (e.g. ``"GRPO"``, ``"Dr. GRPO"``, ``"RLOO"``, or one you
    registered) from sequence rewards, by the pipeline of the module docstring.

    ``rewards`` (B,) in contiguous groups of ``group_size``; ``logp``/``old_logp``/``mask``/
    ``ref_logp`` (B, T). The method's advantage must be a registered group estimator (form
    ``"group"`` or ``"batch"``; a method with a critic, like PPO-clip, needs advantages from
    elsewhere: use :func:`policy_loss`). ``std_eps`` is the ε of a z-score advantage
    (σ_G + ε); ``eps_low``/``eps_high`` the clip range. With the KL in the reward
    ("k1_in_reward") the shaping uses the *sampling* policy's log-probs ``old_logp`` (the
    rollout's, as verl and TRL do), falling back to ``logp`` on-policy. ``metrics`` adds
    ``zero_variance_fraction`` and ``advantage_abs_mean`` to :func:`policy_loss`'s.
    """
    cfg = method_config(name)
    check_tensor(logp, "logp", ndim=2, floating=True)
    beta = check_positive(beta, "beta", allow_zero=True)
    kl = cfg["kl"]
    if kl == "none" and beta > 0:
        raise ValueError(f"beta: method {name!r} has no KL term (kl='none'), so beta must be 0, "
                         f"got {beta}")
    if kl == "kl_penalty":
        raise ValueError(f"method {name!r} uses PPO's KL penalty to π_old (bandit chapters), "
                         f"not a KL to a reference; use pgbook.train.ppo")
    adv_options = {} if std_eps is None else {"std_eps": std_eps}
    if get("kl", kl).form == "reward":
        if beta > 0:
            if ref_logp is None:
                raise ValueError(f"ref_logp: method {name!r} puts the KL in the reward; with "
                                 "beta > 0 it needs the reference log-probs")
            sampler = logp.detach() if old_logp is None else old_logp
            rewards = _kl.kl_in_reward(rewards, sampler, ref_logp, mask, beta)
        kl, beta_loss = "none", 0.0
    else:
        beta_loss = beta
    adv = _adv.compute_advantages(rewards, cfg["advantage"], group_size=group_size, mask=mask,
                                  **adv_options)
    adv_tok = adv.to(logp.dtype) * mask.to(logp.dtype) if adv.dim() == 2 else \
        _adv.broadcast_to_tokens(adv.to(logp.dtype), mask)
    loss, metrics = policy_loss(logp, old_logp, adv_tok, mask, loss=cfg["policy_loss"],
                                aggregation=cfg["aggregation"], eps_low=eps_low,
                                eps_high=eps_high, ref_logp=ref_logp if kl != "none" else None,
                                kl=kl, beta=beta_loss, max_tokens=max_tokens, **loss_options)
    with torch.no_grad():
        metrics["zero_variance_fraction"] = _adv.zero_variance_groups(rewards, group_size).to(
            logp.dtype).mean()
        metrics["advantage_abs_mean"] = adv.abs().to(logp.dtype).mean()
    return loss, metrics


# =============================================================================================
# The map: every named method, as a composition of registered pieces
# =============================================================================================
# Labels: choices a method makes that the library does not call as functions.
register_label("policy_loss", "exact", side="trajectory",
               summary="∇J by enumerating every trajectory (no sampling)")
register_label("aggregation", "sample_mean", side="reward", summary="(1/N) Σ_i over samples")
register_label("aggregation", "self_normalised", side="trajectory",
               summary="Σ_i w_i(·) / Σ_i w_i: divide by the sum of importance weights, not N")
register_label("data", "on_policy", side="trajectory",
               summary="samples drawn from the current policy π_θ")
register_label("data", "dataset", side="trajectory",
               summary="a fixed dataset of (s, a) pairs (demonstrations), not drawn from π_θ")
register_label("data", "behaviour_policy", side="trajectory",
               summary="samples drawn from a fixed behaviour policy μ, reweighted by π_θ/μ")
register_label("step", "gradient", side="trajectory",
               summary="θ ← θ + η ∇J: the Euclidean proximal step")
register_label("step", "natural", side="trajectory",
               summary="θ ← θ + η F⁻¹∇J: the KL proximal step (natural gradient)")
register_label("kl", "kl_constraint", side="trajectory",
               summary="maximise the surrogate subject to KL(π_old‖π_θ) ≤ δ (a trust region: "
                       "the natural direction scaled to KL = δ, then a backtracking line search)")

# -- Part I: one step, contextual bandits ------------------------------------------------------
register_method("J(θ)", None, policy_loss="exact", advantage="none",
                aggregation="sample_mean", kl="none",
                fixes="the objective itself: exact but needs every trajectory", chapter="01")
register_method("REINFORCE", "J(θ)", policy_loss="score_function", data="on_policy",
                step="gradient",
                fixes="∇J needs a sum over all trajectories: the log-derivative trick makes it "
                      "an expectation under p_θ that samples can estimate",
                chapter="02", reference="Williams 1992")
register_method("REINFORCE + baseline", "REINFORCE", advantage="value",
                fixes="high variance when rewards are far from zero", chapter="03",
                reference="Williams 1992; Greensmith et al. 2004")
register_method("SFT (weighted MLE, A = 1)", "REINFORCE", advantage="unit", data="dataset",
                fixes="no reward to weight samples: learn from given demonstrations; the "
                      "weighted-MLE view of REINFORCE with every weight one",
                chapter="04")
register_method("Off-policy PG (IS)", "REINFORCE + baseline", data="behaviour_policy",
                policy_loss="importance_weighted",
                fixes="every update needs fresh samples from π_θ: importance weights π_θ/μ "
                      "reuse samples from another policy μ (unbiased; the variance grows with "
                      "the divergence of π_θ from μ)",
                chapter="05", reference="Kahn & Marshall 1953; Precup et al. 2000")
register_method("Off-policy PG (SNIS)", "Off-policy PG (IS)", aggregation="self_normalised",
                fixes="ordinary IS is unstable when a few weights are large: dividing by Σ w "
                      "bounds the estimate (biased by O(1/N), consistent)",
                chapter="05", reference="Hesterberg 1995; Owen 2013 (Monte Carlo theory, ch. 9)")
register_method("Natural PG", "REINFORCE + baseline", step="natural",
                fixes="a Euclidean step in θ moves p_θ by very different amounts in different "
                      "directions: measure the step by the KL it causes (Fisher metric)",
                chapter="06", reference="Kakade 2001; Amari 1998")
register_method("Rejection-sampling FT", "SFT (weighted MLE, A = 1)",
                advantage="success", data="on_policy",
                fixes="SFT needs demonstrations: the policy's own samples, filtered by the "
                      "reward (keep R = 1, weight 1), make the data; one SFT step on them is a "
                      "REINFORCE step on the binary reward rescaled by N/K",
                chapter="04", reference="Anthony et al. 2017 (expert iteration); Zelikman et al. "
                                        "2022 (STaR, arXiv:2203.14465); Yuan et al. 2023 (RFT, "
                                        "arXiv:2308.01825)")
# TRPO: the natural-gradient step of ch 06 on an importance-sampled surrogate of θ_old's
# batch, with the KL as a hard constraint; PPO is its first-order version (ch 07).
register_method("TRPO", "Natural PG", data="behaviour_policy", policy_loss="importance_weighted",
                kl="kl_constraint",
                fixes="a fixed natural step η F⁻¹∇J can still move the policy too far: fix the "
                      "distance instead, KL(π_old‖π_θ) ≤ δ, and reuse π_old's samples through the "
                      "importance-sampled surrogate",
                chapter="06", reference="Schulman et al. 2015 (arXiv:1502.05477)")
register_method("PPO-KL", "TRPO", step="gradient", kl="kl_penalty",
                fixes="TRPO needs F⁻¹∇J (conjugate gradient, a second-order solve) and a line "
                      "search: first-order steps (many epochs of Adam on one batch) with the KL "
                      "as a penalty β·KL instead of a constraint",
                chapter="07", reference="Schulman et al. 2017 (arXiv:1707.06347; adaptive KL "
                                        "penalty)")
register_method("PPO-clip", "TRPO", step="gradient", kl="none", policy_loss="ppo_clip",
                fixes="the same first-order TRPO, bounded without a β to tune: the ratio's "
                      "gradient is cut once it leaves [1 − ε, 1 + ε]",
                chapter="07", reference="Schulman et al. 2017 (arXiv:1707.06347)")
register_method("PPO dual-clip", "PPO-clip", policy_loss="ppo_dual_clip",
                fixes="for A < 0 the clipped term min(rA, clip(r)A) = rA is unbounded as r grows",
                chapter="07", reference="Ye et al. 2020")

# -- Part II: groups and sequences --------------------------------------------------------------
register_method("REINFORCE (reward-to-go)", "REINFORCE", advantage="reward_to_go",
                fixes="every token is weighted by rewards paid before it, which it cannot "
                      "affect: pure noise in the weight",
                chapter="09", reference="Williams 1992; Sutton et al. 2000")
# GRPO as the survey states it: PPO-clip with the critic's advantage replaced by the group
# z-score, nothing else.
register_method("GRPO", "PPO-clip", advantage="grpo",
                fixes="PPO needs a learned critic V(x); the group's own rewards give a baseline "
                      "for free",
                chapter="08", reference="Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300)")
register_method("GRPO (DeepSeekMath)", "GRPO", aggregation="seq_mean_token_mean", kl="k3_loss",
                fixes="the full recipe of the paper: per-sequence token means and a k3 KL loss "
                      "to π_ref",
                chapter="12", reference="Shao et al. 2024, eq. 3 and 4")
register_method("RLOO", "GRPO", advantage="rloo",
                fixes="the group mean includes the sample itself: E[ĝ] = (G−1)/G ∇J; "
                      "leave-one-out removes it",
                chapter="08", reference="Kool et al. 2019; Ahmadian et al. 2024 (arXiv:2402.14740)")
register_method("Dr. GRPO", "GRPO", advantage="grpo_mean", aggregation="constant",
                fixes="std division reweights prompts by difficulty; per-sequence means bias "
                      "length",
                chapter="13", reference="Liu et al. 2025 (arXiv:2503.20783)")
register_method("REINFORCE++-baseline", "GRPO", advantage="grpo_batch_std",
                fixes="per-group std over-weights nearly solved and nearly impossible prompts; "
                      "one batch-wide scale keeps the group-mean baseline without that "
                      "reweighting",
                chapter="13", reference="Hu 2025 (arXiv:2501.03262)")
