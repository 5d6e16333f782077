"""Chapter 14's library: the post-GRPO policy losses, sampler/trainer corrections, selection,
grpo_seqlm, exact.trajectory and their use in policy_loss and grpo_train.

The reference tests transcribe the formulas of verl (``verl/trainer/ppo/core_algos.py``,
``verl/trainer/ppo/rollout_corr_helper.py``) and TRL (``trl/trainer/grpo_trainer.py``,
``GRPOTrainer._compute_loss`` and ``_generate_and_score_completions``) and compare on the same
ragged inputs."""

import copy
import math

import pytest
import torch

import pgbook as pg
from pgbook import methods
from pgbook.exact.seqlm import exact_gradient, exact_J
from pgbook.exact.trajectory import (
    Mismatched,
    batch_updates,
    corrected_gradient,
    path_stats,
    sequence_entropy,
    token_scores,
)
from pgbook.train.grpo import grpo_train
from pgbook.train.seqlm import _Adam, grpo_seqlm, sample_runs
from pgbook.trajectory import corrections, losses, selection
from pgbook.worlds import gpt, tasks
from pgbook.worlds.seqlm import MLPPolicy, SeqSpace, contains

F64 = torch.float64


def _batch(B=6, T=7, seed=0, dtype=F64, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 3, 7, 5, 2, 6])[:B]
    mask = (torch.arange(T) < lengths[:, None]).to(dtype)
    logp = (-torch.rand(B, T, generator=g, dtype=F64) * 3).to(dtype)
    old = (logp.to(F64) + spread * torch.randn(B, T, generator=g, dtype=F64)).to(dtype)
    adv_seq = torch.randn(B, generator=g, dtype=F64).to(dtype)
    adv = adv_seq[:, None].expand(B, T) * mask
    return logp, old, adv, mask


# -- verl's aggregation (agg_loss), transcribed -------------------------------------------------
def verl_agg(loss_mat, mask, mode):
    """verl/trainer/ppo/core_algos.py: agg_loss (dp_size 1; masked sums with where, then · mask)."""
    masked = torch.where(mask.bool(), loss_mat, 0.0) * mask
    if mode == "token-mean":
        return masked.sum() / (mask.sum() + 1e-8)
    L = mask.sum(-1)
    per = masked.sum(-1) / (L + 1e-8)
    keep = (L > 0).to(loss_mat.dtype)
    return (per * keep).sum() / keep.sum()


def _masked_mean(v, m):
    return (torch.where(m.bool(), v, 0.0) * m).sum() / (m.sum() + 1e-8)


def _grad(fn, logp):
    lp = logp.clone().requires_grad_(True)
    value = fn(lp)
    (g,) = torch.autograd.grad(value, lp)
    return value.detach(), g


# -- GSPO ----------------------------------------------------------------------------------------
def verl_gspo(old, logp, adv, mask, lo, hi):
    """verl core_algos.py: compute_policy_loss_gspo (GSPO-token, always seq-mean-token-mean)."""
    nak = logp - old
    L = mask.sum(-1).clamp(min=1)
    seq = (nak * mask).sum(-1) / L
    log_s = logp - logp.detach() + seq.detach().unsqueeze(-1)
    log_s = torch.clamp(log_s, max=10.0)
    s = torch.exp(log_s)
    pg = torch.maximum(-adv * s, -adv * torch.clamp(s, 1 - lo, 1 + hi))
    return verl_agg(pg, mask, "seq-mean-token-mean")


def trl_sequence_level(old, logp, adv_seq, mask, lo, hi):
    """trl/trainer/grpo_trainer.py: GRPOTrainer._compute_loss, loss_type="grpo",
    importance_sampling_level="sequence" (advantages (B, 1), per-sequence mean of the
    per-token loss, then the mean over sequences)."""
    log_ratio = logp - old
    liw = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(liw)
    coef_2 = torch.clamp(coef_1, 1 - lo, 1 + hi)
    a = adv_seq.unsqueeze(1)
    per_token = -torch.min(coef_1 * a, coef_2 * a)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.05, 0.1)])
