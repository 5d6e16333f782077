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

from collections.abc import Mapping

import torch
from torch import Tensor

from . import aggregation as _agg
from . import kl as _kl
from ._validate import (
    check_finite_where,
    check_flag,
    check_mask,
    check_positive,
    check_positive_int,
    check_same_device,
    check_tensor,
    keyword_names,
    parameters,
    unknown_options,
    values_checked,
)
from .registry import Method, get, method, register_label, register_method, resolve
from .reward import advantages as _adv
from .reward import baselines as _baselines  # noqa: F401  (registers the Part I baselines)
from .reward import teacher as _teacher
from .trajectory import corrections as _corr
from .trajectory import losses as _losses
from .worlds import tasks as _tasks  # noqa: F401  (registers the verifiable rewards)

__all__ = ["compose", "loss_table", "map_table", "method_config", "method_loss", "policy_loss",
           "shaped_rewards"]

# The bandit world's "mean over samples" (1/N) Σ_i A_i ∇log p_θ(τ_i) is, for responses of
# several tokens, the mean over responses of each response's *sum* of token terms
# (∇log p_θ(τ) = Σ_t ∇log π_θ(y_t|h_t), chapter 09); for one-token responses the two agree.
_AGG_ALIASES = {"sample_mean": "seq_mean_token_sum"}
# the options of policy_loss / method_loss themselves (suggested when one is misspelt)
_CALLER_OPTIONS = ("eps_low", "eps_high", "std_eps", "beta", "ref_logp", "max_tokens",
                   "aggregation", "kl", "loss", "sampler_logp", "correction",
                   "correction_max", "correction_min")


