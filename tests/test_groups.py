"""Unit tests for pgbook.groups: exact statistics of group estimators on bandits."""

import math

import pytest
import torch

import pgbook as pg
from pgbook.exact import bandits as XB
from pgbook.exact import groups as Gp
from pgbook.exact.stats import EstimatorStats
from pgbook.worlds import bandits as bandits_


def _world(seed=0):
    b = bandits_.context_bandit()
    pol = bandits_.TabularSoftmax(3, 4)
    th = torch.randn(12, dtype=torch.float64, generator=pg.make_generator(seed))
    return b, pol, th


def test_outcome_sets():
    seqs = Gp.group_sequences(3, 4)
    assert seqs.shape == (81, 4) and len({tuple(r) for r in seqs.tolist()}) == 81
    counts = Gp.group_counts(3, 4)
    assert counts.shape == (math.comb(6, 2), 3) and bool((counts.sum(1) == 4).all())
    assert len({tuple(r) for r in counts.tolist()}) == counts.shape[0]
    assert Gp.n_group_outcomes(3, 4) == (81, 15)
    back = Gp.counts_to_sequences(counts)
    assert torch.equal(torch.nn.functional.one_hot(back, 3).sum(1), counts)
    assert Gp.group_counts(1, 5).tolist() == [[5]]
    with pytest.raises(ValueError, match="too many"):
        Gp.group_sequences(10, 8)


@pytest.mark.parametrize("G", [2, 3, 4])
def test_counts_equal_sequences(G):
    b, pol, th = _world(1)
    for est in ("grpo", "grpo_mean", "rloo", "plain"):
        m1 = Gp.exact_group_moments(b, pol, th, G, est)
        m2 = Gp.exact_group_moments(b, pol, th, G, est, enumerate="sequences")
        for k in ("mean", "cov", "context_mean", "context_var"):
            torch.testing.assert_close(m1[k], m2[k], rtol=0, atol=1e-14)


@pytest.mark.parametrize("G", [2, 3, 5, 8])
def test_mean_baseline_shrinks_by_G_minus_1_over_G_and_rloo_is_unbiased(G):
    b, pol, th = _world(2)
    gJ = XB.exact_gradient(b, pol, th)
    mean = Gp.exact_group_moments(b, pol, th, G, "grpo_mean")["mean"]
    torch.testing.assert_close(mean, (G - 1) / G * gJ, rtol=0, atol=1e-14)
    for est in ("rloo", "plain"):
        torch.testing.assert_close(Gp.exact_group_moments(b, pol, th, G, est)["mean"], gJ,
                                   rtol=0, atol=1e-14)
    grpo = Gp.exact_group_moments(b, pol, th, G, "grpo")["mean"]
    assert float((grpo - gJ).norm()) > 1e-3          # std normalisation changes the mean


def test_linear_policy_and_context_gradients():
    b = bandits_.context_bandit()
    feats = torch.randn(3, 4, 5, dtype=torch.float64, generator=pg.make_generator(3))
    pol = bandits_.LinearSoftmax(feats)
    th = torch.randn(5, dtype=torch.float64, generator=pg.make_generator(4))
    gJ = XB.exact_gradient(b, pol, th)
    torch.testing.assert_close(b.rho @ Gp.context_gradients(b, pol, th), gJ, rtol=0, atol=1e-14)
    torch.testing.assert_close(Gp.exact_group_moments(b, pol, th, 3, "rloo")["mean"], gJ,
                               rtol=0, atol=1e-14)


