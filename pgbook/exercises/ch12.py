"""Exercises of chapter 12 (GRPO for language models)."""

from __future__ import annotations

import torch

from ..kl import kl_estimate
from ..methods import policy_loss
from ..reward.advantages import broadcast_to_tokens
from ..trajectory.tokens import response_mask
from . import Wrong, exercise, expect, expect_close, expect_loss, expect_shape, fmt_pair, near


def _batch(seed: int = 12):
    """Four responses of different lengths (EOS = 0, padding after it), their log-probs under
    π_θ, π_old and π_ref, and advantages; padding positions hold −inf log-probs."""
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 7
    y = torch.randint(1, 5, (B, T), generator=g)
    for i, L in enumerate((2, 7, 4, 5)):
        if L < T:
            y[i, L - 1] = 0
            y[i, L:] = 0
    mask = response_mask(y, eos_id=0)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 0.05
    old = lp + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)   # ratios beyond the clip too
    ref = lp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    pad = torch.full_like(lp, -torch.inf)
    lp, old, ref = (torch.where(mask > 0, x, pad) for x in (lp, old, ref))
    adv = torch.tensor([1.2, -0.7, 0.4, -1.1], dtype=torch.float64)
    return lp, old, ref, adv, mask


def _reference_loss(lp, old, ref, adv, mask, eps, beta, aggregation="seq_mean_token_mean",
                    kl="k3_loss"):
    loss, _ = policy_loss(lp, old, broadcast_to_tokens(adv, mask), mask, loss="ppo_clip",
                          aggregation=aggregation, eps_low=eps, ref_logp=ref, kl=kl, beta=beta)
    return loss


@exercise("12.1", "GRPO's loss")
def check_grpo_loss(fn):
    """``fn(logp, old_logp, ref_logp, advantages, mask, eps=0.2, beta=0.04)``: token log-probs
    (B, T) under π_θ, π_old and π_ref (padding positions hold −inf), advantages (B,) and the
    response mask (B, T). Return the scalar loss of DeepSeekMath's GRPO:

        L = (1/B) Σ_i (1/L_i) Σ_t m_it [ −min(r_it Â_i, clip(r_it, 1−ε, 1+ε) Â_i) + β k3_it ],

    r_it = exp(logp − old_logp), k3_it = exp(ref − logp) − (ref − logp) − 1, L_i = Σ_t m_it.
    It must be differentiable in ``logp``."""
    lp, old, ref, adv, mask = _batch()
    for eps, beta in ((0.2, 0.04), (0.1, 0.5)):
        x = lp.clone().requires_grad_()
        got = fn(x, old.clone(), ref.clone(), adv.clone(), mask.clone(), eps=eps, beta=beta)
        if isinstance(got, torch.Tensor) and got.dim() == 0 and got.is_floating_point():
            expect(bool(torch.isfinite(got)),
                   "your loss is NaN or inf: the padding holds −inf log-probs; select the "
                   "response tokens with torch.where(mask > 0, ...) before any exp or product")
        got = expect_loss(got, "loss")
        want = _reference_loss(lp, old, ref, adv, mask, eps, beta)
        g = float(got.detach())
        if near(got, _reference_loss(lp, old, ref, adv, mask, eps, beta, "token_mean"), atol=1e-10):
            raise Wrong("you average over all tokens of the batch (DAPO's token mean); GRPO "
                        "averages each response's tokens, then the responses")
        if near(got, _reference_loss(lp, old, ref, adv, mask, eps, beta, kl="k2_loss"), atol=1e-10):
            raise Wrong("your KL term is k2 = ½(log π − log π_ref)²; GRPO adds k3 = r − 1 − log r "
                        "with r = π_ref/π_θ")
        pg_only = float(_reference_loss(lp, old, ref, adv, mask, eps, 0.0))
        if near(got, pg_only, atol=1e-10):
            raise Wrong("the KL term is missing: add β·k3 to every token's loss")
        if near(got, -pg_only + (float(want) - pg_only), atol=1e-10):
            raise Wrong("the surrogate's sign is flipped: the loss is *minus* min(r·Â, clip(r)·Â), "
                        "plus β·k3 (losses are minimised)")
        expect(near(got, want, atol=1e-10),
               f"(ε = {eps}, β = {beta}) {fmt_pair(float(want), g)} (hint: "
               "−min(r·Â, clip(r)·Â) per token, the minimum taken before averaging)")
        (grad,) = torch.autograd.grad(got, x, allow_unused=True)
        expect(grad is not None, "the loss must be differentiable in logp: no gradient reaches "
                                 "it (compute the loss from logp, no .detach())")
        y = lp.clone().requires_grad_()
        (want_grad,) = torch.autograd.grad(_reference_loss(y, old, ref, adv, mask, eps, beta), y)
        expect_close(torch.where(mask > 0, grad, torch.zeros_like(grad)), want_grad, "∂L/∂logp",
                     atol=1e-10, hint="is the loss differentiable in logp, not detached?")
    return "per-token clip and k3, mean per response then over B, and its gradient"


