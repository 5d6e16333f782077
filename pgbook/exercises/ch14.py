"""Exercises of chapter 14 (the trajectory side after GRPO)."""

from __future__ import annotations

import torch

from ..trajectory.corrections import token_truncate
from ..trajectory.losses import cispo_loss, sequence_log_ratio
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape


def _batch(seed: int = 0):
    """A ragged batch of log-probs: lengths 1, 2, 3, 5, 4; off-mask positions hold junk."""
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 5
    mask = (torch.arange(T) < torch.tensor([1, 2, 3, 5, 4])[:, None]).to(torch.float64)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    old = logp + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    junk = torch.where(mask > 0, torch.zeros(()), torch.full((), -7.0, dtype=torch.float64))
    return logp + junk, old + 2 * junk, mask


@exercise("14.1", "GSPO's sequence ratio")
def check_sequence_ratio(fn):
    """``fn(logp, old_logp, mask)`` with (B, T) float64 inputs must return (B,):
    s_i = exp((1/|y_i|) Σ_t m_it (logp − old_logp)_it), the geometric mean of the token ratios
    over each response's tokens (positions with mask 0 hold junk and must be ignored)."""
    logp, old, mask = _batch()
    want = sequence_log_ratio(logp, old, mask).exp()
    got = expect_shape(fn(logp.clone(), old.clone(), mask.clone()), (5,), "s")
    g = got.detach().to(torch.float64)
    m = mask > 0
    r = torch.where(m, (logp - old).exp(), torch.zeros((), dtype=torch.float64))
    if torch.allclose(g, r.sum(-1) / mask.sum(-1), atol=1e-10):
        raise Wrong("you return the arithmetic mean of the token ratios; GSPO takes the geometric "
                    "mean: average the log-ratios, then exponentiate")
    if torch.allclose(g, torch.where(m, logp - old, torch.zeros(())).sum(-1).exp(), atol=1e-10):
        raise Wrong("you return the product of the token ratios (the sequence ratio π_θ(y)/π_old(y)); "
                    "GSPO normalises it by the length: the |y_i|-th root")
    if torch.allclose(g, (logp - old).mean(-1).exp(), atol=1e-10):
        raise Wrong("you average over all T positions: only the response tokens (mask 1) count, and "
                    "the mean divides by |y_i|")
    expect_close(got, want, "s", atol=1e-10, hint="exp of the masked mean of logp − old_logp")
    return "the geometric mean of the token ratios on ragged responses"


@exercise("14.2", "CISPO's loss")
def check_cispo(fn):
    """``fn(logp, old_logp, advantages, cap)`` must return the (B, T) loss
    −sg[min(r, cap)] · A · logp with r = exp(logp − old_logp): the weight clipped from above
    and detached, so the gradient is −min(r, cap) · A (never zero where A ≠ 0)."""
    g = torch.Generator().manual_seed(1)
    logp0 = -torch.rand(4, 3, generator=g, dtype=torch.float64) * 2
    old = logp0 + torch.tensor([0.0, 0.5, -0.5, 2.0], dtype=torch.float64)[:, None]
    A = torch.randn(4, 3, generator=g, dtype=torch.float64)
    cap = 1.5
    logp = logp0.clone().requires_grad_(True)
    got = expect_shape(fn(logp, old.clone(), A.clone(), cap), (4, 3), "loss")
    want = cispo_loss(logp0, A, old, eps_high=cap - 1.0)
    expect_close(got, want, "loss value", atol=1e-10,
                 hint="−min(exp(logp − old_logp), cap) · A · logp, the weight detached")
    expect(got.requires_grad, "loss: no gradient reaches logp; the loss is −sg[w]·A·logp, "
                              "differentiable through logp")
    (grad,) = torch.autograd.grad(got.sum(), logp, allow_unused=True)
    expect(grad is not None, "loss: no gradient reaches logp; the loss is −sg[w]·A·logp, "
                             "differentiable through logp")
    r = (logp0 - old).exp()
    w = torch.clamp(r, max=cap)
    if torch.allclose(grad, -A * (w + logp0 * r * (r < cap)), atol=1e-8):
        raise Wrong("the gradient flows through the weight too: detach it (sg[·]), so the "
                    "gradient is −min(r, cap)·A")
    expect_close(grad, -(w * A), "gradient", atol=1e-8,
                 hint="−min(r, cap)·A on every token: the weight detached, nothing zeroed")
    return "value −sg[min(r, cap)]·A·logp, gradient −min(r, cap)·A on every token"