def test_binary_weights_closed_form():
    p = torch.tensor([0.02, 0.1, 0.5, 0.9, 0.98], dtype=torch.float64)
    bandit, pol, th = bandits_.difficulty_bandit(p)
    torch.testing.assert_close(pol.probs(th)[:, 0], p, rtol=0, atol=1e-15)
    for G in (3, 8):
        for est in ("grpo", "grpo_mean"):
            w = Gp.binary_group_weight(p, G, est)
            torch.testing.assert_close(Gp.context_weights(bandit, pol, th, G, est), w,
                                       rtol=0, atol=1e-12)
            # E[ĝ|s] is exactly w·∇J_s (parallel), not just its projection
            mom = Gp.exact_group_moments(bandit, pol, th, G, est)
            torch.testing.assert_close(mom["context_mean"],
                                       w[:, None] * Gp.context_gradients(bandit, pol, th),
                                       rtol=0, atol=1e-14)
        torch.testing.assert_close(Gp.binary_group_weight(p, G, "grpo_mean"),
                                   torch.full_like(p, (G - 1) / G), rtol=0, atol=1e-14)
        torch.testing.assert_close(Gp.binary_group_weight(p, G, "rloo"), torch.ones_like(p),
                                   rtol=0, atol=1e-14)
    # research-note numbers (population std): GRPO / Dr. GRPO at G = 8
    ratio = Gp.binary_group_weight(p, 8, "grpo", unbiased=False) / (7 / 8)
    assert [round(float(x), 2) for x in ratio[[0, 2, 4]]] == [2.94, 2.12, 2.94]
    # large G: w → 1/√(p(1−p))
    big = Gp.binary_group_weight(p[1:4], 500, "grpo")
    torch.testing.assert_close(big, Gp.grpo_large_group_weight(p[1:4]), rtol=5e-3, atol=0)
    with pytest.raises(ValueError, match="strictly"):
        Gp.binary_group_weight(torch.tensor([0.0, 0.5]), 4)


def test_zero_variance_probability():
    p = torch.tensor([0.02, 0.3, 0.5], dtype=torch.float64)
    bandit, pol, th = bandits_.difficulty_bandit(p, n_actions=3)
    for G in (1, 2, 5):
        zv = Gp.zero_variance_probability(bandit, pol.probs(th), G)
        torch.testing.assert_close(zv, Gp.binomial_zero_variance(p, G), rtol=0, atol=1e-14)
        torch.testing.assert_close(Gp.exact_group_moments(bandit, pol, th, G)["zero_variance"], zv)
    # Monte Carlo: the library counts zero-variance groups
    gen = pg.make_generator(5)
    batch = bandits_.sample_groups(bandit, pol.probs(th), 30000, 4, gen)
    zero = pg.reward.zero_variance_groups(batch.r.reshape(-1), 4)
    for s in range(3):
        sel = zero[batch.s[:, 0] == s].double()
        want = float(Gp.binomial_zero_variance(p[s:s + 1], 4))
        se = math.sqrt(want * (1 - want) / sel.numel())
        assert abs(float(sel.mean()) - want) < 5 * se + 1e-12


@pytest.mark.parametrize("est", ["grpo", "rloo"])
def test_sampled_group_estimates_match_exact(est):
    b, pol, th = _world(6)
    gen = pg.make_generator(7)
    batch = bandits_.sample_groups(b, pol.probs(th), 10000, 4, gen)
    assert bool((batch.s == batch.s[:, :1]).all())
    stats = EstimatorStats(Gp.group_estimates(b, pol, th, batch, est))
    mom = Gp.exact_group_moments(b, pol, th, 4, est)
    assert stats.is_unbiased(mom["mean"], z=4.5)
    assert float(stats.total_variance) == pytest.approx(float(torch.diagonal(mom["cov"]).sum()), rel=0.06)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    b = bandits_.context_bandit(dtype=dtype)
    pol = bandits_.TabularSoftmax(3, 4)
    th = torch.zeros(12, dtype=dtype)
    mom = Gp.exact_group_moments(b, pol, th, 3, "grpo")
    assert mom["mean"].dtype == dtype and mom["cov"].shape == (12, 12)
    w = Gp.binary_group_weight(torch.tensor([0.5], dtype=torch.bfloat16), 4, "grpo")
    assert w.dtype == torch.bfloat16


def test_bad_inputs():
    b, pol, th = _world()
    with pytest.raises(ValueError, match="deterministic"):
        Gp.exact_group_moments(bandits_.noisy_bandit(), pol, th, 2)
    with pytest.raises(ValueError, match="expected one of"):
        Gp.exact_group_moments(b, pol, th, 2, "group_mean_batch_std_seq")
    with pytest.raises(ValueError, match="enumerate"):
        Gp.exact_group_moments(b, pol, th, 2, enumerate="all")
    with pytest.raises(ValueError, match="group_size"):
        Gp.exact_group_moments(b, pol, th, 0)
    with pytest.raises(ValueError, match="contexts"):
        Gp.exact_group_moments(b, bandits_.TabularSoftmax(2, 4), torch.zeros(8, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="strictly"):
        bandits_.difficulty_bandit([0.5, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        bandits_.difficulty_bandit([0.5], n_actions=1)