def test_gspo_equals_trl_sequence_level_and_verl_gspo_token(eps):
    logp, old, adv, mask = _batch()
    lo, hi = eps
    adv_seq = adv[:, 0]
    ours, g_ours = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="gspo",
                                                        aggregation="seq_mean_token_mean",
                                                        eps_low=lo, eps_high=hi)[0], logp)
    trl, g_trl = _grad(lambda lp: trl_sequence_level(old, lp, adv_seq, mask, lo, hi), logp)
    tok, g_tok = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="gspo_token",
                                                      aggregation="seq_mean_token_mean",
                                                      eps_low=lo, eps_high=hi)[0], logp)
    verl, g_verl = _grad(lambda lp: verl_gspo(old, lp, adv, mask, lo, hi), logp)
    assert torch.allclose(ours, trl, atol=1e-14) and torch.allclose(g_ours * mask, g_trl * mask, atol=1e-14)
    assert torch.allclose(tok, verl, atol=1e-12) and torch.allclose(g_tok * mask, g_verl * mask, atol=1e-12)
    # with one advantage per response GSPO and GSPO-token are the same loss (value and gradient)
    assert torch.allclose(ours, tok, atol=1e-14) and torch.allclose(g_ours, g_tok, atol=1e-14)


def test_gspo_token_accepts_token_advantages_and_clip_fraction_is_per_sequence():
    logp, old, adv, mask = _batch()
    adv_tok = adv * torch.linspace(0.5, 1.5, adv.shape[1], dtype=F64)
    _, g = _grad(lambda lp: methods.policy_loss(lp, old, adv_tok, mask, loss="gspo_token",
                                                eps_low=10.0 - 9.5, eps_high=10.0)[0], logp)
    s = losses.sequence_log_ratio(logp, old, mask).exp()
    L = mask.sum(-1)
    expect = -(adv_tok * s[:, None] / L[:, None] / mask.shape[0]) * mask   # unclipped: ∇ = −A s / (B L)
    assert torch.allclose(g, expect, atol=1e-14)
    # the clip fraction reports whole responses (GSPO's clip cuts a response's gradient)
    _, met = methods.policy_loss(logp, old, adv, mask, loss="gspo")
    clipped = ((adv[:, 0] > 0) & (s > 1 + 4e-4)) | ((adv[:, 0] < 0) & (s < 1 - 3e-4))
    assert float(met["clip_fraction"]) == pytest.approx(float((clipped[:, None] * mask).sum() / mask.sum()))


# -- GMPO ----------------------------------------------------------------------------------------
def verl_geo_mean(old, logp, adv, mask, lo, hi):
    """verl core_algos.py: compute_policy_loss_geo_mean."""
    nak = logp - old
    sgn = torch.sign(adv)
    nak_c = torch.clamp(nak, -lo, hi)
    nak_min = sgn * torch.min(sgn * nak, sgn * nak_c)
    L = mask.sum(-1)
    ratio = torch.exp((nak_min * mask).sum(-1) / (L + 1e-8))
    a = (adv * mask).sum(-1) / (L + 1e-8)
    return torch.mean(-a * ratio)


def test_gmpo_equals_verl_geo_mean():
    logp, old, adv, mask = _batch(spread=0.6)
    ours, g_ours = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="gmpo",
                                                        aggregation="seq_mean_token_mean")[0], logp)
    ref, g_ref = _grad(lambda lp: verl_geo_mean(old, lp, adv, mask, 0.4, 0.4), logp)
    assert torch.allclose(ours, ref, rtol=1e-7) and torch.allclose(g_ours * mask, g_ref * mask, rtol=1e-7,
                                                                   atol=1e-12)
    _, met = methods.policy_loss(logp, old, adv, mask, loss="gmpo")
    assert 0 < float(met["clip_fraction"]) < 1     # a log-ratio spread of 0.6 crosses ±0.4


# -- CISPO ---------------------------------------------------------------------------------------
def verl_cispo(old, logp, adv, mask, lo, hi):
    """verl core_algos.py: compute_policy_loss_cispo (token-mean)."""
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    w = torch.clamp(ratio, 1 - lo, 1 + hi).detach()
    return verl_agg(-w * adv * logp, mask, "token-mean")


def trl_cispo(old, logp, adv, mask, epsilon_high):
    """trl grpo_trainer.py: _compute_loss, loss_type="cispo" (normalised by the token count)."""
    coef_1 = torch.exp(logp - old)
    w = torch.clamp(coef_1, max=epsilon_high).detach()
    return (-w * adv * logp * mask).sum() / mask.sum()


def test_cispo_equals_trl_and_verl():
    logp, old, adv, mask = _batch(spread=1.0)
    ours, g_ours = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="cispo",
                                                        aggregation="token_mean", eps_high=4.0)[0], logp)
    trl, g_trl = _grad(lambda lp: trl_cispo(old, lp, adv, mask, 5.0), logp)
    assert torch.allclose(ours, trl, atol=1e-14) and torch.allclose(g_ours, g_trl * mask, atol=1e-14)
    ours2, g2 = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="cispo",
                                                     aggregation="token_mean", eps_low=0.2,
                                                     eps_high=0.2)[0], logp)
    verl, gv = _grad(lambda lp: verl_cispo(old, lp, adv, mask, 0.2, 0.2), logp)
    assert torch.allclose(ours2, verl, rtol=1e-7) and torch.allclose(g2, gv * mask, rtol=1e-7)
    # no token's gradient is zero where A ≠ 0 (the point of CISPO)
    assert bool((g2[(mask > 0) & (adv != 0)] != 0).all())