@exercise("14.3", "Truncated importance sampling weights")
def check_tis(fn):
    """``fn(old_logp, sampler_logp, mask, C)`` with (B, T) inputs must return the (B, T) token
    weights w_t = min(π_old(y_t)/μ(y_t), C) = min(exp(old_logp − sampler_logp), C) on the mask
    and 0 off it (junk off the mask must not leak)."""
    old, smp, mask = _batch(2)
    C = 1.5
    want = token_truncate(old, smp, mask, c_max=C)
    got = expect_shape(fn(old.clone(), smp.clone(), mask.clone(), C), (5, 5), "w")
    g = got.detach().to(torch.float64)
    m = mask > 0
    inv = torch.where(m, torch.clamp((smp - old).exp(), max=C), torch.zeros((), dtype=torch.float64))
    if torch.allclose(g, inv, atol=1e-10):
        raise Wrong("the ratio is inverted: the weight is π_old/μ = exp(old_logp − sampler_logp), "
                    "the trainer's probability over the sampler's")
    if torch.allclose(g * m, torch.where(m, (old - smp).exp(), torch.zeros(())), atol=1e-10):
        raise Wrong("no truncation: TIS caps each weight at C")
    seq = torch.where(m, (old - smp), torch.zeros(())).sum(-1, keepdim=True).exp().clamp(max=C)
    if torch.allclose(g * m, seq * m, atol=1e-10):
        raise Wrong("that is the sequence-level weight (the product over the response); TIS is "
                    "per token")
    expect_close(got, want, "w", atol=1e-10, hint="min(exp(old_logp − sampler_logp), C) × mask")
    return "min(π_old/μ, C) per token, 0 off the mask"


@exercise("14.4", "The first-order entropy change")
def check_entropy_change(fn):
    """``fn(probs, dz)`` with ``probs`` (V,) a distribution and ``dz`` (V,) a logit step must
    return the 0-dim −Cov_{a~π}(log π_a, Δz_a) = −Σ_a π_a (log π_a − E log π)(Δz_a − E Δz):
    the derivative of the entropy along Δz."""
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        z = torch.randn(6, generator=g, dtype=torch.float64)
        dz = torch.randn(6, generator=g, dtype=torch.float64)
        probs = torch.softmax(z, -1)
        zz = z.clone().requires_grad_(True)
        H = -(torch.softmax(zz, -1) * torch.log_softmax(zz, -1)).sum()
        want = torch.autograd.grad(H, zz)[0] @ dz
        got = expect_scalar(fn(probs.clone(), dz.clone()), "ΔH")
        if torch.allclose(got.detach().to(torch.float64), -want, atol=1e-10):
            raise Wrong("the sign is flipped: rewarding likely tokens (positive covariance) must "
                        "lower the entropy, ΔH = −Cov(log π, Δz)")
        cov_p = (probs * (probs - probs @ probs) * (dz - probs @ dz)).sum()
        if torch.allclose(got.detach().to(torch.float64), -cov_p, atol=1e-10):
            raise Wrong("the covariance is with log π, not π: −Cov(log π, Δz)")
        expect_close(got, want, "ΔH", atol=1e-10,
                     hint="−Σ_a π_a (log π_a − Σ π log π)(Δz_a − Σ π Δz)")
    return "−Cov(log π, Δz) equals the entropy's derivative along Δz (autograd)"
