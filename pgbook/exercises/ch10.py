"""Exercises of chapter 10 (critics and GAE)."""

from __future__ import annotations

import torch

from ..reward.critic import gae, td_residuals, value_loss
from . import Wrong, exercise, expect, expect_close, expect_loss, expect_shape


def _batch(seed: int, B: int = 6, T: int = 5):
    """Rewards, values and a response mask (1 up to each row's length, 0 after): (B, T)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T                                   # one response cut at T
    lengths[1] = 1                                   # one that stops at once
    m = (torch.arange(T) < lengths[:, None]).to(torch.float64)
    return r, v, m


@exercise("10.1", "TD residuals")
def check_td_residuals(fn):
    """``fn(rewards, values, mask)`` with ``rewards``, ``values`` and the response ``mask``
    (B, T) (1 up to and including each response's last token, 0 after) must return the TD
    residuals δ_t = r_t + V(h_{t+1}) − V(h_t) with γ = 1, (B, T): V(h_{t+1}) = 0 after a
    response's last token (the response has ended), and δ = 0 where the mask is 0."""
    for seed in range(3):
        r, v, m = _batch(seed)
        want = td_residuals(r, v, m)
        got = expect_shape(fn(r.clone(), v.clone(), m.clone()), tuple(r.shape), "δ")
        g = got.detach().to(torch.float64)
        on = m > 0
        if not torch.allclose(g[~on], torch.zeros_like(g[~on]), atol=1e-10):
            raise Wrong("δ is not 0 on the padding: multiply by the mask (the padding is no "
                        "state of the response)")
        if torch.allclose(g, -want, atol=1e-10):
            raise Wrong("the sign is flipped: δ_t = r_t + V(h_{t+1}) − V(h_t)")
        last = (m.sum(1).long() - 1)
        rows = torch.arange(r.shape[0])
        if not torch.allclose(g[rows, last], want[rows, last], atol=1e-10):
            raise Wrong("δ at each response's last token should be r_t − V(h_t): the value "
                        "after the end is 0 (the response has ended), not the value of the "
                        "padding position that follows")
        expect_close(g, want, "δ", atol=1e-10,
                     hint="δ_t = r_t + V(h_{t+1}) − V(h_t), reading V(h_{t+1}) at position t + 1")
    return "δ_t = r_t + V(h_{t+1}) − V(h_t), 0 after the end and on the padding"


@exercise("10.2", "GAE from the TD residuals")
def check_gae(fn):
    """``fn(deltas, mask, lam)`` with ``deltas`` (B, T) TD residuals (0 on the padding), the
    response ``mask`` (B, T) and λ ∈ [0, 1] must return GAE's advantages with γ = 1,
    Â_t = Σ_{l≥0} λ^l δ_{t+l} = δ_t + λ Â_{t+1}, (B, T), 0 where the mask is 0."""
    for seed, lam in ((0, 0.5), (1, 0.0), (2, 1.0), (3, 0.9)):
        r, v, m = _batch(seed)
        d = td_residuals(r, v, m)
        want = gae(r, v, m, 1.0, lam)[0]
        got = expect_shape(fn(d.clone(), m.clone(), lam), tuple(r.shape), f"Â (λ = {lam})")
        g = got.detach().to(torch.float64)
        if lam not in (0.0, 1.0):
            fwd = torch.zeros_like(d)
            acc = torch.zeros(d.shape[0], dtype=d.dtype)
            for t in range(d.shape[1]):
                acc = d[:, t] + lam * acc
                fwd[:, t] = acc
            if torch.allclose(g, fwd * m, atol=1e-10):
                raise Wrong("you accumulate from the start of the response: GAE sums the "
                            "residuals of the tokens that *follow* t (a reverse scan)")
        if lam not in (1.0,) and torch.allclose(g, gae(r, v, m, 1.0, 1.0)[0], atol=1e-10):
            raise Wrong(f"with λ = {lam} you return the λ = 1 advantage: weight δ_(t+l) by λ^l")
        if lam == 0.0:
            expect(torch.allclose(g, d, atol=1e-10),
                   "with λ = 0 the advantage is the TD residual itself, Â_t = δ_t")
        expect_close(g, want, f"Â (λ = {lam})", atol=1e-10,
                     hint="Â_t = δ_t + λ Â_{t+1}, from the last position backwards")
    return "Â_t = δ_t + λ Â_{t+1} for λ = 0, 0.5, 0.9 and 1"


@exercise("10.3", "PPO's clipped value loss")
def check_value_loss(fn):
    """``fn(values, old_values, returns, mask, eps)`` with (B, T) tensors and ε_v > 0 must
    return the scalar ½ · mean over the mask of max((V − R̂)², (clip(V, V_old − ε, V_old + ε)
    − R̂)²), differentiable in ``values`` (verl's ``compute_value_loss``, TRL's ``vf_loss``)."""
    for seed, eps in ((0, 0.2), (1, 0.05)):
        r, v_old, m = _batch(seed)
        g = torch.Generator().manual_seed(10 + seed)
        v = (v_old + 0.4 * torch.randn(v_old.shape, generator=g, dtype=torch.float64))
        want, _ = value_loss(v, r, m, old_values=v_old, eps_value=eps)
        vv = v.clone().requires_grad_(True)
        got = expect_loss(fn(vv, v_old.clone(), r.clone(), m.clone(), eps), "loss")
        l1 = 0.5 * ((v - r) ** 2 * m).sum() / m.sum()
        vc = torch.maximum(torch.minimum(v, v_old + eps), v_old - eps)
        l2 = 0.5 * ((vc - r) ** 2 * m).sum() / m.sum()
        lmin = 0.5 * (torch.minimum((v - r) ** 2, (vc - r) ** 2) * m).sum() / m.sum()
        val = got.detach().to(torch.float64)
        if torch.allclose(val, lmin, atol=1e-10):
            raise Wrong("you take the min of the two squared errors: PPO's value clip takes the "
                        "max (a pessimistic bound, like the policy clip)")
        if torch.allclose(val, l1, atol=1e-10):
            raise Wrong("that is the unclipped ½ (V − R̂)²: clip V to [V_old − ε, V_old + ε] and "
                        "take the larger of the two errors")
        if torch.allclose(val, l2, atol=1e-10):
            raise Wrong("that is the clipped error alone: take the max of the clipped and the "
                        "unclipped errors")
        expect_close(got.detach(), want.detach(), "loss", atol=1e-10,
                     hint="½ · token mean of max((V − R̂)², (clip(V, V_old ± ε) − R̂)²)")
        (gv,) = torch.autograd.grad(got, vv, allow_unused=True)
        expect(gv is not None, "the loss must be differentiable in values (no .detach())")
        (gw,) = torch.autograd.grad(value_loss(vv, r, m, old_values=v_old, eps_value=eps)[0], vv)
        expect_close(gv, gw, "∂loss/∂values", atol=1e-10,
                     hint="where the clipped term wins and V is outside the clip range, the "
                          "gradient is 0")
    return "½ · token mean of max((V − R̂)², (clip(V, V_old ± ε) − R̂)²), and its gradient"