# -- SAPO ----------------------------------------------------------------------------------------
def verl_sapo(old, logp, adv, mask, tau_pos, tau_neg):
    """verl core_algos.py: compute_policy_loss_sapo (always seq-mean-token-mean)."""
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    taus = torch.where(adv > 0, torch.tensor(tau_pos, dtype=adv.dtype), torch.tensor(tau_neg, dtype=adv.dtype))
    gates = torch.sigmoid(taus * (ratio - 1.0)) * (4.0 / taus)
    return verl_agg(-gates * adv, mask, "seq-mean-token-mean")


def trl_sapo(old, logp, adv, mask, tp, tn):
    """trl grpo_trainer.py: _compute_loss, loss_type="sapo"."""
    coef_1 = torch.exp(logp - old)
    t = torch.where(adv > 0, tp, tn)
    per_token = -torch.sigmoid(t * (coef_1 - 1)) * 4 / t * adv
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def test_sapo_equals_verl_and_trl_and_is_the_policy_gradient_on_policy():
    logp, old, adv, mask = _batch(spread=0.8)
    ours, g = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="sapo", tau_pos=1.0,
                                                   tau_neg=1.05)[0], logp)
    verl, gv = _grad(lambda lp: verl_sapo(old, lp, adv, mask, 1.0, 1.05), logp)
    trl, gt = _grad(lambda lp: trl_sapo(old, lp, adv, mask, 1.0, 1.05), logp)
    assert torch.allclose(ours, verl, rtol=1e-7) and torch.allclose(g, gv * mask, rtol=1e-7, atol=1e-14)
    assert torch.allclose(ours, trl, atol=1e-14) and torch.allclose(g, gt * mask, atol=1e-14)
    # at r = 1 the gate's slope is 1: SAPO's gradient is the score-function gradient
    _, g1 = _grad(lambda lp: methods.policy_loss(lp, logp, adv, mask, loss="sapo")[0], logp)
    _, g0 = _grad(lambda lp: methods.policy_loss(lp, logp, adv, mask, loss="score_function")[0], logp)
    assert torch.allclose(g1, g0, atol=1e-14)


# -- Clip-Cov, KL-Cov ----------------------------------------------------------------------------
def verl_clip_cov(old, logp, adv, mask, lo, hi, ratio_, lb, ub):
    """verl core_algos.py: compute_policy_loss_clip_cov (torch.randperm on the global generator)."""
    ratio = torch.exp(logp - old)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - lo, 1 + hi)
    by_origin = (pg2 > pg1) & (mask > 0)
    cov = (adv - _masked_mean(adv, mask)) * (logp - _masked_mean(logp.detach(), mask))
    cov = cov.detach().clone()
    cov[mask == 0] = -torch.inf
    cov[by_origin] = -torch.inf
    n_clip = max(int(ratio_ * mask.sum().item()), 1)
    idx = torch.nonzero((cov < ub) & (cov > lb) & (mask > 0))
    corr = torch.ones_like(adv)
    if len(idx) > 0:
        idx = idx[torch.randperm(len(idx))[:min(n_clip, len(idx))]]
        corr[idx[:, 0], idx[:, 1]] = 0
    return verl_agg(torch.maximum(pg1, pg2) * corr, mask, "token-mean")


