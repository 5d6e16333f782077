"""The composed LLM policy loss, and the named methods of the GRPO family.

One training step of every method in the GRPO family is the same pipeline of registered
pieces (in the style of verl's ``core_algos``):

    rewards R (N,)  ──[kl in reward?]──▶  R − β Σ_t sg[k1]                 reward side
                    ──[advantage]──────▶  Â (N,)  ──broadcast──▶ Â_{i,t}    reward side
    logp, old_logp ──[policy_loss]─────▶  ℓ_{i,t} (e.g. PPO clip)           trajectory side
                    ──[kl in loss?]────▶  ℓ_{i,t} + β k(logp, ref_logp)     trajectory side
                    ──[aggregation]────▶  scalar loss                       reward side

:func:`policy_loss` is the trajectory half plus the aggregation (it takes token-level
advantages you computed); :func:`method_loss` runs the whole pipeline for a named method,
resolving its pieces from the registry (:func:`method_config`). Losses are minimised.

Shapes: N = B responses (contiguous groups of G per prompt, see :mod:`pgbook.advantages`),
T tokens; ``logp``, ``old_logp``, ``ref_logp``, ``mask``, ``advantages_tok`` are (B, T).
Everything runs on the device and dtype of ``logp``.
"""

from __future__ import annotations

import importlib
import inspect

import torch
from torch import Tensor

from . import advantages as _adv
from . import aggregation as _agg
from . import losses as _losses
from ._validate import check_positive, check_same_device, check_tensor
from .registry import _METHODS, get, method, register_method

# The bandit world's "mean over samples" is, for responses of several tokens, the mean
# over every token of the batch (a bandit sample is a one-token response).
_AGG_ALIASES = {"sample_mean": "token_mean"}


def _check_bt(x: Tensor, name: str, ref: Tensor) -> None:
    check_tensor(x, name)
    if x.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (that of logp), "
                         f"got {tuple(x.shape)}")


