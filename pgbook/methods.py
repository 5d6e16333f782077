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
from ._validate import (
    check_positive,
    check_same_device,
    check_tensor,
    keyword_names,
    unknown_options,
)
from .registry import get, method, register_label, register_method, resolve
from .reward import advantages as _adv
from .reward import baselines as _baselines  # noqa: F401  (registers the Part I baselines)
from .trajectory import losses as _losses
from .worlds import tasks as _tasks  # noqa: F401  (registers the verifiable rewards)

__all__ = ["loss_table", "method_config", "method_loss", "policy_loss", "shaped_rewards"]

# The bandit world's "mean over samples" (1/N) Σ_i A_i ∇log p_θ(τ_i) is, for responses of
# several tokens, the mean over responses of each response's *sum* of token terms
# (∇log p_θ(τ) = Σ_t ∇log π_θ(y_t|h_t), chapter 09); for one-token responses the two agree.
_AGG_ALIASES = {"sample_mean": "seq_mean_token_sum"}
# the options of policy_loss / method_loss themselves (suggested when one is misspelt)
_CALLER_OPTIONS = ("eps_low", "eps_high", "std_eps", "beta", "ref_logp", "max_tokens",
                   "aggregation", "kl", "loss")


def _check_bt(x: Tensor, name: str, ref: Tensor) -> None:
    check_tensor(x, name)
    if x.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (that of logp), "
                         f"got {tuple(x.shape)}")


def _options_for(fn, name: str, given: dict, caller=None) -> dict:
    """The options in ``given`` (None = not given) for the policy loss ``fn``, called as
    ``fn(logp, advantages, old_logp, **options)``; an option ``fn`` does not take is an
    error naming it (with ``caller``'s own keywords among the suggestions), never dropped."""
    given = {k: v for k, v in given.items() if v is not None}
    names, takes_any = keyword_names(fn, skip=3)
    if not takes_any:
        own = keyword_names(caller)[0] if caller is not None else []
        where = f"{caller.__name__}() with loss {name!r}" if caller is not None else name
        unknown_options(where, [k for k in given if k not in names],
                        [*names, *(k for k in own if k in _CALLER_OPTIONS)])
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
    options = _options_for(loss_fn, loss, {"eps_low": eps_low, "eps_high": eps_high,
                                           **loss_options}, policy_loss)

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


def shaped_rewards(kl: str, rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor,
                   beta: float) -> Tensor:
    """R_i − β Σ_t m_it · sg[k(log π(y_it), log π_ref(y_it))], shape (N,): the KL placed in
    the reward by the registered KL term ``kl`` of form ``"reward"`` ("k1_in_reward", or
    yours: ``fn(logp, ref_logp) -> per-token term``). ``logp`` is the sampling policy's
    (N, T). Factor of J(θ): reward. For "k1_in_reward" this is
    :func:`pgbook.kl.kl_in_reward` itself."""
    fn = resolve("kl", kl, "reward", what="kl")
    shaped = _kl.kl_in_reward(rewards, logp, ref_logp, mask, beta)   # validates; k1's value
    if kl == "k1_in_reward":
        return shaped
    m = mask.to(torch.bool)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    k = fn(torch.where(m, logp.detach(), zero), torch.where(m, ref_logp.detach().to(logp.dtype),
                                                            zero)).detach()
    return rewards - (beta * torch.where(m, k, zero).sum(-1)).to(rewards.dtype)


def method_config(name: str) -> dict:
    """The pieces of a registered method as used by the LLM loss: ``{"advantage",
    "policy_loss", "aggregation", "kl"}`` (resolved through its parents; the bandit
    aggregation "sample_mean" reads as "seq_mean_token_sum")."""
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
    _options_for(resolve("policy_loss", cfg["policy_loss"], "token", what="loss"),
                 cfg["policy_loss"], {"eps_low": eps_low, "eps_high": eps_high, **loss_options},
                 method_loss)
    if get("kl", kl).form == "reward":
        if beta > 0:
            if ref_logp is None:
                raise ValueError(f"ref_logp: method {name!r} puts the KL in the reward; with "
                                 "beta > 0 it needs the reference log-probs")
            sampler = logp.detach() if old_logp is None else old_logp
            rewards = shaped_rewards(kl, rewards, sampler, ref_logp, mask, beta)
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

# -- Part I: one step, contextual bandits ------------------------------------------------------
register_method("J(θ)", None, policy_loss="exact", advantage="none",
                aggregation="sample_mean", kl="none",
                fixes="the objective itself: exact but needs every trajectory", chapter="01")