def verl_kl_cov(old, logp, adv, mask, ratio_, coef):
    """verl core_algos.py: compute_policy_loss_kl_cov (token-mean)."""
    nak = logp - old
    ratio = torch.exp(nak)
    pg = -adv * ratio
    pg_kl = -adv * ratio + coef * nak.abs()
    valid = mask > 0
    valid_idx = torch.nonzero(valid.reshape(-1), as_tuple=True)[0]
    a, lp = adv[valid].detach(), logp[valid].detach()
    cov = (a - a.mean()) * (lp - lp.mean())
    k = max(1, int(len(cov) * ratio_))
    top = valid_idx[torch.topk(cov, k, largest=True).indices]
    r, c = top // adv.shape[1], top % adv.shape[1]
    pg = pg.clone()
    pg[r, c] = pg_kl[r, c]
    return verl_agg(pg, mask, "token-mean")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_equals_verl_with_the_same_seed(seed):
    logp, old, adv, mask = _batch(seed=seed, spread=0.4)
    adv = adv * 3                                                  # covariances in verl's (1, 5) band
    opts = dict(clip_cov_ratio=0.2, clip_cov_lb=0.5, clip_cov_ub=5.0)
    ours, g = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="clip_cov",
                                                   aggregation="token_mean",
                                                   generator=pg.make_generator(seed), **opts)[0], logp)
    torch.manual_seed(seed)
    ref, gr = _grad(lambda lp: verl_clip_cov(old, lp, adv, mask, 0.2, 0.2, 0.2, 0.5, 5.0), logp)
    assert torch.allclose(ours, ref, rtol=1e-7) and torch.allclose(g, gr * mask, rtol=1e-7, atol=1e-14)
    _, gp = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="ppo_clip",
                                                   aggregation="token_mean")[0], logp)
    assert int(((g == 0) & (gp != 0)).sum()) >= 1                  # some tokens were detached
    # deterministic given the generator; the reported clip fraction includes the detached tokens
    again = methods.policy_loss(logp, old, adv, mask, loss="clip_cov", generator=pg.make_generator(seed),
                                aggregation="token_mean", **opts)
    assert float(again[0]) == pytest.approx(float(ours), abs=1e-15)
    _, met_ppo = methods.policy_loss(logp, old, adv, mask, loss="ppo_clip")
    assert float(again[1]["clip_fraction"]) > float(met_ppo["clip_fraction"])


def test_kl_cov_equals_verl():
    logp, old, adv, mask = _batch(spread=0.4)
    ours, g = _grad(lambda lp: methods.policy_loss(lp, old, adv, mask, loss="kl_cov",
                                                   aggregation="token_mean", kl_cov_ratio=0.2,
                                                   ppo_kl_coef=0.5)[0], logp)
    ref, gr = _grad(lambda lp: verl_kl_cov(old, lp, adv, mask, 0.2, 0.5), logp)
    assert torch.allclose(ours, ref, rtol=1e-7) and torch.allclose(g, gr * mask, rtol=1e-7, atol=1e-14)


def test_clip_cov_needs_a_generator_and_real_values():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="generator"):
        methods.policy_loss(logp, old, adv, mask, loss="clip_cov")
    with pytest.raises(ValueError, match=r"torch\.func"):
        torch.func.vmap(lambda a, b, c, d: losses.clip_cov_loss(a, b, c, mask=d,
                                                                generator=pg.make_generator(0)))(
            logp[None], adv[None], old[None], mask[None])


# -- clip-higher, the registered methods ----------------------------------------------------------
def test_clip_higher_is_ppo_clip_with_dapos_range():
    logp, old, adv, _ = _batch(spread=0.5)
    a = losses.clip_higher_loss(logp, adv, old)
    b = losses.ppo_clip_loss(logp, adv, old, eps_low=0.2, eps_high=0.28)
    assert torch.equal(a, b)


def test_methods_of_chapter_14_are_compositions_of_registered_pieces():
    for name, piece in [("GSPO", "gspo"), ("GMPO", "gmpo"), ("CISPO", "cispo"), ("Clip-Cov", "clip_cov"),
                        ("KL-Cov", "kl_cov"), ("SAPO", "sapo"), ("DAPO", "clip_higher"),
                        ("GSPO-token", "gspo_token")]:
        m = pg.registry.method(name)
        assert m.chapter == "14" and m.resolved_parts()["policy_loss"] == piece
        assert "trajectory" in m.sides()
    dapo = pg.registry.method("DAPO").resolved_parts()
    assert dapo["data"] == "dynamic_sampling" and dapo["kl"] == "none" and dapo["aggregation"] == "token_mean"
    assert pg.registry.method("GRPO + TIS").sides() == frozenset({"trajectory"})


# -- sampler/trainer corrections ------------------------------------------------------------------
def trl_vllm_is(old, sampling, mask, mode, cmin, cmax):
    """trl grpo_trainer.py: _generate_and_score_completions, vllm_importance_sampling_mode."""
    diff = (old - sampling) * mask
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    r = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(r, min=cmin, max=cmax)
    lo = cmin if cmin is not None else -math.inf
    hi = cmax if cmax is not None else math.inf
    return r.masked_fill((r < lo) | (r > hi), 0.0)


def verl_rollout_is(old, rollout, mask, level, threshold):
    """verl rollout_corr_helper.py: compute_rollout_correction_weights (no batch normalisation)."""
    lr = old - rollout
    if level == "token":
        w = torch.exp(torch.clamp(lr, -20, 20))
    else:
        s = (torch.where(mask.bool(), lr, 0.0) * mask).sum(-1, keepdim=True)
        w = torch.exp(torch.clamp(s, -20, 20)).expand_as(lr)
    return (w * mask).clamp(max=threshold)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("bounds", [(None, 3.0), (0.5, 2.0)])