@exercise("12.2", "The sequence ratio")
def check_sequence_ratio(fn):
    """``fn(logp, old_logp, mask)``: token log-probs (B, T) under π_θ and π_old (padding
    holds −inf) and the mask (B, T); return ρ(y) = p_θ(y|x)/p_old(y|x) = Π_t r_t over the
    response tokens, shape (B,)."""
    lp, old, _, _, mask = _batch(13)
    got = expect_shape(fn(lp.clone(), old.clone(), mask.clone()), (lp.shape[0],), "ρ")
    g = got.detach().to(torch.float64)
    expect(bool(torch.isfinite(g).all()),
           "NaN or inf: the padding holds −inf; (−inf) − (−inf) is NaN, so mask the log-ratios "
           "with torch.where(mask > 0, ...) before summing them")
    lr = torch.where(mask > 0, lp - old, torch.zeros_like(lp))
    want = lr.sum(-1).exp()
    if torch.allclose(g, (lr.sum(-1) / mask.sum(-1)).exp(), atol=1e-10):
        raise Wrong("you take the geometric mean of the token ratios, exp(mean log r): that is "
                    "GSPO's length-normalised ratio (chapter 14), not p_θ(y|x)/p_old(y|x)")
    if torch.allclose(g, torch.where(mask > 0, lr.exp(), torch.zeros_like(lr)).sum(-1), atol=1e-10):
        raise Wrong("you add the token ratios; the probability of a response is a product, so its "
                    "ratio is the product of the token ratios (exp of the summed log-ratios)")
    expect_close(got, want, "ρ", atol=1e-10, rtol=1e-8, hint="exp(Σ_t m_t (logp − old_logp))")
    return "exp(Σ_t m_t (log π_θ − log π_old)) for responses of 2 to 7 tokens"


@exercise("12.3", "The k3 estimator")
def check_k3(fn):
    """``fn(logp, ref_logp)``: per-token log π_θ(y_t|h_t) and log π_ref(y_t|h_t) (any shape)
    of tokens sampled from π_θ; return k3 = r − 1 − log r with r = π_ref/π_θ, same shape:
    non-negative, and unbiased for KL(π_θ ‖ π_ref) of the next-token distribution."""
    g = torch.Generator().manual_seed(14)
    lp = torch.log_softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
    got = expect_shape(fn(lp.clone(), ref.clone()), tuple(lp.shape), "k3")
    gd = got.detach().to(torch.float64)
    want = kl_estimate(lp, ref, "k3")
    if torch.allclose(gd, kl_estimate(ref, lp, "k3"), atol=1e-10):
        raise Wrong("you use r = π_θ/π_ref: on samples from π_θ, k3 needs r = π_ref/π_θ (then "
                    "E[r] = 1 and E[k3] = KL(π_θ‖π_ref))")
    if torch.allclose(gd, kl_estimate(lp, ref, "k2"), atol=1e-10):
        raise Wrong("that is k2 = ½(log r)², biased; k3 = r − 1 − log r")
    if torch.allclose(gd, kl_estimate(lp, ref, "k1"), atol=1e-10):
        raise Wrong("that is k1 = log π_θ − log π_ref (unbiased but often negative); k3 = r − 1 − "
                    "log r is never negative")
    expect_close(got, want, "k3", atol=1e-10)
    # unbiased: E_{y~π_θ}[k3] over each row's categorical is the exact KL of that row
    kl_rows = (lp.exp() * (lp - ref)).sum(-1)
    expect_close((lp.exp() * gd).sum(-1), kl_rows, "E[k3] per row", atol=1e-10)
    return "r − 1 − log r with r = π_ref/π_θ; its mean under π_θ is the exact KL"
