"""Exercises of chapter 17 (the map, compound failures and the boundary): DPO's weight, and
DPO at the reference policy as a policy gradient with a win-rate reward."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..boundary import dpo_loss
from . import Wrong, exercise, expect, expect_close, expect_shape

__all__: list[str] = []  # the checkers are reached through pgbook.exercises.check("17.k", fn)


def _pairs(seed: int, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    lp = [-(torch.rand(n, generator=g, dtype=torch.float64) * 6 + 0.1) for _ in range(4)]
    return lp


@exercise("17.1", "DPO's weight on the two scores")
def check_dpo_weight(fn: Callable) -> str:
    """``fn(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)``: sequence
    log-probabilities (n,) of the preferred and the other response under π_θ and π_ref.
    Return the weight c (n,) with −∇ℓ_DPO = c · (∇log π_θ(y_w) − ∇log π_θ(y_l)): the
    number that stands where a policy gradient has its reward."""
    for seed, beta in ((0, 0.1), (1, 0.7)):
        cw, rw, cr, rr = _pairs(seed)
        got = expect_shape(fn(cw.clone(), rw.clone(), cr.clone(), rr.clone(), beta),
                           (cw.shape[0],), "c")
        g = got.detach().to(torch.float64)
        a, b = cw.clone().requires_grad_(True), rw.clone().requires_grad_(True)
        dpo_loss(a, b, cr, rr, beta=beta).sum().backward()
        want = -a.grad
        expect(torch.allclose(-b.grad, -want), "internal: DPO's two gradients differ in size")
        delta = (cw - cr) - (rw - rr)
        if torch.allclose(g, beta * torch.sigmoid(beta * delta), atol=1e-10):
            raise Wrong("your weight grows with the margin β Δ: it is σ(−βΔ), largest when the "
                        "policy still prefers the rejected response, and it fades once the "
                        "pair is learned")
        if torch.allclose(g, beta * torch.sigmoid(-beta * (cw - rw)), atol=1e-10):
            raise Wrong("you left out the reference: Δ compares the log-ratios "
                        "log π_θ/π_ref of the two responses, not the log-probabilities")
        if torch.allclose(g, torch.sigmoid(-beta * delta), atol=1e-10):
            raise Wrong("the derivative of −log σ(βΔ) brings out a factor β")
        expect_close(g, want, "c", atol=1e-10,
                     hint="c = β σ(−β Δ), Δ = (log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)")
    return "β σ(−βΔ) on every pair: DPO's 'reward' is a function of the policy itself"


def _dpo_expected_gradient(probs: torch.Tensor, rewards: torch.Tensor, beta: float):
    """E over pairs y, y' ~ π_ref labelled by Bradley-Terry σ(R − R') of −∇L_DPO at
    θ = θ_ref, for a softmax over the n responses (θ its logits), by autograd."""
    z = torch.log(probs).clone().requires_grad_(True)
    logp = torch.log_softmax(z, -1)
    ref = torch.log(probs)
    n = probs.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    # P(y_w = y_i, y_l = y_j): (y, y') = (y_i, y_j) with y winning, or (y_j, y_i) with y' winning
    pij = 2 * probs[i] * probs[j] * torch.sigmoid(rewards[i] - rewards[j])
    loss = (pij * dpo_loss(logp[i], logp[j], ref[i], ref[j], beta=beta)).sum()
    (g,) = torch.autograd.grad(loss, z)
    return -g


@exercise("17.2", "DPO at the reference is a policy gradient")
def check_dpo_reference_weights(fn: Callable) -> str:
    """``fn(probs, rewards, beta)``: π_ref(y) (n,) over the n responses of one prompt,
    rewards R(y) (n,), β. Preference pairs are drawn y, y' ~ π_ref and y is preferred with
    probability σ(R(y) − R(y')) (Bradley–Terry). Return w (n,) such that, at θ = θ_ref, DPO's
    expected ascent direction is the policy gradient Σ_y π(y) w(y) ∇log π_θ(y) (checked as a
    gradient of a softmax over the responses, exactly)."""
    g = torch.Generator().manual_seed(17)
    for beta in (0.1, 0.5):
        probs = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
        rewards = torch.rand(7, generator=g, dtype=torch.float64) * 3
        got = expect_shape(fn(probs.clone(), rewards.clone(), beta), (7,), "w")
        w = got.detach().to(torch.float64)
        want = _dpo_expected_gradient(probs, rewards, beta)
        mine = probs * (w - (probs * w).sum())          # Σ π w ∇log π for a softmax's logits
        if torch.allclose(mine, probs * (rewards - probs @ rewards) * beta, atol=1e-10):
            raise Wrong("that is β times the policy gradient of R itself: DPO's weight is not R "
                        "but the response's win rate against π_ref, σ(R − R') averaged over y'")
        if torch.allclose(mine, 0.5 * want, atol=1e-10):
            raise Wrong("off by a factor 2: every response is the preferred one of some pairs "
                        "and the rejected one of others, and both terms weigh its score")
        if torch.allclose(mine, want / beta, atol=1e-10):
            raise Wrong("the factor β is missing")
        expect_close(mine, want, "Σ π w ∇log π", atol=1e-10,
                     hint="w(y) = β (2 win(y) − 1), win(y) = Σ_y' π_ref(y') σ(R(y) − R(y'))")
    return ("at the reference, DPO is a policy gradient whose reward is 2β × the win rate "
            "against π_ref: a monotone transform of R")
