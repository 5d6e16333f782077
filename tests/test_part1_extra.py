"""Unit tests for the Part I additions used by chapters 01-03: the exact reward variance,
batched exact estimator variances, the best constant baseline, and the standard errors of
Monte-Carlo variances."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pgbook as pg
from pgbook.exact import bandits as E
from pgbook.exact import stats as measure
from pgbook.reward import baselines as BL
from pgbook.worlds import bandits
from pgbook.worlds.bandits import Bandit, LinearSoftmax, TabularSoftmax

F64 = torch.float64


def _theta(P, seed=0, dtype=F64):
    return torch.randn(P, dtype=F64, generator=pg.make_generator(seed)).to(dtype)


# -- Bandit.reward_variance --------------------------------------------------------------------
def test_reward_variance_matches_hand_formula_and_samples():
    b = bandits.noisy_bandit(0.5)
    pol = TabularSoftmax(3, 4)
    p = pol.probs(_theta(12))
    J = float(b.J(p))
    by_hand = sum(float(b.rho[s] * p[s, a]) * (float(b.means[s, a]) ** 2 + 0.25)
                  for s in range(3) for a in range(4)) - J ** 2
    assert float(b.reward_variance(p)) == pytest.approx(by_hand, abs=1e-14)
    r = b.sample(p, 200_000, pg.make_generator(0)).r
    assert float(r.var()) == pytest.approx(by_hand, rel=0.02)


def test_reward_variance_batched_and_zero_for_deterministic_policy():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    thetas = torch.stack([_theta(12, k) for k in range(5)])
    v = b.reward_variance(pol.probs(thetas))
    assert v.shape == (5,)
    each = torch.stack([b.reward_variance(pol.probs(t)) for t in thetas])
    torch.testing.assert_close(v, each, rtol=0, atol=1e-15)
    one = Bandit(torch.ones(1, dtype=F64), torch.tensor([[2.0, 5.0]], dtype=F64))
    assert float(one.reward_variance(torch.tensor([[1.0, 0.0]], dtype=F64))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_reward_variance_dtypes(dtype):
    b = bandits.context_bandit(dtype=dtype)
    p = TabularSoftmax(3, 4).probs(_theta(12, dtype=dtype))
    v = b.reward_variance(p)
    assert v.dtype == dtype
    ref = bandits.context_bandit().reward_variance(TabularSoftmax(3, 4).probs(_theta(12)))
    assert float(v) == pytest.approx(float(ref), rel=2e-2)


def test_reward_variance_meta_and_bad_input():
    b = bandits.context_bandit(device="meta")
    v = b.reward_variance(torch.full((3, 4), 0.25, dtype=F64, device="meta"))
    assert v.device.type == "meta" and v.shape == ()
    with pytest.raises(ValueError, match="probs"):
        bandits.context_bandit().reward_variance(torch.full((3, 3), 1 / 3, dtype=F64))


# -- exact_total_variances ----------------------------------------------------------------------
def test_exact_total_variances_matches_single_calls():
    b = bandits.noisy_bandit(0.3)
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 1)
    tables = torch.randn(2, 3, 3, 4, dtype=F64, generator=pg.make_generator(2))
    got = E.exact_total_variances(b, pol, th, tables, n_samples=4)
    assert got.shape == (2, 3)
    want = torch.stack([torch.stack([E.exact_total_variance(b, pol, th, t, n_samples=4)
                                     for t in row]) for row in tables])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    # a single (S, A) table gives a scalar
    assert E.exact_total_variances(b, pol, th, tables[0, 0]).shape == ()


def test_exact_total_variances_reward_shift_is_negative_baseline():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 3)
    c = 7.5
    shifted = E.exact_total_variance(b.shifted(c), pol, th)
    as_baseline = E.exact_total_variances(b, pol, th, torch.full((3, 4), -c, dtype=F64))
    torch.testing.assert_close(shifted, as_baseline, rtol=1e-13, atol=0)


def test_exact_total_variances_matches_monte_carlo():
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 4)
    stats = measure.EstimatorStats(E.policy_gradient_estimates(b, pol, th, 4, 20000,
                                                           pg.make_generator(5), 2.0))
    exact = float(E.exact_total_variances(b, pol, th, torch.full((3, 4), 2.0, dtype=F64), 4))
    z = (float(stats.total_variance) - exact) / float(stats.total_variance_stderr)
    assert abs(z) < 4.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_total_variances_dtypes(dtype):
    b = bandits.context_bandit(dtype=dtype)
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 6, dtype=dtype)
    got = E.exact_total_variances(b, pol, th, torch.zeros(2, 3, 4, dtype=dtype))
    assert got.dtype == dtype and got.shape == (2,)
    ref = E.exact_total_variances(bandits.context_bandit(), pol, _theta(12, 6),
                                  torch.zeros(2, 3, 4, dtype=F64))
    torch.testing.assert_close(got.double(), ref, rtol=3e-2, atol=1e-3)


def test_exact_total_variances_meta_and_bad_input():
    pol = TabularSoftmax(3, 4)
    bm = bandits.context_bandit(device="meta")
    out = E.exact_total_variances(bm, pol, torch.zeros(12, dtype=F64, device="meta"),
                                  torch.zeros(7, 3, 4, dtype=F64, device="meta"))
    assert out.device.type == "meta" and out.shape == (7,)
    b = bandits.context_bandit()
    th = torch.zeros(12, dtype=F64)
    with pytest.raises(ValueError, match="tables"):
        E.exact_total_variances(b, pol, th, torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match="tables"):
        E.exact_total_variances(b, pol, th, torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="finite"):
        E.exact_total_variances(b, pol, th, torch.full((3, 4), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="floating"):
        E.exact_total_variances(b, pol, th, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_samples"):
        E.exact_total_variances(b, pol, th, torch.zeros(3, 4, dtype=F64), n_samples=0)
    with pytest.raises(ValueError, match="one device"):
        E.exact_total_variances(b, pol, th, torch.zeros(3, 4, dtype=F64, device="meta"))


# -- optimal_constant_baseline ------------------------------------------------------------------
def test_optimal_constant_baseline_is_the_vertex():
    b = bandits.offset_bandit(5.0)
    pol = TabularSoftmax(3, 4)
    th = _theta(12, 7)
    bc = BL.optimal_constant_baseline(b, pol, th)
    grid = bc + torch.tensor([-0.1, -1e-3, 0.0, 1e-3, 0.1], dtype=F64)
    v = E.exact_total_variances(b, pol, th, grid[:, None, None].expand(-1, 3, 4))
    assert int(v.argmin()) == 2
    # the per-state optimum can only do better
    v_state = E.exact_total_variance(b, pol, th, BL.state_table(BL.optimal_baseline_table(b, pol, th), 4))
    assert float(v_state) <= float(v[2]) + 1e-14


def test_optimal_constant_baseline_is_J_when_score_norms_are_equal():
    # the uniform tabular policy: every ‖e_a − π‖² = 1 − 1/A, so b_c* = E[r] = J
    b = bandits.context_bandit()
    pol = TabularSoftmax(3, 4)
    th = torch.zeros(12, dtype=F64)
    assert float(BL.optimal_constant_baseline(b, pol, th)) == pytest.approx(
        float(E.exact_J(b, pol, th)), abs=1e-14)


def test_optimal_constant_baseline_dtypes_meta_and_zero_scores():
    pol = TabularSoftmax(3, 4)
    for dtype in (torch.float32, torch.bfloat16):
        got = BL.optimal_constant_baseline(bandits.context_bandit(dtype=dtype), pol, _theta(12, 8, dtype=dtype))
        ref = BL.optimal_constant_baseline(bandits.context_bandit(), pol, _theta(12, 8))
        assert got.dtype == dtype and float(got) == pytest.approx(float(ref), rel=2e-2)
    out = BL.optimal_constant_baseline(bandits.context_bandit(device="meta"), pol,
                                      torch.zeros(12, dtype=F64, device="meta"))
    assert out.device.type == "meta" and out.shape == ()
    # a single action: every score is zero, the fallback is J
    one = Bandit(torch.ones(1, dtype=F64), torch.tensor([[3.0]], dtype=F64))
    assert float(BL.optimal_constant_baseline(one, TabularSoftmax(1, 1), torch.zeros(1, dtype=F64))) == 3.0
    with pytest.raises(ValueError, match="one device"):
        BL.optimal_constant_baseline(bandits.context_bandit(), pol, torch.zeros(12, dtype=F64, device="meta"))


@settings(max_examples=20, deadline=None)
@given(S=st.integers(1, 3), A=st.integers(2, 4), P=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_property_variance_is_a_parabola_in_a_constant_baseline(S, A, P, seed):
    g = pg.make_generator(seed)
    rho = torch.softmax(torch.randn(S, dtype=F64, generator=g), 0)
    b = Bandit(rho, torch.randn(S, A, dtype=F64, generator=g), noise_std=0.2)
    pol = LinearSoftmax(torch.randn(S, A, P, dtype=F64, generator=g))
    th = torch.randn(P, dtype=F64, generator=g)
    cs = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0], dtype=F64)
    v = E.exact_total_variances(b, pol, th, cs[:, None, None].expand(-1, S, A))
    # leading coefficient E‖∇log π‖², vertex at optimal_constant_baseline
    sq = (b.rho[:, None] * pol.probs(th) * pol.scores(th).pow(2).sum(-1)).sum()
    bc = BL.optimal_constant_baseline(b, pol, th)
    v_bc = E.exact_total_variances(b, pol, th, bc.expand(S, A))
    torch.testing.assert_close(v, v_bc + sq * (cs - bc) ** 2, rtol=1e-9, atol=1e-11)


# -- EstimatorStats.total_variance_stderr and variance_difference ------------------------------
def test_total_variance_stderr_for_gaussian_estimates():
    # identity covariance in P dims: tr Cov = P, Var‖x‖² = 2P, so se = sqrt(2P/M)
    P, M = 3, 40_000
    x = torch.randn(M, P, dtype=F64, generator=pg.make_generator(9))
    stats = measure.EstimatorStats(x)
    assert float(stats.total_variance_stderr) == pytest.approx(math.sqrt(2 * P / M), rel=0.05)
    assert abs(float(stats.total_variance) - P) < 4.5 * float(stats.total_variance_stderr)
    assert stats.total_variance_stderr.dtype == F64


def test_variance_difference_paired():
    x = torch.randn(20_000, 2, dtype=F64, generator=pg.make_generator(10))
    a = measure.EstimatorStats(1.1 * x)
    b = measure.EstimatorStats(x)
    diff, se = measure.variance_difference(a, b)
    torch.testing.assert_close(diff, a.total_variance - b.total_variance, rtol=1e-12, atol=0)
    # paired: the gap 0.21·tr Cov = 0.42 is resolved far better than either variance alone
    assert float(se) < 0.3 * float(b.total_variance_stderr)
    assert abs(float(diff) - 0.42) < 4.5 * float(se)
    with pytest.raises(ValueError, match="same shape"):
        measure.variance_difference(a, measure.EstimatorStats(x[:100]))