def test_corrections_equal_trl_vllm_importance_sampling(mode, bounds):
    _, old, _, mask = _batch(spread=0.0)
    g = torch.Generator().manual_seed(4)
    sampler = old + 0.4 * torch.randn(old.shape, generator=g, dtype=F64)
    cmin, cmax = bounds
    ours = corrections.correction_weights(old, sampler, mask, mode, cmax, cmin)
    ref = trl_vllm_is(old, sampler, mask, mode, cmin, cmax)
    assert torch.allclose(ours, (ref * mask).expand_as(ours), atol=1e-13)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncation_equals_verl_rollout_is(level):
    _, old, _, mask = _batch(spread=0.0)
    g = torch.Generator().manual_seed(5)
    sampler = old + 0.3 * torch.randn(old.shape, generator=g, dtype=F64)
    ours = corrections.correction_weights(old, sampler, mask, f"{level}_truncate", 2.0)
    assert torch.allclose(ours, verl_rollout_is(old, sampler, mask, level, 2.0), atol=1e-13)


def test_policy_loss_applies_the_weights_to_the_policy_term_only():
    logp, old, adv, mask = _batch()
    g = torch.Generator().manual_seed(6)
    sampler = old + 0.5 * torch.randn(old.shape, generator=g, dtype=F64)
    ref = logp - 0.3
    w = corrections.token_truncate(old, sampler, mask)
    L, met = methods.policy_loss(logp, old, adv, mask, loss="ppo_clip", sampler_logp=sampler,
                                 correction="token_truncate", ref_logp=ref, kl="k3_loss", beta=0.1,
                                 aggregation="token_mean")
    per = losses.ppo_clip_loss(logp, adv, old) * w + 0.1 * pg.kl.kl_estimate(logp, ref, "k3")
    assert float(L) == pytest.approx(float(pg.aggregation.token_mean(per, mask)), abs=1e-14)
    assert 0 < float(met["sampler_weight_ess"]) <= 1 and float(met["sampler_mismatch_kl"]) > 0
    # sampler log-probs without a correction: measured only
    L0, met0 = methods.policy_loss(logp, old, adv, mask, sampler_logp=sampler)
    assert float(L0) == pytest.approx(float(methods.policy_loss(logp, old, adv, mask)[0]), abs=1e-15)
    assert "sampler_mismatch_kl" in met0


def test_method_loss_applies_the_methods_correction():
    logp, old, _, mask = _batch()
    g = torch.Generator().manual_seed(8)
    sampler = old + 0.5 * torch.randn(old.shape, generator=g, dtype=F64)
    R = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="sampler_logp"):
        methods.method_loss("GRPO + TIS", logp, old, R, mask, 2)
    L, _ = methods.method_loss("GRPO + TIS", logp, old, R, mask, 2, sampler_logp=sampler)
    A = pg.reward.advantages.broadcast_to_tokens(pg.reward.advantages.grpo_advantage(R, 2), mask)
    ref, _ = methods.policy_loss(logp, old, A, mask, loss=methods.method_config("GRPO")["policy_loss"],
                                 aggregation=methods.method_config("GRPO")["aggregation"],
                                 sampler_logp=sampler, correction="token_truncate")
    assert float(L) == pytest.approx(float(ref), abs=1e-15)


def test_correction_bad_inputs():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="sampler_logp"):
        methods.policy_loss(logp, old, adv, mask, correction="token_truncate")
    with pytest.raises(ValueError, match="correction"):
        methods.policy_loss(logp, old, adv, mask, sampler_logp=old, correction="token_clip")
    with pytest.raises(ValueError, match="sampler_logp"):
        methods.policy_loss(logp, old, adv, mask, sampler_logp=old[:, :3], correction="token_truncate")
    with pytest.raises(ValueError, match="c_min"):   # the piece names its own arguments
        corrections.token_mask(old, old, mask, c_max=1.0, c_min=2.0)
    with pytest.raises(ValueError, match="c_max"):
        corrections.token_truncate(old, old, mask, c_max=-1.0)
    with pytest.raises(ValueError, match="correction_max"):   # and the dispatcher its own
        corrections.correction_weights(old, old, mask, "token_truncate", correction_max=-1.0)
    bad = old.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="sampler_logp"):
        corrections.token_truncate(old, bad, mask)
    with pytest.raises(ValueError, match="overflows"):
        corrections.sequence_truncate(old, old - 400, mask.expand_as(old), c_max=None)
    with pytest.raises(ValueError, match="mask"):
        corrections.token_truncate(old, old, mask * 0)


