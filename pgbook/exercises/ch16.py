"""Exercises of chapter 16 (on-policy distillation and GRPO-OPD)."""

from __future__ import annotations

import torch

from ..exact.seqlm import exact_estimator_mean, exact_kl
from ..exact.stats import cosine
from ..reward.advantages import broadcast_to_tokens, grpo_advantage
from ..reward.teacher import mix_teacher, teacher_advantages, teacher_gate
from ..trajectory.distill import token_divergence
from ..worlds.seqlm import MLPPolicy, SeqSpace
from ..worlds.teachers import table_policy
from . import Wrong, atol_for, exercise, expect, expect_close, expect_shape


def _world():
    space = SeqSpace(tokens=("a", "b", "c"), max_len=4,
                     rho=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    policy = MLPPolicy(space, hidden=8)
    theta = torch.linspace(-1.0, 1.0, policy.n_params, dtype=torch.float64).sin()
    tpol, tth = table_policy(space, ["abc", "bca", "cab"], 0.8)
    return space, policy, theta, tpol, tth, space.enumerate()


def _padded(x, mask):
    return torch.where(mask > 0, x, torch.full_like(x, -torch.inf))


@exercise("16.1", "The teacher's reward, with reward-to-go")
def check_opd_reward_to_go(fn):
    """``fn(logp, teacher_logp, mask)``: per-token log π_θ(y_t|h_t) and log π_T(y_t|h_t) of
    sampled responses (B, T) (the padding after a response holds −inf) and the response
    mask (B, T). Return the per-token advantage A_t = Σ_{t'≥t} m_t' (log π_T − log π_θ)(y_t'),
    shape (B, T), 0 on the padding: with the score function, its expected gradient is
    −∇KL(π_θ‖π_T) of whole responses."""
    _, policy, theta, tpol, tth, seqs = _world()
    with torch.no_grad():
        lp = policy.token_logprobs(theta, seqs.x, seqs.tokens)
        lt = tpol.token_logprobs(tth, seqs.x, seqs.tokens)
    mask = seqs.mask
    got = expect_shape(fn(_padded(lp, mask), _padded(lt, mask), mask.clone()),
                       tuple(lp.shape), "A")
    g = got.detach().to(torch.float64)
    expect(bool(torch.isfinite(g).all()),
           "NaN or inf: the padding holds −inf, and (−inf) − (−inf) is NaN; select the response "
           "tokens with torch.where(mask > 0, ...) before subtracting")
    want = teacher_advantages(lp, lt, mask, discount=1.0)
    r = teacher_advantages(lp, lt, mask, discount=0.0)
    grad_kl = torch.func.grad(lambda t: exact_kl(policy, t, tth, ref_policy=tpol))(theta)
    if torch.allclose(g, r, atol=1e-9):
        c = float(cosine(exact_estimator_mean(policy, theta, r, seqs), -grad_kl))
        raise Wrong(f"that is the per-token reward r_t alone (discount 0, the Tinker recipe): "
                    f"its expected gradient has cosine {c:.3f} with −∇KL here; sum the rewards "
                    f"from t to the end of the response")
    whole = broadcast_to_tokens(r.sum(-1), mask)
    if torch.allclose(g, whole, atol=1e-9):
        raise Wrong("you give every token the whole response's sum Σ_t r_t: unbiased, but a "
                    "token cannot change the rewards paid before it; keep only t' ≥ t "
                    "(reward-to-go, chapter 09)")
    expect_close(got, want, "A", atol=1e-9, hint="A_t = Σ_{t'≥t} (log π_T − log π_θ)(y_t'), "
                 "0 on the padding")
    g_est = exact_estimator_mean(policy, theta, g, seqs)
    expect((g_est + grad_kl).norm() < atol_for(got, 1e-9), "the expected gradient is not −∇KL(π_θ‖π_T)")
    return (f"reward-to-go of the teacher's log-ratio on all {len(seqs)} responses; its expected "
            f"gradient is −∇KL(π_θ‖π_T) exactly")


def _group_batch():
    g = torch.Generator().manual_seed(16)
    R = torch.tensor([0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.float64)
    B, T = R.shape[0], 5
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).to(torch.float64)
    ta = torch.randn(B, T, generator=g, dtype=torch.float64) * mask
    return R, 4, ta, mask


@exercise("16.2", "GRPO-OPD, the teacher only on all-fail groups")
def check_gated_hybrid(fn):
    """``fn(rewards, group_size, teacher_adv, mask, coef)``: sequence rewards (B,) in
    contiguous groups of G, the teacher's per-token advantages (B, T), the response mask
    (B, T) and λ. Return the token advantages (B, T): GRPO's group z-score
    Â_i = (R_i − mean_G)/(std_G + 1e-6) (std with G − 1, 0 for a zero-variance group) on
    every response token, plus λ · teacher_adv only in the groups where every reward is 0;
    0 on the padding."""
    R, G, ta, mask = _group_batch()
    for coef in (1.0, 0.3):
        got = expect_shape(fn(R.clone(), G, ta.clone(), mask.clone(), coef), tuple(ta.shape),
                           "Â")
        g = got.detach().to(torch.float64)
        adv = broadcast_to_tokens(grpo_advantage(R, G), mask)

        def with_gate(gate, adv=adv, coef=coef):
            return mix_teacher(adv, ta, mask, coef=coef, gate=gate)

        if torch.allclose(g, with_gate(None), atol=1e-9):
            raise Wrong("you add the teacher's term to every group; the gate keeps it only where "
                        "all G responses failed (there GRPO has no signal)")
        if torch.allclose(g, with_gate(teacher_gate(R, G, "zero_variance")), atol=1e-9):
            raise Wrong("your gate also opens on groups where every response succeeded: those "
                        "have no GRPO signal either, but nothing to fix; open it only when every "
                        "reward is 0")
        zscore_of_sum = broadcast_to_tokens(grpo_advantage(R, G), mask)
        if torch.allclose(g, zscore_of_sum, atol=1e-9):
            raise Wrong("the teacher's term is missing")
        expect_close(g, with_gate(teacher_gate(R, G, "all_fail")), "Â", atol=1e-8,
                     hint="the z-score on every token, plus λ·teacher_adv in all-fail groups, "
                          "added after the normalisation")
    return "z-score plus λ·A_T on the all-fail groups only, for λ = 1 and 0.3"


@exercise("16.3", "GKD's generalized Jensen-Shannon divergence")
def check_generalized_jsd(fn):
    """``fn(student_logits, teacher_logits, beta)``: logits (…, V) of π_θ(·|h_t) and
    π_T(·|h_t). Return the per-position divergence (…,):
    β KL(π_T‖M) + (1 − β) KL(π_θ‖M) with M = (1 − β) π_θ + β π_T, for 0 < β < 1 (TRL's
    GKDTrainer convention, so that β → 0 gives the forward KL(π_T‖π_θ) and β → 1 the reverse
    KL(π_θ‖π_T))."""
    g = torch.Generator().manual_seed(160)
    s = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    t = torch.randn(3, 4, 6, generator=g, dtype=torch.float64) * 1.5
    for beta in (0.2, 0.5, 0.9):
        got = expect_shape(fn(s.clone(), t.clone(), beta), (3, 4), "JSD")
        gv = got.detach().to(torch.float64)
        want = token_divergence(s, t, beta=beta)
        if beta != 0.5 and torch.allclose(gv, token_divergence(t, s, beta=beta), atol=1e-9):
            raise Wrong(f"(β = {beta}) the two distributions are swapped: in TRL's convention M "
                        f"= (1 − β) π_θ + β π_T and the teacher's KL to M is weighted by β")
        ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
        m_swapped = beta * ps + (1 - beta) * pt
        alt = beta * (pt * (pt.log() - m_swapped.log())).sum(-1) + \
            (1 - beta) * (ps * (ps.log() - m_swapped.log())).sum(-1)
        if beta != 0.5 and torch.allclose(gv, alt, atol=1e-9):
            raise Wrong(f"(β = {beta}) the mixture's weights are swapped: M = (1 − β) π_θ + β π_T")
        if torch.allclose(gv, 0.5 * (pt * (pt.log() - ps.log())).sum(-1)
                          + 0.5 * (ps * (ps.log() - pt.log())).sum(-1), atol=1e-9):
            raise Wrong("that is the symmetrised KL, not the Jensen-Shannon divergence: both KLs "
                        "are to the mixture M")
        expect_close(gv, want, f"JSD (β = {beta})", atol=1e-9)
    return "the generalized JSD for β = 0.2, 0.5, 0.9 (TRL's convention)"
