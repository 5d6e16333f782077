"""Critics: a value function V(h_t) as the baseline, TD residuals and GAE (reward side).

With prefixes as states, a language model is an MDP: the state is h_t = (x, y_<t), the
action the next token y_t, and appending it is a deterministic transition. The token-level
policy gradient (chapter 09) then reads

    ∇J = E[ Σ_t m_t A(h_t, y_t) ∇log π_θ(y_t | h_t) ],        A(h_t, y_t) = Q(h_t, y_t) − V(h_t),
    Q(h_t, y_t) = r_t + γ V(h_{t+1}),                          V(h_t) = E_{y_t ~ π_θ}[Q(h_t, y_t)],

and a *critic* V̂ ≈ V estimates the advantage from one sampled response through the
temporal-difference (TD) residuals and their exponentially weighted sum, the generalised
advantage estimator GAE(λ) (Schulman et al. 2016, arXiv:1506.02438):

    δ_t = r_t + γ V̂(h_{t+1}) − V̂(h_t),         Â_t = Σ_{l ≥ 0} (γλ)^l δ_{t+l},
    λ = 1:  Â_t = Σ_l γ^l r_{t+l} − V̂(h_t)      (Monte-Carlo return minus a baseline)
    λ = 0:  Â_t = δ_t                            (one-step TD: the critic replaces the future)

With γ = 1, λ = 1 leaves ∇J unbiased whatever the critic (V̂(h_t) is a baseline: it does not
depend on y_t); λ < 1 trades the variance of the future rewards for a bias through the
critic's error, which vanishes when V̂ = V (chapter 10 measures both exactly). The
*returns* R̂_t = Â_t + V̂(h_t) (the λ-return) are the regression target of the critic,
trained with :func:`value_loss`. Factor of J(θ): reward (everything here changes the
stop-gradient scalar that multiplies ∇log π_θ(y_t|h_t), never p_θ).

Conventions (those of verl's ``compute_gae_advantage_return``, verl/trainer/ppo/core_algos.py,
which adapts TRL's ``PPOTrainer``):

* ``token_rewards`` r (B, T): the reward paid at each response token; an outcome reward sits
  on the last response token (EOS, or position T − 1 for a response cut at T), a KL in the
  reward on every token.
* ``values`` (B, T): V̂(h_t) at each response position t, the critic's prediction *before*
  token t is chosen. After the last unmasked token of a row the bootstrap value is 0: the
  response ended (verl and TRL treat a response cut at T the same way). Or ``values``
  (B, T + 1): the last column is each row's bootstrap value, used after its last unmasked
  token (0 for a response that ended, V̂ of the cut prefix for one truncated at T).
* ``mask`` (B, T) 0/1: positions with m_t = 0 (prompt, padding after EOS, tool output in an
  agentic trajectory) are *skipped*: their reward and value are ignored, the TD residual of
  a token uses the value of the next unmasked token (γ applied once, however many masked
  positions lie between), and the GAE sum runs over unmasked tokens only. This is verl's
  rule. pgbook returns 0 at masked positions (verl leaves there the advantage of the next
  unmasked token, and its returns hold the value; its losses mask both out).
* ``whiten=True`` normalises the advantages over the mask of the whole batch,
  Â ← (Â − mean) / sqrt(var + var_eps) with the Bessel-corrected variance and var_eps =
  1e-8, exactly as verl's ``compute_gae_advantage_return`` (``masked_whiten``) and TRL's
  PPO trainer always do; the returns are computed before whitening. The default is
  ``whiten=False``: the estimator the book analyses (whitening divides by a batch
  statistic, a rescaled step rather than a different direction in expectation).

Shapes (B, T); everything runs on the device of the inputs and computes in float32 for
float16/bfloat16 inputs (float64 for float64), returning the inputs' dtype. The recursion
is a reverse scan over the T positions, batched over B (as in verl and TRL).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validate import (
    _is_meta,
    check_finite,
    check_finite_where,
    check_mask,
    check_positive,
    check_same_device,
    check_tensor,
    work_dtype,
)
from ..registry import register, resolve

__all__ = [
    "gae",
    "td_residuals",
    "value_loss",
    "whiten",
]


def _unit_interval(x, name: str) -> float:
    v = check_positive(x, name, allow_zero=True)
    if v > 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {v}")
    return v


def _prepare(token_rewards: Tensor, values: Tensor, mask: Tensor):
    """Validate (B, T) rewards, (B, T) or (B, T + 1) values and a (B, T) mask; return the
    rewards and values in the working dtype (values always (B, T + 1), bootstrap last),
    the boolean mask and the output dtype."""
    check_tensor(token_rewards, "token_rewards", ndim=2, floating=True)
    check_tensor(values, "values", ndim=2, floating=True)
    B, T = token_rewards.shape
    if T == 0:
        raise ValueError("token_rewards: expected at least one position, got shape "
                         f"{tuple(token_rewards.shape)}")
    if values.shape not in ((B, T), (B, T + 1)):
        raise ValueError(f"values: expected shape ({B}, {T}) (V(h_t) per position, bootstrap 0 "
                         f"after the last token) or ({B}, {T + 1}) (last column: the bootstrap "
                         f"value), got {tuple(values.shape)}")
    check_tensor(mask, "mask", ndim=2)
    check_mask(mask, "mask", (B, T))
    check_same_device(token_rewards=token_rewards, values=values, mask=mask)
    check_finite(token_rewards, "token_rewards")
    check_finite(values, "values")
    out = torch.promote_types(token_rewards.dtype, values.dtype)
    work = work_dtype(out)
    r = token_rewards.to(work)
    v = values.to(work)
    if v.shape[1] == T:
        v = torch.cat([v, v.new_zeros(B, 1)], 1)
    return r, v, mask.to(torch.bool), out


def _scan(r: Tensor, v: Tensor, m: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """The reverse scan: TD residuals δ (B, T) and GAE advantages Â (B, T), 0 off the mask.

    ``next_v`` is V̂ of the next *unmasked* position (the bootstrap column at first);
    ``last`` is Â of the next unmasked position (0 after the last one)."""
    B, T = r.shape
    zero = r.new_zeros(())
    next_v = v[:, T]
    last = r.new_zeros(B)
    deltas, advs = [], []
    for t in range(T - 1, -1, -1):
        mt = m[:, t]
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = torch.where(mt, delta + gamma * lam * last, last)
        next_v = torch.where(mt, v[:, t], next_v)
        deltas.append(torch.where(mt, delta, zero))
        advs.append(torch.where(mt, last, zero))
    return torch.stack(deltas[::-1], 1), torch.stack(advs[::-1], 1)


def td_residuals(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """TD residuals δ_t = r_t + γ V̂(h_{t+1}) − V̂(h_t), shape (B, T), 0 where the mask is 0.

    ``values`` (B, T) with bootstrap 0 after each row's last unmasked token, or (B, T + 1)
    with the bootstrap value in the last column; V̂(h_{t+1}) is the value of the next
    *unmasked* position (module docstring). With the exact V, E[δ_t | h_t, y_t] =
    A(h_t, y_t): the one-step advantage. Equals ``gae(..., lam=0)``'s advantages.
    Factor of J(θ): reward.
    """
    gamma = _unit_interval(gamma, "gamma")
    r, v, m, out = _prepare(token_rewards, values, mask)
    return _scan(r, v, m, gamma, 0.0)[0].to(out)


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, var_eps: float = 1e-8) -> Tensor:
    """(x − mean) / sqrt(var + var_eps) with the mean and the Bessel-corrected variance over the
    mask of the whole batch (verl's and TRL's ``masked_whiten``; like verl's ``masked_mean``
    the means divide by Σ m + 1e-8), shape of ``x``; with
    ``shift_mean=False`` the mean is added back. Positions off the mask are transformed
    too (their values are not used for the statistics). Needs at least two unmasked
    entries. Computes in float32 for low-precision ``x``; returns ``x``'s dtype.
    """
    check_tensor(x, "x", floating=True)
    check_mask(mask, "mask", tuple(x.shape))
    check_same_device(x=x, mask=mask)
    check_finite(x, "x")
    if not isinstance(shift_mean, bool):
        raise ValueError(f"shift_mean: expected True or False, got {shift_mean!r}")
    var_eps = check_positive(var_eps, "var_eps", allow_zero=True)
    xw = x.to(work_dtype(x.dtype))
    m = mask.to(xw.dtype)
    n = m.sum()
    if not _is_meta(mask) and float(n) < 2:
        raise ValueError(f"mask: whitening needs at least 2 unmasked entries (a Bessel-corrected "
                         f"variance), got {int(n)}")
    # verl's masked_mean divides by (Σ m + 1e-8); kept, so that the result is verl's to the bit
    mean = (xw * m).sum() / (n + 1e-8)
    var = ((xw - mean).pow(2) * m).sum() / (n + 1e-8) * (n / (n - 1))
    w = (xw - mean) * torch.rsqrt(var + var_eps)
    if not shift_mean:
        w = w + mean
    return w.to(x.dtype)


@register("advantage", "gae", side="reward", form="critic",
          summary="Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γV(h_{t+1}) − V(h_t) (a critic)",
          reference="Schulman et al. 2016 (GAE, arXiv:1506.02438)")
def gae(token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 1.0, *, whiten: bool = False, var_eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation: ``(advantages, returns)``, each (B, T).

        δ_t = r_t + γ V̂(h_{t+1}) − V̂(h_t),     Â_t = Σ_{l≥0} (γλ)^l δ_{t+l}  (= δ_t + γλ Â_{t+1}),
        R̂_t = Â_t + V̂(h_t)                      (the λ-return: the critic's regression target)

    over the unmasked tokens of each row, 0 where the mask is 0 (conventions, bootstrap and
    masking rules in the module docstring). ``gamma`` γ ∈ [0, 1] and ``lam`` λ ∈ [0, 1]
    (verl's defaults: both 1; TRL's: γ = 1, λ = 0.95). ``whiten=True`` whitens the advantages
    over the batch (:func:`whiten`, ``var_eps`` inside the square root) as verl and TRL do;
    the returns are never whitened.

    Equal to verl's ``compute_gae_advantage_return`` on every unmasked position (with
    ``whiten=True``; verl always whitens), and to its returns there. Factor of J(θ): reward.
    """
    gamma = _unit_interval(gamma, "gamma")
    lam = _unit_interval(lam, "lam")
    if not isinstance(whiten, bool):
        raise ValueError(f"whiten: expected True or False, got {whiten!r}")
    r, v, m, out = _prepare(token_rewards, values, mask)
    _, adv = _scan(r, v, m, gamma, lam)
    zero = adv.new_zeros(())
    returns = torch.where(m, adv + v[:, :-1], zero)
    if whiten:
        adv = torch.where(m, _whiten(adv, m, var_eps=var_eps), zero)
    return adv.to(out), returns.to(out)