def _check_bt(x: Tensor, name: str, ref: Tensor, floating: bool = True) -> None:
    check_tensor(x, name, floating=floating)
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
                max_tokens: int | None = None, sampler_logp: Tensor | None = None,
                correction: str = "none", correction_max: float | None = 2.0,
                correction_min: float | None = None, **loss_options) -> tuple[Tensor, dict]:
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
        sampler_logp, correction, correction_max, correction_min: the rollout engine's own
            log-probs log μ(y_t|h_t) (B, T), when the sampler is not the trainer (chapter
            14), and the registered correction that reweights the policy term by
            ρ = π_old/μ: "none" (default: only the mismatch is measured),
            "token_truncate" (TIS), "token_mask" (MIS/IcePop), "sequence_truncate",
            "sequence_mask" (:mod:`pgbook.trajectory.corrections`; bounds [C_min, C_max] =
            [``correction_min``, ``correction_max``]). The weights multiply ℓ_loss, not the
            KL term.

    The loss protocol: a registered loss is called as ``fn(logp, Â, old_logp,
    **options)`` on masked-to-zero inputs; one that takes a ``mask`` keyword also gets the
    (B, T) bool mask (losses with a sequence structure, e.g. "gspo", "gmpo", "clip_cov");
    ``generator`` (a ``torch.Generator``) is an ordinary option, for losses that choose
    tokens at random ("clip_cov"). A loss with a ``clip_mask`` attribute (a function of the
    same arguments returning where its gradient is cut) reports that as ``clip_fraction``.

    Returns ``(loss, metrics)``: the scalar loss (dtype of ``logp``) and a dict of detached
    0-dim tensors, all token means over the mask: ``pg_loss`` (the policy term alone,
    aggregated like the loss), ``kl`` (the KL term's estimate, when a reference is given),
    ``clip_fraction`` (PPO clip active: the share of tokens whose gradient is zero),
    ``ratio_mean``, ``ratio_max``, ``approx_kl_old`` (k3 estimate between π_θ and π_old),
    ``tokens``; with ``sampler_logp``, the correction's diagnostics prefixed ``sampler_``
    (:func:`pgbook.trajectory.corrections.correction_stats`: ``sampler_mismatch_kl``,
    ``sampler_weight_ess``, ...).
    """
    check_tensor(logp, "logp", ndim=2, floating=True)
    _check_bt(advantages_tok, "advantages_tok", logp)
    _check_bt(mask, "mask", logp, floating=False)
    check_mask(mask, "mask")
    check_same_device(logp=logp, advantages_tok=advantages_tok, mask=mask)
    if old_logp is None:
        old_logp = logp.detach()
    _check_bt(old_logp, "old_logp", logp)
    check_same_device(logp=logp, old_logp=old_logp)
    beta = check_positive(beta, "beta", allow_zero=True)
    if max_tokens is not None:   # read by "constant" only, but never a bad value ignored
        check_positive_int(max_tokens, "max_tokens")
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
    if correction != "none" and sampler_logp is None:
        raise ValueError(f"sampler_logp: correction={correction!r} needs the sampler's log-probs")
    if sampler_logp is not None:
        _check_bt(sampler_logp, "sampler_logp", logp)
        check_same_device(logp=logp, sampler_logp=sampler_logp)
        if correction != "none":
            resolve("correction", correction, "weights", what="correction")

    m = mask.to(torch.bool)
    if "mask" in keyword_names(loss_fn, skip=3)[0]:
        options["mask"] = m
    gen = options.get("generator")
    gen_state = gen.get_state() if isinstance(gen, torch.Generator) else None
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # masked positions are replaced by harmless values *before* any exp/ratio, so that a
    # padded −inf or NaN can produce neither a NaN loss nor a NaN gradient
    lp = torch.where(m, logp, zero)
    old = torch.where(m, old_logp.detach().to(logp.dtype), zero)
    adv = torch.where(m, advantages_tok.detach().to(logp.dtype), zero)

    per_token = loss_fn(lp, adv, old, **options)
    metrics: dict = {}
    if sampler_logp is not None:
        w = _corr.correction_weights(old, sampler_logp, m, correction, correction_max,
                                     correction_min)
        per_token = per_token * w.to(per_token.dtype)
        metrics.update({f"sampler_{k}": v for k, v in
                        _corr.correction_stats(w, old, sampler_logp, m).items()})
    if kl != "none" and (beta > 0 or ref_logp is not None):
        if ref_logp is None:
            raise ValueError(f"ref_logp: kl={kl!r} with beta > 0 needs the reference log-probs")
        _check_bt(ref_logp, "ref_logp", logp)
        check_same_device(logp=logp, ref_logp=ref_logp)
        ref = torch.where(m, ref_logp.detach().to(logp.dtype), zero)
        k = get("kl", kl).fn(lp, ref)
        total = check_finite_where(per_token + beta * k, m, "per_token_loss")
    else:
        k = None
        total = check_finite_where(per_token, m, "per_token_loss")
    # every value below is computed from checked ones: none is read again to check it
    with values_checked():
        pg = agg_fn(per_token, m, max_tokens)
        loss_value = pg if k is None else agg_fn(total, m, max_tokens)
        if k is not None:
            metrics["kl"] = _agg.token_mean(k.detach(), m)
        with torch.no_grad():
            metrics.update(_loss_metrics(loss_fn, options, gen, gen_state, lp, adv, old, m, pg))
    return loss_value, metrics


def _loss_metrics(loss_fn, options: dict, gen, gen_state, lp: Tensor, adv: Tensor, old: Tensor,
                  m: Tensor, pg: Tensor) -> dict:
    """:func:`policy_loss`'s diagnostics (masked inputs, bool mask, the aggregated loss)."""
    r = _losses.ratio(lp.detach(), old)
    params = parameters(loss_fn)
    if hasattr(loss_fn, "clip_mask"):   # the loss says where its gradient is cut
        opts = dict(options)
        if gen_state is not None:       # the same random choice as the loss made
            opts["generator"] = torch.Generator(device=gen.device)
            opts["generator"].set_state(gen_state)
        clipped = loss_fn.clip_mask(lp.detach(), adv, old, **opts)
    elif "eps_low" in params:  # the clip range the loss used (its defaults where not given)
        el = options.get("eps_low", params["eps_low"].default)
        eh = options.get("eps_high", params["eps_high"].default if "eps_high" in params
                         else None)
        clipped = _losses.clip_fraction(lp.detach(), old, adv, el, el if eh is None else eh)
    else:                    # a loss without a clip never zeroes a token's gradient
        clipped = torch.zeros_like(m)
    return dict(
        pg_loss=pg.detach(),
        clip_fraction=_agg.token_mean(clipped.to(lp.dtype), m),
        ratio_mean=_agg.token_mean(r, m),
        ratio_max=torch.where(m, r, torch.full_like(r, -torch.inf)).max(),
        approx_kl_old=_agg.token_mean(_kl.kl_estimate(lp.detach(), old, "k3"), m),
        tokens=m.sum(),
    )


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
                sampler_logp: Tensor | None = None, correction_max: float | None = 2.0,
                correction_min: float | None = None, teacher_logp: Tensor | None = None,
                teacher_coef: float = 1.0, **loss_options) -> tuple[Tensor, dict]:
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
    A method with a sampler/trainer correction (e.g. "GRPO + TIS") needs the sampler's
    log-probs ``sampler_logp`` (B, T) (bounds ``correction_max``/``correction_min``); given
    to any other method they are only measured (:func:`policy_loss`).

    A method with a ``teacher`` part (chapter 16: "OPD", "GRPO-OPD", ...) needs
    ``teacher_logp`` (B, T), the teacher's log-probs of the sampled tokens: its per-token
    advantage (from the sampling policy's log-probs) is added to the group advantage after
    the normalisation, times ``teacher_coef`` λ and the method's ``teacher_gate``
    (:func:`pgbook.reward.teacher.mix_teacher`).
    """
    cfg = method_config(name)
    parts = method(name).resolved_parts()
    if parts.get("teacher") is None and teacher_logp is not None:
        raise ValueError(f"teacher_logp: method {name!r} has no teacher signal; use a method "
                         f"with one (e.g. 'OPD', 'GRPO-OPD')")
    if parts.get("teacher") is not None and teacher_logp is None:
        raise ValueError(f"teacher_logp: method {name!r} adds a teacher's per-token term "
                         f"({parts['teacher']!r}); it needs the teacher's log-probs (B, T)")
    teacher_coef = check_positive(teacher_coef, "teacher_coef", allow_zero=True)
    if parts.get("teacher") is None and teacher_coef != 1.0:
        raise ValueError(f"teacher_coef: method {name!r} has no teacher's term to weigh; "
                         f"expected the default 1.0, got {teacher_coef}")
    check_tensor(logp, "logp", ndim=2, floating=True)
    _check_bt(mask, "mask", logp, floating=False)
    check_mask(mask, "mask")
    check_same_device(logp=logp, mask=mask)
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
    verifier_rewards = rewards                           # the teacher's gate reads them unshaped
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
    correction = method(name).resolved_parts().get("correction", "none")
    if correction != "none" and sampler_logp is None:
        raise ValueError(f"sampler_logp: method {name!r} corrects for the sampler "
                         f"({correction!r}) and needs the sampler's log-probs")
    if teacher_logp is not None:
        sampler = logp.detach() if old_logp is None else old_logp
        signal = resolve("teacher", parts["teacher"], "token", what="teacher")
        gate = _teacher.teacher_gate(verifier_rewards, group_size,
                                     parts.get("teacher_gate") or "always")
        adv_tok = _teacher.mix_teacher(adv_tok, signal(sampler, teacher_logp, mask), mask,
                                       coef=teacher_coef, gate=gate)
    loss, metrics = policy_loss(logp, old_logp, adv_tok, mask, loss=cfg["policy_loss"],
                                aggregation=cfg["aggregation"], eps_low=eps_low,
                                eps_high=eps_high, ref_logp=ref_logp if kl != "none" else None,
                                kl=kl, beta=beta_loss, max_tokens=max_tokens,
                                sampler_logp=sampler_logp, correction=correction,
                                correction_max=correction_max, correction_min=correction_min,
                                **loss_options)
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
# REINFORCE++-baseline as verl's example recipe runs it
# (examples/reinforce_plus_plus_trainer/run_qwen2-7b_math_rf_baseline.sh): the token-whitened
# group-mean advantage, the k1 KL in the reward (use_kl_in_reward=True, no KL loss), and
# verl's default token-mean aggregation.
register_method("REINFORCE++-baseline", "GRPO", advantage="reinforce_pp_baseline",
                aggregation="token_mean", kl="k1_in_reward",
                fixes="per-group std over-weights nearly solved and nearly impossible prompts; "
                      "one batch-wide scale (whitening over the batch's tokens) keeps the "
                      "group-mean baseline without that reweighting",
                chapter="13", reference="Hu et al. 2025 (arXiv:2501.03262)")

# -- Part III: the reward side after GRPO (chapter 13) ------------------------------------------
# Each method names the method whose failure it fixes; the pieces it changes say which factor
# of J(θ) it touches. Reward shaping ("shaping") and token-level credit ("token_credit") are
# pieces of pgbook.reward.shaping that grpo_train applies when a method has them.
from .reward import shaping as _shaping  # noqa: E402,F401  (registers shaping and token credit)

register_method("REINFORCE++", "PPO-clip", advantage="reinforce_plus_plus", kl="k1_in_reward",
                fixes="PPO's critic is a second network trained from a terminal reward; "
                      "REINFORCE++ keeps PPO's clip and replaces the critic by token returns "
                      "(the KL to π_ref in the reward) whitened over the whole batch",
                chapter="13", reference="Hu 2025 (arXiv:2501.03262)")
register_method("ReMax", "REINFORCE + baseline", advantage="remax",
                fixes="the value baseline V(x) needs a critic for a language model; the reward "
                      "of the greedy response to the same prompt is a baseline that does not "
                      "depend on the sample (one extra greedy rollout per prompt)",
                chapter="13", reference="Li et al. 2023 (arXiv:2310.10505)")
register_method("DAPO (token-level loss)", "GRPO", aggregation="token_mean",
                fixes="per-sequence token means weigh a token by 1/|y|: correct answers are "
                      "pushed shorter and wrong ones longer; one mean over the batch's tokens "
                      "(its normaliser still holds the response's own length)",
                chapter="13", reference="Yu et al. 2025 (DAPO, arXiv:2503.14476)")
register_method("DAPO (overlong filtering)", "GRPO", shaping="overlong_mask",
                fixes="a response cut by the budget is scored as wrong, which punishes a "
                      "possibly right answer: truncated responses leave the loss",
                chapter="13", reference="Yu et al. 2025 (DAPO, arXiv:2503.14476)")
register_method("DAPO (soft overlong penalty)", "GRPO", shaping="overlong_soft",
                fixes="the same truncation noise, and no pressure to finish in budget: a "
                      "penalty that grows over the last L_cache tokens of the budget",
                chapter="13", reference="Yu et al. 2025 (DAPO, arXiv:2503.14476)")
register_method("OPO", "GRPO", advantage="opo", data="on_policy",
                fixes="the group mean is not the variance-optimal baseline, and reusing a batch "
                      "for several steps is off-policy: a length-weighted baseline and exactly "
                      "one gradient step per batch",
                chapter="13", reference="Hao et al. 2025 (arXiv:2505.23585)")
register_method("GPG", "GRPO", advantage="gpg", policy_loss="score_function", kl="none",
                aggregation="token_mean",
                fixes="zero-variance groups dilute the batch's gradient, and the clipped "
                      "surrogate is unneeded on-policy: the plain policy gradient with the "
                      "group mean baseline, rescaled by the share of useful responses",
                chapter="13", reference="Chu et al. 2025 (arXiv:2504.02546)")
register_method("GRPO pass@k (verl)", "GRPO", advantage="grpo_passk",
                fixes="pass@1 training sharpens onto one answer and pass@k falls: only the "
                      "group's best response is reinforced (an estimate of ∇pass@G)",
                chapter="13", reference="Tang et al. 2025 (arXiv:2503.19595); verl grpo_passk")
register_method("Pass@k training", "GRPO", advantage="passk_analytic",
                fixes="the same sharpening: analytic group advantages of the pass@k reward",
                chapter="13", reference="Chen et al. 2025 (arXiv:2508.10751)")
register_method("PKPO", "RLOO", advantage="pkpo",
                fixes="the same sharpening, with an unbiased estimate of ∇pass@k for any k ≤ G "
                      "(RLOO is its k = 1 case)",
                chapter="13", reference="Walder & Karkhanis 2025 (arXiv:2505.15201)")
register_method("Forking tokens (80/20)", "DAPO (token-level loss)", token_credit="top_entropy",
                fixes="every token of a response gets the same advantage, though most are "
                      "near-deterministic: only the top 20% entropy tokens are updated",
                chapter="13", reference="Wang et al. 2025 (arXiv:2506.01939)")
register_method("GTPO (entropy-weighted)", "DAPO (token-level loss)",
                token_credit="entropy_weighted",
                fixes="the same uniform credit: a response's advantage is shared out over its "
                      "tokens in proportion to their entropy",
                chapter="13", reference="Tan et al. 2025 (arXiv:2508.04349)")



# -- Part III: the trajectory side after GRPO (chapter 14) ------------------------------------
# DAPO as its authors run it (Yu et al. 2025): clip-higher, the token mean, dynamic sampling,
# no KL, and the soft overlong penalty of chapter 13 (a reward-side piece).
register_label("data", "dynamic_sampling", side="trajectory",
               summary="groups whose G rewards are all equal are dropped and the batch refilled "
                       "with fresh ones (DAPO's dynamic sampling)")
register_method("DAPO", "GRPO", policy_loss="clip_higher", aggregation="token_mean", kl="none",
                data="dynamic_sampling", shaping="overlong_soft",
                fixes="the symmetric clip caps how fast unlikely tokens can grow (entropy "
                      "collapse); zero-variance groups shrink the batch; per-sequence means "
                      "under-weight long responses; the KL to π_ref holds back long reasoning; "
                      "truncated responses are scored as wrong",
                chapter="14", reference="Yu et al. 2025 (DAPO, arXiv:2503.14476)")
register_method("GSPO", "GRPO", policy_loss="gspo", aggregation="seq_mean_token_mean",
                fixes="a ratio per token weighs each token by one sample of π_θ/π_old, whose "
                      "noise (MoE routing, numerics) compounds along a response; one "
                      "length-normalised sequence ratio per response, clipped as a whole",
                chapter="14", reference="Zheng et al. 2025 (GSPO, arXiv:2507.18071)")
register_method("GSPO-token", "GSPO", policy_loss="gspo_token",
                fixes="GSPO shares one advantage across a response; GSPO-token keeps the "
                      "sequence ratio's value with a per-token gradient, so advantages may vary "
                      "by token",
                chapter="14", reference="Zheng et al. 2025 (GSPO, arXiv:2507.18071), §4.3")
register_method("GMPO", "GRPO", policy_loss="gmpo", aggregation="seq_mean_token_mean",
                fixes="an arithmetic mean of token ratios is dominated by outliers, so the clip "
                      "must be narrow; a geometric mean tolerates a wider (log-space) clip",
                chapter="14", reference="Zhao et al. 2025 (GMPO, arXiv:2507.20673)")
register_method("CISPO", "GRPO", policy_loss="cispo", aggregation="token_mean",
                fixes="after a few epochs PPO's clip zeroes the gradient of rare tokens whose "
                      "ratio has grown; a clipped, detached IS weight bounds the step but keeps "
                      "every token's gradient",
                chapter="14", reference="MiniMax 2025 (MiniMax-M1, arXiv:2506.13585)")
register_method("Clip-Cov", "GRPO", policy_loss="clip_cov",
                fixes="entropy falls when likely tokens get positive advantages "
                      "(Cov(log π, A) > 0); detaching a few high-covariance tokens keeps it",
                chapter="14", reference="Cui et al. 2025 (arXiv:2505.22617)")
register_method("KL-Cov", "GRPO", policy_loss="kl_cov",
                fixes="the same entropy collapse; a KL-like penalty on the highest-covariance "
                      "tokens holds them near π_old",
                chapter="14", reference="Cui et al. 2025 (arXiv:2505.22617)")
register_method("SAPO", "GRPO", policy_loss="sapo", aggregation="seq_mean_token_mean",
                fixes="a hard clip cuts a token's gradient at a threshold (and GSPO's cuts a "
                      "whole response); a sigmoid gate fades it smoothly",
                chapter="14", reference="Gao et al. 2025 (SAPO, arXiv:2511.20347)")
register_method("GRPO + TIS", "GRPO", correction="token_truncate",
                fixes="the inference engine samples from μ ≠ π_old (precision, kernels, "
                      "routing): the 'on-policy' update is off-policy; token weights "
                      "min(π_old/μ, C) correct it, partly",
                chapter="14", reference="Yao, Liu et al. 2025 (truncated importance sampling)")
register_method("GRPO + IcePop", "GRPO", correction="token_mask",
                fixes="the same mismatch; tokens whose π_old/μ leaves [C_min, C_max] are masked "
                      "out instead of truncated",
                chapter="14", reference="Ring-1T (IcePop, arXiv:2510.18855)")


# -- Part III: on-policy distillation (chapter 16) ----------------------------------------------
# A teacher π_T scores every token the student samples; its log-ratio is a dense, stop-gradient
# reward (pgbook.reward.teacher), so each of these methods changes only the reward factor of
# J(θ). grpo_train adds the teacher's term when a method has a "teacher" part (and a teacher
# model is given). Divergence distillation (GKD, MiniLLM; pgbook.trajectory.distill) replaces R
# by a divergence and is left off the map: the boundary case of chapter 16.

# OPD as the Thinking Machines / Tinker recipe runs it (tinker-cookbook
# distillation/train_on_policy.py): no verifier term, A_t = −(log π_θ − log π_T)(y_t) with
# discount 0, an importance-sampled policy-gradient loss summed over tokens. pgbook keeps
# GRPO's per-token clip (inactive on the first epoch, the only one Tinker's default takes) and
# its k3 KL to π_ref (β = 0 gives Tinker's loss).
register_method("OPD", "GRPO", advantage="zero", teacher="reverse_kl",
                aggregation="seq_mean_token_sum",
                fixes="a verifier gives one bit per response, and nothing at all in a group "
                      "whose responses all fail: a teacher's log-ratio "
                      "r_t = sg[log π_T − log π_θ](y_t) scores every token the student samples",
                chapter="16", reference="Agarwal et al. 2023 (arXiv:2306.13649); Thinking "
                                        "Machines, on-policy distillation (2025); Qwen3 "
                                        "(arXiv:2505.09388)")
register_method("GRPO-OPD", "OPD", advantage="grpo",
                fixes="under pure distillation the student converges to its teacher: it cannot "
                      "pass it and copies its errors; the verifier's group advantage is added "
                      "back, Â_t = Â^GRPO + λ r_t",
                chapter="16", reference="Thinking Machines, on-policy distillation (2025): "
                                        "Tinker adds the teacher's term to the group-centred "
                                        "environment reward")
register_method("GRPO-OPD (all-fail gate)", "GRPO-OPD", teacher_gate="all_fail",
                fixes="the teacher's term pulls towards the teacher wherever it is added, also "
                      "where the verifier already has a signal (and the teacher is wrong): it is "
                      "added only to groups in which every response failed, where GRPO has none",
                chapter="16")


# =============================================================================================
# Every loss on one page, drawn from the registry
# =============================================================================================
def _call(name: str, cfg: dict) -> str:
    """How pgbook computes one step of the method's loss (a Python expression)."""
    form = get("advantage", cfg["advantage"]).form
    if form in ("group", "batch"):
        kl = "" if cfg["kl"] == "none" else ", ref_logp=ref_logp, beta=β"
        if method(name).resolved_parts().get("teacher") is not None:
            kl += ", teacher_logp=teacher_logp, teacher_coef=λ"
        return f'method_loss("{name}", logp, old_logp, R, mask, G{kl})'
    old = "None" if cfg["policy_loss"] == "score_function" else "old_logp"
    kl = "" if get("kl", cfg["kl"]).form != "token" else \
        f', ref_logp=ref_logp, kl="{cfg["kl"]}", beta=β'
    return (f'policy_loss(logp, {old}, Â, mask, loss="{cfg["policy_loss"]}", '
            f'aggregation="{cfg["aggregation"]}"{kl})')


def _check_table_options(names, markdown) -> None:
    """The options shared by :func:`loss_table` and :func:`map_table`."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or \
            not all(isinstance(n, str) for n in names):
        raise ValueError(f"names: expected a list of method names, got {names!r}")
    if not isinstance(markdown, bool):
        raise ValueError(f"markdown: expected True or False, got {markdown!r}")


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
    _check_table_options(names, markdown)
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


# =============================================================================================
# Compositions (chapter 17): one choice per side of J(θ), registered as a method
# =============================================================================================
def _side_parts(choice, side: str, parent: str, what: str) -> dict:
    """The pieces ``choice`` stands for on ``side``: a registered method's pieces on that side
    in which it differs from ``parent``, or a dict {kind: component} checked to lie on it."""
    if isinstance(choice, str):
        mine = method(choice).resolved_parts() if choice in _method_names() else None
        if mine is None:
            raise ValueError(f"{what}: expected a registered method or a dict {{kind: "
                             f"component}}, got {choice!r} (methods: {sorted(_method_names())})")
        theirs = method(parent).resolved_parts()
        parts = {k: v for k, v in mine.items() if theirs.get(k) != v and get(k, v).side == side}
        if not parts:
            changed = sorted(k for k, v in mine.items() if theirs.get(k) != v)
            raise ValueError(f"{what}: method {choice!r} changes no {side}-side piece "
                             f"relative to the new method's parent {parent!r} (compose's "
                             f"parent={parent!r}, the pieces compared against; {choice!r} "
                             f"differs from it in {changed})")
        return parts
    if not isinstance(choice, Mapping) or not choice:
        raise ValueError(f"{what}: expected a registered method or a non-empty dict {{kind: "
                         f"component}}, got {choice!r}")
    for kind, name in choice.items():
        comp = get(kind, name)     # a ValueError naming the kind or listing the names
        if comp.side != side:
            raise ValueError(f"{what}: expected {side}-side pieces, got {kind}={name!r}, which "
                             f"changes the {comp.side} factor of J(θ)")
    return dict(choice)


def _choice_label(choice, parts: dict, side: str) -> str:
    if isinstance(choice, str):
        return f"the {side} side of {choice}"
    return f"the {side} pieces " + ", ".join(f"{k}={v}" for k, v in parts.items())


def _method_names() -> set:
    from .registry import methods as _methods

    return {m.name for m in _methods()}


def compose(name: str, *, reward: str | Mapping[str, str], trajectory: str | Mapping[str, str],
            parent: str = "GRPO", fixes: str = "", chapter: str = "", reference: str = "",
            replace: bool = False) -> Method:
    """Register, and return, the method that takes its **reward-side** pieces from one choice
    and its **trajectory-side** pieces from another: a point of the map reached along both
    axes at once (chapter 17's playground).

    ``reward`` and ``trajectory`` are each a registered method's name, standing for the
    pieces *on that side* in which the method differs from ``parent`` (e.g. ``reward="Dr.
    GRPO"`` is {advantage: grpo_mean, aggregation: constant}; ``trajectory="DAPO"`` is
    {policy_loss: clip_higher, kl: none, data: dynamic_sampling}: DAPO's token mean and
    overlong penalty are reward-side, so they are not taken), or a dict {kind: component
    name} whose components must all lie on that side. The method is registered as a child of
    ``parent`` (:func:`pgbook.registry.register_method`) with those pieces; its side is then
    computed like any other's ("both" when each choice changes something).

    A kind set by both choices (e.g. a KL in the reward from one, no KL from the other) is an
    error naming it; so is a choice with no piece on its side, a component on the wrong
    side, or a name taken by a method with other parts (unless ``replace=True``; composing
    the same method again returns it). ``fixes`` defaults to a sentence naming the two
    choices. Every trainer that takes a method by name (``grpo_train``, ``grpo_seqlm``,
    ``method_loss``) then trains it.
    """
    check_flag(replace, "replace")
    if not isinstance(parent, str) or parent not in _method_names():
        raise ValueError(f"parent: expected a registered method, got {parent!r}")
    r_parts = _side_parts(reward, "reward", parent, "reward")
    t_parts = _side_parts(trajectory, "trajectory", parent, "trajectory")
    clash = sorted(set(r_parts) & set(t_parts))
    if clash:
        k = clash[0]
        raise ValueError(f"trajectory: both choices set {k} ({r_parts[k]!r} from reward, "
                         f"{t_parts[k]!r} from trajectory); pass dicts to choose one")
    if not isinstance(fixes, str):
        raise ValueError(f"fixes: expected a string, got {fixes!r}")
    fixes = fixes or (f"a composition: {_choice_label(reward, r_parts, 'reward')} with "
                      f"{_choice_label(trajectory, t_parts, 'trajectory')}")
    return register_method(name, parent, fixes=fixes, chapter=chapter, reference=reference,
                           replace=replace, **r_parts, **t_parts)


def map_table(names: list[str] | None = None, *, markdown: bool = False) -> list[dict] | str:
    """The map as a table, read from the registry: one row per method (default: every
    registered method, parents before children) with ``method``, ``parent``, ``changed``
    (``"kind: parent's → this"`` per piece that differs), ``side``
    (:attr:`pgbook.registry.Method.axis`), ``chapter``, ``fixes`` (the failure of the parent
    it addresses) and ``paper`` (its reference). With ``markdown=True`` the rows come back as
    one Markdown table (a string) without the ``fixes`` column, a compact index of the book.
    """
    from .registry import methods as _methods

    if names is None:
        names = [m.name for m in _methods()]
    _check_table_options(names, markdown)
    rows = []
    for name in names:
        m = method(name)
        rows.append(dict(method=name, parent=m.parent or "—",
                         changed=", ".join(f"{k}: {a} → {b}" for k, (a, b) in m.changes().items())
                         or "—", side=m.axis, chapter=m.chapter or "—", fixes=m.fixes,
                         paper=m.reference or "—"))
    if not markdown:
        return rows
    cols = ("method", "parent", "changed", "side", "chapter", "paper")
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(r[k].replace("|", "\\|") for k in cols) + " |"
                             for r in rows)