def _loss_options(fn, given: dict) -> dict:
    """The options ``fn`` accepts, from ``given``."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in given.items() if k in params}


def policy_loss(logp: Tensor, old_logp: Tensor | None, advantages_tok: Tensor, mask: Tensor, *,
                loss: str = "ppo_clip", aggregation: str = "seq_mean_token_mean",
                eps_low: float = 0.2, eps_high: float | None = None,
                ref_logp: Tensor | None = None, kl: str = "none", beta: float = 0.0,
                max_tokens: int | None = None, **loss_options) -> tuple[Tensor, dict]:
    """The per-token policy loss, plus an optional KL term, aggregated to a scalar.

        L = aggregate( ℓ_loss(logp, Â, old_logp) + β · k_kl(logp, ref_logp),  mask,  aggregation )

    Args:
        logp: (B, T) log π_θ(y_t|h_t), differentiable (e.g. :func:`pgbook.tokens.token_logprobs`).
        old_logp: (B, T) log π_old(y_t|h_t) of the sampling policy (detached inside), or
            ``None`` for on-policy (π_old = sg[π_θ]: ratio 1, PPO-clip = REINFORCE).
        advantages_tok: (B, T) Â_{i,t} (detached inside), e.g. from
            :func:`pgbook.advantages.broadcast_to_tokens`.
        mask: (B, T) 0/1 or bool; only positions with mask 1 enter the loss (padding, prompt
            and tool tokens may hold any value, NaN included, without reaching the gradient).
        loss: a registered ``policy_loss`` ("ppo_clip", "importance_weighted",
            "score_function", ...); ``eps_low``/``eps_high`` and ``**loss_options`` (e.g.
            ``dual_clip``) go to it when it accepts them.
        aggregation: "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"
            (``max_tokens`` = L_max for "constant"); see :mod:`pgbook.aggregation`.
        ref_logp, kl, beta: KL to a reference *in the loss*: ``kl`` in "k1_loss", "k2_loss",
            "k3_loss" (or "none"). KL in the reward ("k1_in_reward") is applied to the
            rewards before the advantages: use :func:`pgbook.losses.kl_in_reward` or
            :func:`method_loss`.

    Returns ``(loss, metrics)``: the scalar loss (dtype of ``logp``) and a dict of detached
    0-dim tensors, all token means over the mask: ``pg_loss`` (the policy term alone,
    aggregated like the loss), ``kl`` (the KL term's estimate, when a reference is given),
    ``clip_fraction`` (PPO clip active), ``ratio_mean``, ``ratio_max``, ``approx_kl_old``
    (k3 estimate between π_θ and π_old), ``tokens``.
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
    comp = get("policy_loss", loss)
    if comp.fn is None:
        raise ValueError(f"loss: {loss!r} is a label with no per-token function")
    aggregation = _AGG_ALIASES.get(aggregation, aggregation)
    if aggregation not in _agg.AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {sorted(_agg.AGGREGATIONS)}, "
                         f"got {aggregation!r}")
    kl_comp = get("kl", kl)
    if kl != "none":
        if kl_comp.side != "trajectory" or kl_comp.fn is None:
            raise ValueError(f"kl: {kl!r} is not a KL term of the loss (expected one of "
                             "'none', 'k1_loss', 'k2_loss', 'k3_loss'); KL in the reward is "
                             "applied to the rewards with pgbook.losses.kl_in_reward")
    elif beta > 0:
        raise ValueError(f"beta: expected 0 when kl='none', got {beta} (choose kl='k3_loss', ...)")
    unknown = set(loss_options) - set(inspect.signature(comp.fn).parameters)
    if unknown:
        raise ValueError(f"loss_options: {sorted(unknown)} not accepted by policy_loss/{loss}")

    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # masked positions are replaced by harmless values *before* any exp/ratio, so that a
    # padded −inf or NaN can produce neither a NaN loss nor a NaN gradient
    lp = torch.where(m, logp, zero)
    old = torch.where(m, old_logp.detach().to(logp.dtype), zero)
    adv = torch.where(m, advantages_tok.detach().to(logp.dtype), zero)

    options = _loss_options(comp.fn, {"eps_low": eps_low, "eps_high": eps_high, **loss_options})
    per_token = comp.fn(lp, adv, old, **options)
    pg = _agg.aggregate(per_token, m, aggregation, max_tokens)
    total = per_token
    metrics: dict = {}
    if kl != "none" and (beta > 0 or ref_logp is not None):
        if ref_logp is None:
            raise ValueError(f"ref_logp: kl={kl!r} with beta > 0 needs the reference log-probs")
        _check_bt(ref_logp, "ref_logp", logp)
        check_same_device(logp=logp, ref_logp=ref_logp)
        ref = torch.where(m, ref_logp.detach().to(logp.dtype), zero)
        k = kl_comp.fn(lp, ref)
        total = per_token + beta * k
        metrics["kl"] = _agg.token_mean(k.detach(), m)
    loss_value = _agg.aggregate(total, m, aggregation, max_tokens) if total is not per_token else pg

    with torch.no_grad():
        r = _losses.ratio(lp.detach(), old)
        eh = eps_low if eps_high is None else eps_high
        clipped = _losses.clip_fraction(lp.detach(), old, adv, eps_low, eh)
        metrics.update(
            pg_loss=pg.detach(),
            clip_fraction=_agg.token_mean(clipped.to(logp.dtype), m),
            ratio_mean=_agg.token_mean(r, m),
            ratio_max=torch.where(m, r, torch.full_like(r, -torch.inf)).max(),
            approx_kl_old=_agg.token_mean(_losses.kl_estimate(lp.detach(), old, "k3"), m),
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
                eps_low: float = 0.2, eps_high: float | None = None,
                max_tokens: int | None = None, eps: float = 1e-6,
                **loss_options) -> tuple[Tensor, dict]:
    """The loss of a named method (e.g. ``"GRPO"``, ``"Dr. GRPO"``, ``"RLOO"``) from
    sequence rewards, by the pipeline of the module docstring.

    ``rewards`` (B,) in contiguous groups of ``group_size``; ``logp``/``old_logp``/``mask``/
    ``ref_logp`` (B, T). The method's advantage must be one of
    :data:`pgbook.advantages.GROUP_ADVANTAGES` (a method with a critic, like PPO-clip, needs
    advantages from elsewhere: use :func:`policy_loss`). ``metrics`` adds
    ``zero_variance_fraction`` and ``advantage_abs_mean`` to :func:`policy_loss`'s.
    """
    cfg = method_config(name)
    if cfg["advantage"] not in _adv.GROUP_ADVANTAGES:
        raise ValueError(
            f"method {name!r}: its advantage {cfg['advantage']!r} is not a group estimator "
            f"({sorted(_adv.GROUP_ADVANTAGES)}); compute advantages yourself and call policy_loss"
        )
    check_tensor(logp, "logp", ndim=2, floating=True)
    kl = cfg["kl"]
    if kl == "none" and beta > 0:
        raise ValueError(f"beta: method {name!r} has no KL term (kl='none'), so beta must be 0, "
                         f"got {beta}")
    if kl == "k1_in_reward":
        if beta > 0:
            if ref_logp is None:
                raise ValueError(f"ref_logp: method {name!r} puts the KL in the reward; with "
                                 "beta > 0 it needs the reference log-probs")
            rewards = _losses.kl_in_reward(rewards, logp, ref_logp, mask, beta)
        kl, beta_loss = "none", 0.0
    else:
        beta_loss = beta
    adv = _adv.GROUP_ADVANTAGES[cfg["advantage"]](rewards, group_size, eps)
    adv_tok = _adv.broadcast_to_tokens(adv.to(logp.dtype), mask)
    loss, metrics = policy_loss(logp, old_logp, adv_tok, mask, loss=cfg["policy_loss"],
                                aggregation=cfg["aggregation"], eps_low=eps_low,
                                eps_high=eps_high, ref_logp=ref_logp if kl != "none" else None,
                                kl=kl, beta=beta_loss, max_tokens=max_tokens, **loss_options)
    with torch.no_grad():
        metrics["zero_variance_fraction"] = _adv.zero_variance_groups(rewards, group_size).to(
            logp.dtype).mean()
        metrics["advantage_abs_mean"] = adv.abs().to(logp.dtype).mean()
    return loss, metrics