_whiten = whiten  # the function, under a name the keyword argument of gae does not shadow


def value_loss(values: Tensor, returns: Tensor, mask: Tensor, *, old_values: Tensor | None = None,
               eps_value: float | None = None, aggregation: str = "token_mean"
               ) -> tuple[Tensor, dict]:
    """The critic's regression loss, with PPO's optional value clipping: ``(loss, metrics)``.

        ℓ_t = ½ (V_φ(h_t) − R̂_t)²                                              (no clip)
        ℓ_t = ½ max( (V_φ − R̂_t)², (clip(V_φ, V_old − ε_v, V_old + ε_v) − R̂_t)² )   (eps_value = ε_v)

    aggregated over the mask (``aggregation``: a registered aggregation, default
    ``"token_mean"``, verl's default and TRL's ``masked_mean``). This is verl's
    ``compute_value_loss`` (``cliprange_value``; verl/trainer/ppo/core_algos.py) and TRL's
    PPO ``vf_loss``: the clip keeps the new prediction within ε_v of the prediction made
    when the batch was sampled, and the max makes it a pessimistic bound, like PPO's policy
    clip. ``values`` (B, T) V_φ(h_t), differentiable; ``returns`` (B, T) the targets R̂
    (detached inside; e.g. :func:`gae`'s returns); ``old_values`` (B, T) the critic's values
    at sampling time (needed with ``eps_value``). ``metrics``: ``clip_fraction`` (share of
    unmasked tokens where the clipped term is larger, verl's ``vf_clipfrac``) and
    ``value_error`` (root mean square of V_φ − R̂ over the mask), detached 0-dim tensors.
    Trains the critic, not the policy: it changes neither factor of J(θ) directly; the
    critic it trains enters the reward side through :func:`gae`.
    """
    check_tensor(values, "values", ndim=2, floating=True)
    check_tensor(returns, "returns", ndim=2, floating=True)
    if returns.shape != values.shape:
        raise ValueError(f"returns: expected shape {tuple(values.shape)} (that of values), got "
                         f"{tuple(returns.shape)}")
    check_mask(mask, "mask", tuple(values.shape))
    check_same_device(values=values, returns=returns, mask=mask)
    check_finite_where(values, mask, "values")
    check_finite(returns, "returns")
    agg = resolve("aggregation", aggregation, "token", what="aggregation")
    m = mask.to(torch.bool)
    zero = values.new_zeros(())
    v = torch.where(m, values, zero)
    ret = torch.where(m, returns.detach().to(values.dtype), zero)
    l1 = (v - ret).pow(2)
    if eps_value is None:
        if old_values is not None:
            raise ValueError("old_values: given without eps_value; pass eps_value (the clip range "
                             "ε_v) to clip the values, or leave old_values out")
        per_token = 0.5 * l1
        clipped = torch.zeros_like(m)
    else:
        eps_value = check_positive(eps_value, "eps_value")
        if old_values is None:
            raise ValueError("old_values: eps_value clips the new values to within ε_v of the "
                             "values at sampling time, so it needs old_values (B, T)")
        check_tensor(old_values, "old_values", ndim=2, floating=True)
        if old_values.shape != values.shape:
            raise ValueError(f"old_values: expected shape {tuple(values.shape)} (that of values), "
                             f"got {tuple(old_values.shape)}")
        check_same_device(values=values, old_values=old_values)
        check_finite(old_values, "old_values")
        old = torch.where(m, old_values.detach().to(values.dtype), zero)
        v_clip = torch.maximum(torch.minimum(v, old + eps_value), old - eps_value)
        l2 = (v_clip - ret).pow(2)
        per_token = 0.5 * torch.maximum(l1, l2)
        clipped = l2 > l1
    try:
        loss = agg(per_token, m, None)
    except ValueError as e:     # the aggregation's one finite check: name where it came from
        if not str(e).startswith("per_token_loss:") or \
                bool(torch.isfinite(per_token.detach()[m]).all()):
            raise
        raise ValueError(
            f"values − returns overflows {values.dtype}: ½ (V − R̂)²"
            + (" (or its clipped twin, from old_values)" if eps_value is not None else "")
            + f" is not finite at {int((~torch.isfinite(per_token.detach()) & m).sum())} "
            f"unmasked token(s); largest |values| {float(v.detach().abs().amax()):.3g}, "
            f"largest |returns| {float(ret.abs().amax()):.3g}") from None
    with torch.no_grad():
        n = m.sum().to(torch.promote_types(values.dtype, torch.float32))
        metrics = {
            "clip_fraction": (clipped & m).sum().to(n.dtype) / n,
            "value_error": ((l1.detach().to(n.dtype) * m).sum() / n).sqrt(),
        }
    return loss, metrics
