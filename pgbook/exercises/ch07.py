"""Exercises of chapter 07 (PPO): the clipped per-sample objective, the adaptive KL
coefficient, and the mask of samples with zero gradient (the clipped fraction)."""

from __future__ import annotations

import torch

from ..train.ppo import adaptive_beta
from ..trajectory.losses import ppo_clip_loss
from . import Wrong, exercise, expect, expect_close, expect_scalar, expect_shape, fmt_pair, near

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("07.k", fn)


def _grid():
    r = torch.tensor([0.5, 0.79, 0.9, 1.0, 1.1, 1.25, 1.6, 0.5, 0.9, 1.0, 1.15, 1.3, 2.0, 0.7],
                     dtype=torch.float64)
    a = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.4],
                     dtype=torch.float64)
    return r, a


@exercise("07.1", "PPO's clipped per-sample objective")
def check_clipped_objective(fn):
    """``fn(ratio (N,), adv (N,), eps)`` must return min(r A, clip(r, 1 − ε, 1 + ε) A) (N,)."""
    r, a = _grid()
    want = -ppo_clip_loss(r.log(), a, torch.zeros_like(r), eps_low=0.2)
    got = fn(r.clone(), a.clone(), 0.2)
    expect_shape(got, tuple(r.shape), "objective")
    g = got.detach().to(torch.float64)
    clipped = r.clamp(0.8, 1.2) * a
    if torch.allclose(g, -want):
        raise Wrong("you return the loss: the objective is min(rA, clip(r)A), the loss is its negative")
    if torch.allclose(g, torch.maximum(r * a, clipped)):
        raise Wrong("max instead of min: the min keeps the pessimistic term, so leaving the range on the "
                    "profitable side earns nothing")
    if torch.allclose(g, clipped):
        raise Wrong("the min with the unclipped term r·A is missing: a ratio that went the wrong way must "
                    "still be pulled back")
    if torch.allclose(g, torch.minimum(r * a, r * a.clamp(-1.2, 1.2))):
        raise Wrong("clip the ratio r, not the advantage")
    expect_close(got, want, "objective", atol=1e-12)
    return "min(rA, clip(r, 1 − ε, 1 + ε)A) on both sides of the range and for both signs of A"


@exercise("07.2", "The adaptive KL coefficient")
def check_next_beta(fn):
    """``fn(beta, kl, kl_target)`` must return 2β if KL > 1.5 d_targ, β/2 if KL < d_targ / 1.5,
    else β (Schulman et al. 2017)."""
    cases = [(1.0, 0.05, 0.02), (1.0, 0.005, 0.02), (1.0, 0.02, 0.02), (0.3, 0.029, 0.02),
             (0.3, 0.031, 0.02), (4.0, 0.0134, 0.02), (4.0, 0.0133, 0.02)]
    for beta, kl, target in cases:
        want = adaptive_beta(beta, kl, target)
        t = expect_scalar(fn(beta, kl, target), "β")
        got = float(t)
        if not near(t, want, atol=1e-12):
            if kl > 1.5 * target and near(t, beta / 2, atol=1e-12):
                raise Wrong("the rule is reversed: a KL above the target must *raise* β (a stronger "
                            "penalty), not lower it")
            if kl > 1.5 * target and near(t, 1.5 * beta, atol=1e-12):
                raise Wrong("the factor is 2 (β ← 2β); 1.5 is the tolerance on the KL")
            raise Wrong(f"β = {beta}, KL = {kl}, d_targ = {target}: {fmt_pair(want, got)} "
                        f"(×2 above 1.5·d_targ, ÷2 below d_targ/1.5, unchanged in between)")
    return "×2 above 1.5·d_targ, ÷2 below d_targ/1.5, unchanged in between (edges included)"


@exercise("07.3", "The samples with zero gradient")
def check_zero_gradient_mask(fn):
    """``fn(ratio (N,), adv (N,), eps)`` must return a boolean mask: True where the clipped
    objective has zero gradient (A > 0 and r > 1 + ε, or A < 0 and r < 1 − ε)."""
    r, a = _grid()
    # the truth by autograd: the derivative of each sample's clipped objective
    logr = r.log().requires_grad_(True)
    (d,) = torch.autograd.grad(-ppo_clip_loss(logr, a, torch.zeros_like(r), eps_low=0.2).sum(), logr)
    want = d == 0
    got = fn(r.clone(), a.clone(), 0.2)
    expect_shape(got, tuple(r.shape), "mask")
    expect(got.dtype == torch.bool, f"mask: expected a boolean tensor, got {got.dtype}")
    if torch.equal(got, (r - 1).abs() > 0.2):
        raise Wrong("|r − 1| > ε also counts samples outside the range on the side where the unclipped "
                    "term is smaller: those still have a gradient (it pulls them back). The gradient is "
                    "zero only where the clipped branch is active, which depends on the sign of A")
    if torch.equal(got, ((a > 0) & (r < 0.8)) | ((a < 0) & (r > 1.2))):
        raise Wrong("the sides are swapped: for A > 0 the clip stops pushing once r > 1 + ε, for A < 0 "
                    "once r < 1 − ε")
    expect(torch.equal(got, want), f"mask: expected {want.tolist()}, got {got.tolist()}")
    return "zero gradient exactly where the clipped branch is active (checked against autograd)"