# -- bad inputs, dtypes, meta for every new loss -----------------------------------------------------
NEW_LOSSES = ["gspo", "gspo_token", "gmpo", "cispo", "sapo", "clip_cov", "kl_cov", "clip_higher"]


def _opts(name, device="cpu"):
    return {"generator": pg.make_generator(0, device)} if name == "clip_cov" else {}


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_bad_inputs_raise_naming_the_argument(name):
    logp, old, adv, mask = _batch()
    fn = pg.registry.resolve("policy_loss", name)
    with pytest.raises(ValueError, match="advantages"):
        fn(logp, adv[:, :3], old, **_opts(name))
    nan_adv = adv.clone()
    nan_adv[1, 0] = math.nan
    with pytest.raises(ValueError, match="advantages"):
        fn(logp, nan_adv, old, **_opts(name))
    with pytest.raises(ValueError, match="old_logp"):
        fn(logp, adv, old[:2], **_opts(name))
    with pytest.raises(ValueError):
        methods.policy_loss(logp, old, adv, mask, loss=name, no_such_option=1, **_opts(name))
    if "mask" in pg._validate.keyword_names(fn, 3)[0]:
        with pytest.raises(ValueError, match="mask"):
            fn(logp, adv, old, mask=mask * 0.5, **_opts(name))
        with pytest.raises(ValueError, match="mask"):
            fn(logp, adv, old, mask=mask[:, :2], **_opts(name))
    if "eps_high" in pg._validate.keyword_names(fn, 3)[0]:
        with pytest.raises(ValueError, match="eps_high"):
            fn(logp, adv, old, eps_high=-0.1, **_opts(name))