register_method("REINFORCE", "J(θ)", policy_loss="score_function",
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
register_method("PPO-KL", "Off-policy PG (IS)", kl="kl_penalty",
                fixes="reusing one batch for many epochs drifts far from π_old, where the "
                      "importance-sampled surrogate no longer tracks J",
                chapter="07", reference="Schulman et al. 2017 (adaptive KL penalty)")
register_method("PPO-clip", "Off-policy PG (IS)", policy_loss="ppo_clip",
                fixes="the same drift, bounded without a β to tune: the ratio's gradient is "
                      "cut once it leaves [1 − ε, 1 + ε]",
                chapter="07", reference="Schulman et al. 2017")
register_method("PPO dual-clip", "PPO-clip", policy_loss="ppo_dual_clip",
                fixes="for A < 0 the clipped term min(rA, clip(r)A) = rA is unbounded as r grows",
                chapter="07", reference="Ye et al. 2020")

# -- Part II: groups and sequences --------------------------------------------------------------
register_method("REINFORCE (reward-to-go)", "REINFORCE", advantage="reward_to_go",
                fixes="every token is weighted by rewards paid before it, which it cannot "
                      "affect: pure noise in the weight",
                chapter="09", reference="Williams 1992; Sutton et al. 2000")
# -- chapter 10: critics -------------------------------------------------------------------------
register_method("Actor-critic (GAE)", "REINFORCE (reward-to-go)", advantage="gae",
                fixes="the exact V(h_t) that would remove the reward-to-go's noise is unknown: a "
                      "learned critic V_φ(h_t) is the baseline, and GAE(λ < 1) replaces the "
                      "future rewards by the critic's estimate (less variance, a bias through "
                      "the critic's error)",
                chapter="10", reference="Sutton et al. 2000; Konda & Tsitsiklis 2000; "
                                        "Schulman et al. 2016 (GAE, arXiv:1506.02438)")
register_method("PPO (value head, GAE)", "PPO-clip", advantage="gae", aggregation="token_mean",
                fixes="PPO-clip's advantage needs a value function of every prefix: a learned "
                      "critic (a second network of the policy's size), GAE over the response "
                      "tokens and a clipped value loss, with the token mean over the batch, as "
                      "LLM trainers ran PPO (TRL's PPOTrainer, verl)",
                chapter="12", reference="Schulman et al. 2017; Ouyang et al. 2022 "
                                        "(arXiv:2203.02155)")
# GRPO as its authors define it (Shao et al. 2024, eq. 3; TRL's GRPOTrainer with
# loss_type="grpo"): PPO with a critic, whose GAE advantage is replaced by the group z-score,
# each response's token terms averaged (1/|o_i|), and a k3 KL to π_ref added to every token's
# loss.
register_method("GRPO", "PPO (value head, GAE)", advantage="grpo", aggregation="seq_mean_token_mean",
                kl="k3_loss",
                fixes="PPO needs a learned critic V(x); the group's own rewards give a baseline "
                      "for free (the paper's recipe also averages each response's token terms "
                      "and adds a k3 KL to π_ref to the loss, not to the reward)",
                chapter="08", reference="Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300), eq. 3")
# RLOO as Ahmadian et al. and TRL's RLOOTrainer run it: leave-one-out advantage, the k1 KL of
# the sampling policy in the reward, each response's token terms summed (the sequence
# log-probability). TRL clips the sequence ratio Π_t r_t; pgbook clips per token: the two agree
# on the first update of a batch (every ratio 1), which is the only update TRL's default takes.
register_method("RLOO", "GRPO", advantage="rloo", aggregation="seq_mean_token_sum",
                kl="k1_in_reward",
                fixes="the group mean includes the sample itself: E[ĝ] = (G−1)/G ∇J; "
                      "leave-one-out removes it (and the KL goes back into the reward, whose "
                      "score-function gradient is the exact gradient of J − β·KL)",
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


# =============================================================================================
# Every loss on one page, drawn from the registry
# =============================================================================================
def _call(name: str, cfg: dict) -> str:
    """How pgbook computes one step of the method's loss (a Python expression)."""
    form = get("advantage", cfg["advantage"]).form
    if form in ("group", "batch"):
        kl = "" if cfg["kl"] == "none" else ", ref_logp=ref_logp, beta=β"
        return f'method_loss("{name}", logp, old_logp, R, mask, G{kl})'
    old = "None" if cfg["policy_loss"] == "score_function" else "old_logp"
    kl = "" if get("kl", cfg["kl"]).form != "token" else \
        f', ref_logp=ref_logp, kl="{cfg["kl"]}", beta=β'
    return (f'policy_loss(logp, {old}, Â, mask, loss="{cfg["policy_loss"]}", '
            f'aggregation="{cfg["aggregation"]}"{kl})')


def loss_table(names: list[str] | None = None, *, markdown: bool = False) -> list[dict] | str:
    """One row per method: the pieces of its per-token loss, read from the registry.

    Each row is a dict with ``method``, ``parent``, ``advantage``, ``policy_loss``,
    ``aggregation``, ``kl`` (each the registered component's summary, i.e. its formula),
    ``changed`` (``"kind: parent's → this"`` for each component that differs from the
    parent), ``side`` (:attr:`pgbook.registry.Method.axis`) and ``call`` (the pgbook call
    that computes the loss: :func:`method_loss` for group methods, :func:`policy_loss` with
    advantages Â from elsewhere otherwise). ``names`` default to every method whose policy
    loss is a registered function (the exact J(θ) has none). With ``markdown=True`` the rows
    come back as one Markdown table (a string).
    """
    from .registry import methods as _methods

    if names is None:
        names = [m.name for m in _methods()
                 if get("policy_loss", m.resolved_parts().get("policy_loss", "exact")).fn
                 is not None]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names: expected a list of method names, got {names!r}")
    rows = []
    for name in names:
        m = method(name)
        cfg = method_config(name)
        if get("policy_loss", cfg["policy_loss"]).fn is None:
            raise ValueError(f"names: method {name!r} has no policy loss to tabulate "
                             f"(its policy_loss is the label {cfg['policy_loss']!r})")
        rows.append(dict(
            method=name, parent=m.parent or "",
            **{k: get(k, cfg[k]).summary for k in ("advantage", "policy_loss", "aggregation",
                                                    "kl")},
            changed=", ".join(f"{k}: {a} → {b}" for k, (a, b) in m.changes().items()),
            side=m.axis, call=_call(name, cfg)))
    if not markdown:
        return rows
    cols = ("method", "advantage", "policy_loss", "aggregation", "kl", "side", "call")
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"

    def cell(k, v):
        v = v.replace("|", "\\|")
        return f"`{v}`" if k == "call" else v

    return head + "\n".join("| " + " | ".join(cell(k, r[k]) for k in cols) + " |" for r in rows)

# -- Part III: agentic RL (chapter 15) ---------------------------------------------------------
register_label("mask", "policy_tokens", side="trajectory",
               summary="the loss covers only the tokens the policy sampled: observation and tool "
                       "tokens, whose probabilities carry no θ, are masked out")
register_label("selection", "reward_variance_filter", side="trajectory",
               summary="keep only the groups whose rewards vary most (top fraction by std); "
                       "the others do not enter the update")
register_method("Multi-turn GRPO (tool-token mask)", "GRPO", mask="policy_tokens",
                fixes="an agent's trajectory interleaves its tokens with the environment's, whose "
                      "factors of p_θ(τ) carry no θ: scoring them adds advantage-weighted SFT on the "
                      "tool's output (a biased gradient that teaches the model to write tool "
                      "results); the policy-token mask keeps only the tokens the policy sampled",
                chapter="15",
                reference="Jin et al. 2025 (Search-R1, arXiv:2503.09516); "
                          "Wang et al. 2025 (RAGEN, arXiv:2504.20073)")
register_method("MT-GRPO", "Multi-turn GRPO (tool-token mask)", advantage="mt_grpo",
                fixes="one outcome advantage for every turn ignores a verifiable turn-level "
                      "reward: its group z-score is added to the turns up to the first tool result",
                chapter="15", reference="Zeng et al. 2025 (arXiv:2505.11821)")
register_method("GiGPO", "Multi-turn GRPO (tool-token mask)", advantage="gigpo",
                fixes="one episode advantage broadcast to every step: turns of the group that "
                      "start from the same observation (an anchor state) form a step-level group, "
                      "whose discounted returns give each step its own advantage, no extra rollouts",
                chapter="15", reference="Feng et al. 2025 (arXiv:2505.10978)")
register_method("Reward-variance filter (StarPO-S)", "Multi-turn GRPO (tool-token mask)",
                selection="reward_variance_filter",
                fixes="multi-turn training's reward variance collapses (the echo trap): only the "
                      "groups whose rewards vary most enter the update (StarPO-S's filter alone; "
                      "its critic and decoupled clip are not part of this method)",
                chapter="15", reference="Wang et al. 2025 (RAGEN, arXiv:2504.20073)")