# -- the GRPO family as compositions ----------------------------------------------------------
def _ppo_parent() -> str:
    """'PPO-clip' (registered by pgbook.ppo, chapter 07) if it exists, else the fallback."""
    if "PPO-clip" not in _METHODS:
        try:
            importlib.import_module("pgbook.ppo")
        except ModuleNotFoundError as e:
            if e.name != "pgbook.ppo":
                raise
    return "PPO-clip" if "PPO-clip" in _METHODS else "REINFORCE + baseline"


_PARENT = _ppo_parent()
# GRPO as the survey states it: PPO-clip with the critic's advantage replaced by the group
# z-score, nothing else. If PPO-clip is not registered, the fallback parent has no clip, so
# GRPO must add it too (and the map will show a trajectory-side change as well).
register_method(
    "GRPO", _PARENT, advantage="grpo",
    **({} if _PARENT == "PPO-clip" else {"policy_loss": "ppo_clip"}),
    fixes="PPO needs a learned critic V(x); the group's own rewards give a baseline for free",
    chapter="08", reference="Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300)")
register_method(
    "GRPO (DeepSeekMath)", "GRPO", aggregation="seq_mean_token_mean", kl="k3_loss",
    fixes="the full recipe of the paper: per-sequence token means and a k3 KL loss to π_ref",
    chapter="11", reference="Shao et al. 2024, eq. 3 and 4")
register_method(
    "RLOO", "GRPO", advantage="rloo",
    fixes="the group mean includes the sample itself: E[ĝ] = (G−1)/G ∇J; leave-one-out "
          "removes it",
    chapter="08", reference="Kool et al. 2019; Ahmadian et al. 2024 (arXiv:2402.14740)")
register_method(
    "Dr. GRPO", "GRPO", advantage="grpo_mean", aggregation="constant",
    fixes="std division reweights prompts by difficulty; per-sequence means bias length",
    chapter="12", reference="Liu et al. 2025 (arXiv:2503.20783)")
register_method(
    "REINFORCE++-baseline", "GRPO", advantage="grpo_batch_std",
    fixes="per-group std over-weights nearly solved and nearly impossible prompts; one "
          "batch-wide scale keeps the group-mean baseline without that reweighting",
    chapter="12", reference="Hu 2025 (arXiv:2501.03262)")


__all__ = ["method_config", "method_loss", "policy_loss"]