@pytest.mark.parametrize("name", NEW_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
def test_dtypes(name, dtype):
    logp, old, adv, mask = _batch(dtype=dtype)
    lp = logp.clone().requires_grad_(True)
    L, _ = methods.policy_loss(lp, old, adv, mask, loss=name, **_opts(name))
    assert L.dtype == dtype and bool(torch.isfinite(L.float()))
    L.backward()
    assert lp.grad.dtype == dtype and bool(torch.isfinite(lp.grad.float()).all())
    ref, _ = methods.policy_loss(logp.to(F64), old.to(F64), adv.to(F64), mask.to(F64), loss=name,
                                 **_opts(name))
    assert float(L.detach()) == pytest.approx(float(ref), abs=0.05 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("name", NEW_LOSSES)
def test_meta_device_shapes(name):
    logp, old, adv, mask = (t.to("meta") for t in _batch())
    fn = pg.registry.resolve("policy_loss", name)
    kw = {"mask": mask} if "mask" in pg._validate.keyword_names(fn, 3)[0] else {}
    out = fn(logp, adv, old, **kw, **({"generator": None} if name == "clip_cov" else {}))
    assert out.shape == logp.shape and out.device.type == "meta"
    w = corrections.correction_weights(old, logp, mask, "sequence_mask")
    assert w.shape == logp.shape and w.device.type == "meta"


def test_losses_ignore_junk_off_the_mask():
    logp, old, adv, mask = _batch()
    junk = torch.where(mask > 0, torch.zeros(()), torch.full((), math.nan, dtype=F64))
    for name in NEW_LOSSES:
        a, _ = methods.policy_loss(logp, old, adv, mask, loss=name, **_opts(name))
        b, _ = methods.policy_loss(logp + junk, old + junk, adv, mask, loss=name, **_opts(name))
        assert float(a) == pytest.approx(float(b), abs=1e-15), name


# -- selection ------------------------------------------------------------------------------------
def test_max_variance_subset_is_the_best_subset():
    import itertools

    g = torch.Generator().manual_seed(7)
    r = torch.randint(0, 4, (5 * 7,), generator=g).to(F64) / 3
    idx = selection.max_variance_subset(r, 7, 4)
    best = [max(torch.stack([grp[list(c)] for c in itertools.combinations(range(7), 4)]).var(-1))
            for grp in r.view(5, 7)]
    assert torch.allclose(r[idx].view(5, 4).var(-1), torch.stack(best), atol=1e-12)
    assert bool((idx.view(5, 4) // 7 == torch.arange(5)[:, None]).all())    # each group's own rows
    with pytest.raises(ValueError, match="m"):
        selection.max_variance_subset(r, 7, 8)


def test_dynamic_sampling_order():
    info = torch.tensor([False, True, False, True, True, False])
    assert selection.dynamic_sampling_order(info, 4).tolist() == [1, 3, 4, 0]
    with pytest.raises(ValueError, match="n_groups"):
        selection.dynamic_sampling_order(info, 7)
    with pytest.raises(ValueError, match="bool"):
        selection.dynamic_sampling_order(info.long(), 2)
    assert selection.informative_groups(torch.tensor([1.0, 1, 0, 1]), 2).tolist() == [False, True]


# -- exact.trajectory -------------------------------------------------------------------------------
SPACE = SeqSpace(tokens=("a", "b"), max_len=3)
POLICY = MLPPolicy(SPACE, hidden=4)
THETA = POLICY.init(pg.make_generator(0), scale=0.7)
REWARD = contains(SPACE, "ab")


def test_corrected_gradient_sequence_is_is_exact_and_none_is_biased():
    mu = Mismatched(POLICY, 0.8, pg.make_generator(1), df=3)
    grad = exact_gradient(POLICY, THETA, REWARD)
    out = corrected_gradient(POLICY, THETA, REWARD, mu, "sequence_truncate", correction_max=None)
    assert torch.allclose(out["update"], grad, atol=1e-12) and 0 < float(out["ess"]) < 1
    none = corrected_gradient(POLICY, THETA, REWARD, mu, "none", grad=grad)
    assert float((none["update"] - grad).norm()) > 0.05 * float(grad.norm()) and float(none["ess"]) == pytest.approx(1, abs=1e-12)
    same = corrected_gradient(POLICY, THETA, REWARD, Mismatched(POLICY, 0.0, pg.make_generator(1)), "none")
    assert torch.allclose(same["update"], grad, atol=1e-12) and float(same["kl"]) == 0


def test_path_stats_and_entropy_are_exact():
    thetas = torch.stack([THETA, 2 * THETA])
    st = path_stats(POLICY, thetas, REWARD)
    for k in range(2):
        assert float(st["J"][k]) == pytest.approx(float(exact_J(POLICY, thetas[k], REWARD)), abs=1e-14)
        assert float(st["entropy"][k]) == pytest.approx(float(sequence_entropy(POLICY, thetas[k])), abs=1e-13)
    assert st["J_per_prompt"].shape == (2, SPACE.X)


def test_batch_updates_equal_autograd_on_the_same_batch():
    U = batch_updates(POLICY, THETA, REWARD, loss="ppo_clip", n_batches=3, prompts_per_batch=2, group_size=4,
                      generator=pg.make_generator(2))
    assert U.shape == (3, POLICY.n_params)
    # the same batches, drawn again, differentiated one by one through the policy
    from pgbook.exact.trajectory import sample_enumerated

    seqs = SPACE.enumerate()
    probs = pg.exact.seqlm.sequence_probs(POLICY, THETA, seqs)
    idx = sample_enumerated(probs, SPACE.rho, seqs.x, 3, 2, 4, pg.make_generator(2))
    for m in range(3):
        t = THETA.clone().requires_grad_(True)
        x, tok, mk = seqs.x[idx[m]], seqs.tokens[idx[m]], seqs.mask[idx[m]]
        A = pg.reward.advantages.grpo_advantage(REWARD.of(seqs)[idx[m]].double(), 4)
        L, _ = methods.policy_loss(POLICY.token_logprobs(t, x, tok), None, A[:, None] * mk, mk)
        (g,) = torch.autograd.grad(L, t)
        assert torch.allclose(U[m], -g, atol=1e-12)
    S = token_scores(POLICY, THETA)
    assert S.shape == (len(seqs), SPACE.T, POLICY.n_params)


# -- grpo_seqlm --------------------------------------------------------------------------------------
def test_adam_equals_torch_adam():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, dtype=F64, generator=g).requires_grad_()
    b = a.detach().clone().requires_grad_()
    mine, ref = _Adam(a, 0.05), torch.optim.Adam([b], lr=0.05, betas=(0.9, 0.99))
    for _ in range(10):
        w = torch.randn(3, 5, dtype=F64, generator=g)
        a.grad = None
        (a * w).pow(2).sum().backward()
        mine.step()
        ref.zero_grad()
        (b * w).pow(2).sum().backward()
        ref.step()
    assert torch.allclose(a, b, atol=1e-14)


def _seqlm(theta0=THETA, **kw):
    opts = dict(steps=3, prompts_per_step=2, group_size=4, generator=pg.make_generator(3),
                aggregation="seq_mean_token_mean")
    opts.update(kw)
    return grpo_seqlm(POLICY, theta0, REWARD, **opts)


def test_grpo_seqlm_single_run_and_runs():
    h = _seqlm(epochs_per_batch=2)
    assert h.thetas.shape == (4, POLICY.n_params) and h.reward.shape == (3,)
    assert bool((h.rollouts == 8).all()) and not torch.equal(h.thetas[0], h.thetas[-1])
    h2 = _seqlm(THETA.expand(3, -1), epochs_per_batch=2, trainer_noise=[0.0, 0.1, 0.2])
    assert h2.thetas.shape == (4, 3, POLICY.n_params) and h2.clip_fraction.shape == (3, 3)
    again = _seqlm(THETA.expand(3, -1), epochs_per_batch=2, trainer_noise=[0.0, 0.1, 0.2])
    assert torch.equal(h2.thetas, again.thetas)                                   # deterministic
    cov = _seqlm(THETA.expand(2, -1), loss="clip_cov", loss_options={"clip_cov_ratio": 0.2})
    assert cov.thetas.shape == (4, 2, POLICY.n_params)                           # run by run


def test_grpo_seqlm_on_policy_ratio_is_one_and_dynamic_sampling_counts_rollouts():
    h = _seqlm(THETA.expand(2, -1), steps=4)
    assert bool((h.ratio_max == 1).all()) and bool((h.clip_fraction == 0).all())
    d = _seqlm(THETA.expand(2, -1), steps=4, method="DAPO", max_gen_batches=3)
    assert bool((d.rollouts >= 8).all()) and bool((d.rollouts <= 24).all())
    assert bool((d.rollouts % 8 == 0).all())


def test_grpo_seqlm_sampler_and_correction():
    mu = Mismatched(POLICY, 0.5, pg.make_generator(9))
    h = _seqlm(sampler=mu, method="GRPO + TIS")
    assert h.config["correction"] == "token_truncate"
    s = sample_runs(mu, THETA.expand(2, -1), torch.zeros(2, 3, dtype=torch.long), pg.make_generator(0))
    assert s.tokens.shape == (2, 3, SPACE.T) and s.logp.shape == (2, 3, SPACE.T)
    with pytest.raises(ValueError, match="sampler"):
        _seqlm(method="GRPO + TIS")


def test_grpo_seqlm_bad_inputs():
    with pytest.raises(ValueError, match="theta0"):
        _seqlm(THETA[:5])
    with pytest.raises(ValueError, match="trainer_noise"):
        _seqlm(trainer_noise=-1.0)
    with pytest.raises(ValueError, match="trainer_noise"):
        _seqlm(THETA.expand(2, -1), trainer_noise=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="minibatches"):
        _seqlm(minibatches=3)
    with pytest.raises(ValueError):
        _seqlm(no_such_option=1)
    with pytest.raises(ValueError, match="loss"):
        _seqlm(loss="gspo_typo")


# -- grpo_train: DAPO, dynamic sampling, sampler, corrections, the generator for Clip-Cov -----------
TASK = tasks.Reverse(min_len=1, max_len=2, letters="ab")


def _model(dtype=torch.float32):
    return gpt.GPT(tasks.policy_config(TASK, n_embd=16), pg.make_generator(0)).to(dtype)


def _train(model, **kw):
    opts = dict(steps=2, prompts_per_step=4, group_size=4, generator=pg.make_generator(1), progress=False,
                partial_reward=True)
    opts.update(kw)
    return grpo_train(model, TASK, **opts)


def test_grpo_train_dapo_resamples_and_counts_rollouts():
    h = _train(_model(), method="DAPO", partial_reward=False, max_gen_batches=3)
    assert h.config["dynamic_sampling"] and h.config["policy_loss"] == "clip_higher"
    assert bool((h.rollouts >= 16).all()) and bool((h.rollouts <= 48).all())
    plain = _train(_model())
    assert bool((plain.rollouts == 16).all()) and not plain.config["dynamic_sampling"]


def test_grpo_train_with_a_bfloat16_sampler_and_tis():
    m = _model()
    h = _train(m, sampler=copy.deepcopy(m).to(torch.bfloat16), method="GRPO + TIS", epochs_per_batch=2)
    assert h.config["correction"] == "token_truncate" and h.config["sampler"]
    assert float(h.logprob_gap.max()) > 1e-4                 # the bfloat16 sampler differs from the trainer
    with pytest.raises(ValueError, match="sampler"):
        _train(m, sampler=m)
    with pytest.raises(ValueError, match="correction"):
        _train(m, sampler=copy.deepcopy(m), correction="nope")


def test_grpo_train_passes_its_generator_and_loss_options():
    h = _train(_model(), method="Clip-Cov", epochs_per_batch=2, loss_options={"clip_cov_ratio": 0.1})
    assert h.steps == 2
    for meth in ("GSPO", "GMPO", "CISPO", "SAPO", "KL-Cov"):
        assert _train(_model(), method=meth, steps=1).steps == 1
    with pytest.raises(ValueError, match="loss_options"):
        _train(_model(), loss_options=[1])
    with pytest.raises(ValueError):
        _train(_model(), method="GSPO", loss_options={"eps_typo": 1.0})
